"""MNIST, CIFAR-10 and CIFAR-100 through torchvision, held in memory as uint8 tensors.

Files are looked for under the data root (``data_dir``, else ``$CIIV_DATA``, else
``~/.cache/ciiv/data``) in torchvision's layout (``MNIST/raw``, ``cifar-10-batches-py``,
``cifar-100-python``). When they are missing and ``download`` is allowed, torchvision downloads them
there; otherwise :class:`DatasetNotFoundError` says where they were looked for and how to provide
them. Normalisation constants are the usual per-channel training-set statistics (std is the
per-pixel standard deviation, not the often-copied 0.2023/0.1994/0.2010).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from ciiv.data.paths import DATA_ENV, DatasetNotFoundError, resolve_data_dir
from ciiv.data.registry import (
    DatasetBuilder,
    DatasetInfo,
    LoadedData,
    LoadRequest,
    register_dataset,
)
from ciiv.data.tensors import ImageTensors

__all__ = ["CIFAR10_INFO", "CIFAR100_INFO", "MNIST_INFO"]

logger = logging.getLogger(__name__)

CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()

# Spike scale a = 0.8 for MNIST and 0.9 for CIFAR (SPEC section 2). MNIST digits are not
# mirror-symmetric, so no flips, and 2 px of crop padding on 28 px (CIFAR's 4 px on 32 px).
MNIST_INFO = DatasetInfo(
    name="mnist",
    num_classes=10,
    in_channels=1,
    image_size=28,
    mean=(0.1307,),
    std=(0.3081,),
    spike_scale=0.8,
    hflip=False,
    crop_padding=2,
    class_names=tuple(str(d) for d in range(10)),
)
CIFAR10_INFO = DatasetInfo(
    name="cifar10",
    num_classes=10,
    in_channels=3,
    image_size=32,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    spike_scale=0.9,
    hflip=True,
    crop_padding=4,
    class_names=(
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
)
CIFAR100_INFO = DatasetInfo(
    name="cifar100",
    num_classes=100,
    in_channels=3,
    image_size=32,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    spike_scale=0.9,
    hflip=True,
    crop_padding=4,
    class_names=tuple(CIFAR100_CLASSES),
)


@dataclass(frozen=True)
class NoOptions:
    """These datasets take no options."""


@dataclass(frozen=True)
class _Source:
    info: DatasetInfo
    dataset_class: type
    folder: str  # what torchvision expects under the root, for error messages


def _open(source: _Source, root: Path, train: bool, download: bool) -> datasets.VisionDataset:
    try:
        return source.dataset_class(root=str(root), train=train, download=False)
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        pass
    hint = (
        f"Put the torchvision files at {root / source.folder} or point --data-dir (or the "
        f"{DATA_ENV} environment variable) at a folder that contains {source.folder}/"
    )
    if not download:
        raise DatasetNotFoundError(
            f"{source.info.name} not found (or corrupted) under {root}; downloading is disabled. "
            f"{hint}, or allow downloading on a machine with internet access."
        ) from None
    logger.info("%s not found under %s; downloading", source.info.name, root)
    try:
        return source.dataset_class(root=str(root), train=train, download=True)
    except Exception as exc:  # network, permission and checksum errors all mean "not available"
        raise DatasetNotFoundError(
            f"{source.info.name} not found under {root} and the download failed ({exc}). {hint}."
        ) from exc


def _to_tensors(dataset: datasets.VisionDataset) -> ImageTensors:
    data = dataset.data
    if isinstance(data, np.ndarray):  # CIFAR: [N, H, W, C] numpy
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    else:  # MNIST: [N, H, W] tensor
        images = data.unsqueeze(1).contiguous()
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return ImageTensors(images, labels)


def _loader(source: _Source):
    def load(request: LoadRequest, options: NoOptions) -> LoadedData:
        root = resolve_data_dir(request.data_dir)
        train = _to_tensors(_open(source, root, True, request.download))
        test = _to_tensors(_open(source, root, False, request.download))
        return LoadedData(info=source.info, train=train, test={"test": test})

    return load


for _source in (
    _Source(MNIST_INFO, datasets.MNIST, "MNIST/raw"),
    _Source(CIFAR10_INFO, datasets.CIFAR10, "cifar-10-batches-py"),
    _Source(CIFAR100_INFO, datasets.CIFAR100, "cifar-100-python"),
):
    register_dataset(
        DatasetBuilder(
            name=_source.info.name,
            options=NoOptions,
            load=_loader(_source),
            describe=lambda options, info=_source.info: info,
        )
    )
