"""``mini-imagenet``: 100 ImageNet classes x 600 images, from the user's ImageNet train folder.

Classes: the 100 wnids of the standard mini-ImageNet (Vinyals et al. 2016, with the
Ravi & Larochelle 2017 64/16/20 class split taken together), listed in
``mini_imagenet_classes.txt``; labels follow that sorted list. Here the 100 classes form one
ordinary classification task.

Images: ``data_dir`` is ImageNet's ``train`` folder (``<wnid>/*.JPEG``) or its parent. For each
class the first 600 file names in sorted order are taken -- a deterministic choice, but not the
exact image list of the few-shot csv files -- and split in that order into 420 train, 60 validation
and 120 test images. Images are resized to 64 x 64 (option ``image_size``, e.g. 84) and the decoded
tensors are cached under the cache root, so only the first load decodes 60k JPEGs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from ciiv.data.cache import cached_payload, fingerprint
from ciiv.data.decode import decode_images, list_images
from ciiv.data.paths import DatasetNotFoundError, cache_root
from ciiv.data.registry import (
    DatasetBuilder,
    DatasetInfo,
    LoadedData,
    LoadRequest,
    register_dataset,
)
from ciiv.data.tensors import ImageTensors

__all__ = ["MiniImageNetOptions", "load_mini_imagenet", "mini_imagenet_classes"]

logger = logging.getLogger(__name__)

_CACHE_VERSION = 1  # bump when the selection or the decoded layout changes
# ImageNet statistics: mini-ImageNet images are a subset of ImageNet's.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def mini_imagenet_classes() -> tuple[str, ...]:
    """The 100 committed wnids, sorted."""
    text = resources.files("ciiv.data").joinpath("mini_imagenet_classes.txt").read_text()
    return tuple(sorted(line.strip() for line in text.splitlines() if line.strip()))


@dataclass(frozen=True)
class MiniImageNetOptions:
    """Options of the ``mini-imagenet`` dataset: ``image_size`` after resizing (84 is the
    few-shot literature's), the first ``images_per_class`` in sorted file-name order split into
    (train, val, test) counts; ``classes`` replaces the committed list (for tests on fake trees)."""

    image_size: int = 64
    images_per_class: int = 600
    split: tuple[int, int, int] = (420, 60, 120)
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", tuple(int(v) for v in self.split))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(sorted(self.classes)))
        if len(self.split) != 3 or min(self.split) < 1:
            raise ValueError(
                f"split must be 3 positive counts (train, val, test), got {self.split}"
            )
        if sum(self.split) != self.images_per_class:
            raise ValueError(
                f"split {self.split} must sum to images_per_class={self.images_per_class}"
            )
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")

    def wnids(self) -> tuple[str, ...]:
        return self.classes if self.classes is not None else mini_imagenet_classes()


def describe_mini_imagenet(options: MiniImageNetOptions) -> DatasetInfo:
    wnids = options.wnids()
    return DatasetInfo(
        name="mini-imagenet",
        num_classes=len(wnids),
        in_channels=3,
        image_size=options.image_size,
        mean=_MEAN,
        std=_STD,
        spike_scale=0.8,  # SPEC section 2
        hflip=True,
        crop_padding=options.image_size // 8,
        class_names=wnids,
    )


def _train_folder(data_dir: Path | None, first_wnid: str) -> Path:
    if data_dir is None:
        raise DatasetNotFoundError(
            "mini-imagenet needs --data-dir: the ImageNet train folder (<wnid>/*.JPEG) "
            "or its parent"
        )
    if not (data_dir / first_wnid).is_dir() and (data_dir / "train" / first_wnid).is_dir():
        return data_dir / "train"
    return data_dir


def _select(folder: Path, wnids: tuple[str, ...], per_class: int) -> list[Path]:
    """The first ``per_class`` images of every class, class by class; one error lists all faults."""
    selected: list[Path] = []
    problems: list[str] = []
    for wnid in wnids:
        class_dir = folder / wnid
        if not class_dir.is_dir():
            problems.append(f"{wnid}: folder missing")
            continue
        files = list_images(class_dir)
        if len(files) < per_class:
            problems.append(f"{wnid}: {len(files)} images, need {per_class}")
            continue
        selected += files[:per_class]
    if problems:
        shown = "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else "")
        raise DatasetNotFoundError(
            f"mini-imagenet: {len(problems)} of {len(wnids)} classes unusable under {folder} "
            f"({shown}). Point --data-dir at the ImageNet train folder (<wnid>/*.JPEG)."
        )
    return selected


def load_mini_imagenet(request: LoadRequest, options: MiniImageNetOptions) -> LoadedData:
    """Train, validation and test splits, per class in file-name order."""
    wnids = options.wnids()
    folder = _train_folder(request.data_dir, wnids[0])
    files = _select(folder, wnids, options.images_per_class)
    key = fingerprint(
        folder, files, _CACHE_VERSION, wnids, options.image_size, options.images_per_class
    )
    cache_file = cache_root() / "decoded" / f"mini-imagenet-{options.image_size}px-{key}.pt"

    def decode() -> dict:
        logger.info("mini-imagenet: decoding %d images from %s", len(files), folder)
        return {"images": decode_images(files, options.image_size)}

    images = cached_payload(cache_file, decode)["images"]
    labels = torch.arange(len(wnids)).repeat_interleave(options.images_per_class)
    position = torch.arange(len(files)) % options.images_per_class  # rank within its class
    n_train, n_val, _ = options.split
    part = (position >= n_train).long() + (position >= n_train + n_val).long()  # 0, 1, 2
    data = ImageTensors(images, labels)
    return LoadedData(
        info=describe_mini_imagenet(options),
        train=data.subset(part == 0),
        val=data.subset(part == 1),
        test={"test": data.subset(part == 2)},
    )


register_dataset(
    DatasetBuilder("mini-imagenet", MiniImageNetOptions, load_mini_imagenet, describe_mini_imagenet)
)
