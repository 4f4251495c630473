"""``imagefolder``: any ``ROOT/train/<class>/*`` + ``ROOT/test/<class>/*`` tree of image files.

``data_dir`` is the tree's root, or a ``.tar.gz`` / ``.tgz`` / ``.tar`` archive of it (the tree
may sit at the archive's top level or inside one folder), extracted once into the cache root (see
:mod:`ciiv.data.cache`). Classes are the sub-folders of ``train/``, sorted by name; ``test/`` may
hold a subset of them. Images are decoded to uint8 RGB, resized to ``image_size`` when given, and
the decoded tensors and the training-split statistics are cached, so the second load only reads
one file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ciiv.data.cache import cached_payload, extract_archive, fingerprint, is_archive
from ciiv.data.decode import decode_images, list_images
from ciiv.data.paths import DatasetNotFoundError, cache_root
from ciiv.data.registry import (
    DatasetBuilder,
    DatasetInfo,
    LoadedData,
    LoadRequest,
    register_dataset,
)
from ciiv.data.tensors import ImageTensors, channel_stats

__all__ = ["ImageFolderOptions", "decode_tree", "find_tree", "load_imagefolder", "tree_root"]

logger = logging.getLogger(__name__)

_CACHE_VERSION = 1  # bump when the decoded layout changes


@dataclass(frozen=True)
class ImageFolderOptions:
    """Options of the ``imagefolder`` dataset (None: ``image_size`` keeps the shared square
    size, ``mean``/``std`` are computed from the training images, ``crop_padding`` is
    image_size // 8); ``spike_scale`` is the sampler's noise amplitude a (CIFAR's 0.9)."""

    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    spike_scale: float = 0.9
    hflip: bool = True
    crop_padding: int | None = None

    def __post_init__(self) -> None:
        # Configs give lists; the dataclass is frozen and hashable, so keep tuples.
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")


_LAYOUT = "a folder with train/<class>/ and test/<class>/ sub-folders, or a .tar.gz of one"


def find_tree(root: Path) -> Path | None:
    """The folder holding ``train/`` and ``test/``: ``root`` itself or one of its sub-folders
    (an archive's single wrapper folder); None when there is none."""
    if not root.is_dir():
        return None
    for candidate in [root] + [root / name for name in _class_folders(root)]:
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def tree_root(data_dir: Path | None, dataset: str = "imagefolder") -> Path:
    """The image tree behind ``data_dir`` (a folder, or an archive extracted once into the cache);
    DatasetNotFoundError if there is no ``data_dir``, it does not exist or has no train/ + test/."""
    if data_dir is None:
        raise DatasetNotFoundError(f"{dataset} needs --data-dir: {_LAYOUT}")
    if not data_dir.exists():
        raise DatasetNotFoundError(f"{dataset}: {data_dir} does not exist; expected {_LAYOUT}")
    root = find_tree(extract_archive(data_dir) if is_archive(data_dir) else data_dir)
    if root is None:
        raise DatasetNotFoundError(
            f"{dataset}: no train/ and test/ folders in {data_dir}; expected {_LAYOUT}"
        )
    return root


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """Files and labels of one split; each class folder must be a known, non-empty class."""
    index = {name: i for i, name in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    for name in _class_folders(folder):
        if name not in index:
            raise ValueError(
                f"imagefolder: class folder {folder / name} is not among the training classes"
            )
        found = list_images(folder / name)
        if not found:
            raise ValueError(f"imagefolder: no image files in {folder / name}")
        files += found
        labels += [index[name]] * len(found)
    if not files:
        raise ValueError(f"imagefolder: no class folders in {folder}")
    return files, labels


def decode_tree(root: Path, image_size: int | None) -> dict:
    """Decoded splits of the tree at ``root`` (from the cache when it is current): ``classes``
    (the sorted folder names of ``train/``), ``train_images`` / ``test_images`` (uint8
    [N, 3, S, S]), ``train_labels`` / ``test_labels`` (int64 indices into ``classes``), and the
    training images' per-channel ``mean`` / ``std``."""
    classes = _class_folders(root / "train")
    train_files, train_labels = _scan(root / "train", classes)
    test_files, test_labels = _scan(root / "test", classes)
    files = train_files + test_files
    key = fingerprint(root, files, _CACHE_VERSION, image_size)
    cache_file = cache_root() / "decoded" / f"imagefolder-{root.name}-{key}.pt"

    def decode() -> dict:
        logger.info("imagefolder: decoding %d images from %s", len(files), root)
        images = decode_images(files, image_size)
        n_train = len(train_files)
        mean, std = channel_stats(images[:n_train])
        return {
            "classes": classes,
            "train_images": images[:n_train].clone(),
            "train_labels": torch.tensor(train_labels, dtype=torch.int64),
            "test_images": images[n_train:].clone(),
            "test_labels": torch.tensor(test_labels, dtype=torch.int64),
            "mean": list(mean),
            "std": list(std),
        }

    return cached_payload(cache_file, decode)


def load_imagefolder(request: LoadRequest, options: ImageFolderOptions) -> LoadedData:
    """Load (and cache) the tree at ``request.data_dir``; the validation split is carved later."""
    root = tree_root(request.data_dir)
    payload = decode_tree(root, options.image_size)
    train = ImageTensors(payload["train_images"], payload["train_labels"])
    size = train.images.shape[-1]
    mean = options.mean if options.mean is not None else tuple(payload["mean"])
    std = options.std if options.std is not None else tuple(payload["std"])
    info = DatasetInfo(
        name="imagefolder",
        num_classes=len(payload["classes"]),
        in_channels=3,
        image_size=size,
        mean=mean,
        std=std,
        spike_scale=options.spike_scale,
        hflip=options.hflip,
        crop_padding=size // 8 if options.crop_padding is None else options.crop_padding,
        class_names=tuple(payload["classes"]),
    )
    test = ImageTensors(payload["test_images"], payload["test_labels"])
    return LoadedData(info=info, train=train, test={"test": test})


register_dataset(DatasetBuilder("imagefolder", ImageFolderOptions, load_imagefolder, None))
