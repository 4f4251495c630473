"""MNIST, CIFAR-10 and CIFAR-100 through torchvision, held in memory as uint8 tensors.

Files are looked for under the data root (:func:`~ciiv.data.paths.resolve_data_dir`) in
torchvision's layout. When they are missing and ``download`` is allowed, torchvision downloads
them, giving up after ``DOWNLOAD_TIMEOUT_S`` seconds without an answer (an offline machine fails
fast rather than hanging); otherwise :class:`DatasetNotFoundError` says where they were looked
for. MNIST's files are checked first, so a corrupt one is named. std is the per-pixel standard
deviation of the training set, not the often-copied 0.2023/0.1994/0.2010.

CIFAR-10 and CIFAR-100 also read an image-folder copy (an archive, or a folder with
``train/<class>/`` + ``test/<class>/`` and no torchvision files), as the ``imagefolder`` dataset
does, never downloaded; folders must carry the dataset's class names and images be 32 x 32. A
JPEG copy logs a warning (docs/training.md, "CIFAR-10 / CIFAR-100 from an image folder").
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from ciiv.data.cache import ARCHIVE_SUFFIXES, is_archive
from ciiv.data.decode import list_images
from ciiv.data.imagefolder import decode_tree, find_tree, tree_root
from ciiv.data.paths import DATA_ENV, DatasetNotFoundError, resolve_data_dir
from ciiv.data.registry import (
    DatasetBuilder,
    DatasetInfo,
    LoadedData,
    LoadRequest,
    register_dataset,
)
from ciiv.data.tensors import ImageTensors

__all__ = ["CIFAR100_INFO", "CIFAR10_INFO", "DOWNLOAD_TIMEOUT_S", "MNIST_INFO"]

logger = logging.getLogger(__name__)

# Seconds a download waits for the network (to connect, or for the next bytes) before giving up.
DOWNLOAD_TIMEOUT_S = 10.0

# MNIST's idx files and their magic numbers: 0x08 (unsigned bytes) << 8 | number of dimensions.
_MNIST_FILES = {
    "train-images-idx3-ubyte": 0x0803,
    "train-labels-idx1-ubyte": 0x0801,
    "t10k-images-idx3-ubyte": 0x0803,
    "t10k-labels-idx1-ubyte": 0x0801,
}

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
    class_names=tuple("airplane automobile bird cat deer dog frog horse ship truck".split()),
)
CIFAR100_INFO = dataclasses.replace(
    CIFAR10_INFO,
    name="cifar100",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    class_names=tuple(CIFAR100_CLASSES),
)


@dataclass(frozen=True)
class NoOptions:
    """These datasets take no options."""


def _check_idx(path: Path, magic: int) -> None:
    """Refuse an MNIST idx file whose magic number or length is wrong, naming it (torchvision
    would fail with a bare AssertionError)."""
    ndim = magic & 0xFF
    with path.open("rb") as f:
        header = f.read(4 * (ndim + 1))
    found = int.from_bytes(header[:4], "big")
    fix = "delete it to download it again, or replace it with the original file"
    if found != magic:
        raise DatasetNotFoundError(
            f"{path} is not an MNIST idx file (magic number 0x{found:08x}, expected "
            f"0x{magic:08x}); {fix}"
        )
    dims = [int.from_bytes(header[4 * i : 4 * i + 4], "big") for i in range(1, ndim + 1)]
    expected, size = len(header) + math.prod(dims), path.stat().st_size
    if len(header) < 4 * (ndim + 1) or size != expected:
        raise DatasetNotFoundError(
            f"{path} is truncated or corrupt ({size} bytes; its header promises {expected}); {fix}"
        )


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Give every socket opened in the block ``seconds`` to connect and to receive (torchvision
    opens its URLs without a timeout, so an unreachable server would hang the download)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


@dataclass(frozen=True)
class _Source:
    info: DatasetInfo
    dataset_class: type
    folder: str  # what torchvision expects under the root, for error messages
    idx_files: tuple[tuple[str, int], ...] = ()  # (name, magic) checked under root / folder
    image_tree: bool = False  # also reads a train/<class> + test/<class> image tree or archive

    def describe(self, options: NoOptions) -> DatasetInfo:
        return self.info

    def load(self, request: LoadRequest, options: NoOptions) -> LoadedData:
        root = resolve_data_dir(request.data_dir)
        tree = _tree_dir(self, root)
        if tree is not None:
            return _load_tree(self.info, tree)
        train, test = (_to_tensors(_open(self, root, t, request.download)) for t in (True, False))
        return LoadedData(info=self.info, train=train, test={"test": test})


def _open(source: _Source, root: Path, train: bool, download: bool) -> datasets.VisionDataset:
    for name, magic in source.idx_files:
        if (root / source.folder / name).is_file():
            _check_idx(root / source.folder / name, magic)
    try:
        return source.dataset_class(root=str(root), train=train, download=False)
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        pass
    hint = (
        f"Put the torchvision files at {root / source.folder} or point --data-dir (or the "
        f"{DATA_ENV} environment variable) at a folder that contains {source.folder}/"
    )
    if source.image_tree:
        hint += " (or at an image-folder copy: train/<class>/ + test/<class>/, or a .tar.gz of one)"
    if not download:
        raise DatasetNotFoundError(
            f"{source.info.name} not found (or corrupted) under {root}; downloading is disabled. "
            f"{hint}, or allow downloading on a machine with internet access."
        ) from None
    logger.info("%s not found under %s; downloading", source.info.name, root)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return source.dataset_class(root=str(root), train=train, download=True)
    except Exception as exc:  # network, permission and checksum errors all mean "not available"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DatasetNotFoundError(
            f"{source.info.name} not found under {root} and the download failed ({reason}). {hint}."
        ) from exc


def _to_tensors(dataset: datasets.VisionDataset) -> ImageTensors:
    data = dataset.data
    if isinstance(data, np.ndarray):  # CIFAR: [N, H, W, C] numpy
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    else:  # MNIST: [N, H, W] tensor
        images = data.unsqueeze(1).contiguous()
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return ImageTensors(images, labels)


def _tree_dir(source: _Source, root: Path) -> Path | None:
    """``root`` when it is an image-folder copy of ``source``'s dataset (an archive, or a folder
    with train/ + test/ and without the torchvision files), else None."""
    if not source.image_tree:
        return None
    if root.name.lower().endswith(ARCHIVE_SUFFIXES) and not root.exists():
        raise DatasetNotFoundError(f"{source.info.name}: {root} does not exist")
    if is_archive(root):
        return root
    if root.is_dir() and not (root / source.folder).exists() and find_tree(root) is not None:
        return root
    return None


def _load_tree(info: DatasetInfo, data_dir: Path) -> LoadedData:
    """The image tree at ``data_dir`` as dataset ``info``: labels in ``info``'s class order."""
    root = tree_root(data_dir, info.name)
    payload = decode_tree(root, None)
    folders = payload["classes"]
    missing = sorted(set(info.class_names) - set(folders))
    unexpected = sorted(set(folders) - set(info.class_names))
    if missing or unexpected:
        listed = ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        raise ValueError(
            f"{info.name}: the class folders of {root / 'train'} are not {info.name}'s classes "
            f"({len(missing)} missing, {len(unexpected)} unknown: {listed or 'none'}); name them "
            f"{', '.join(info.class_names[:3])}, ... or use --dataset imagefolder"
        )
    size = payload["train_images"].shape[-1]
    if size != info.image_size:
        raise ValueError(
            f"{info.name}: the images in {root} are {size} x {size} px, not {info.image_size} x "
            f"{info.image_size}; use --dataset imagefolder (with the image_size option) for them"
        )
    # Folder order -> canonical order (they agree for CIFAR's sorted names, but never rely on it).
    order = torch.tensor([info.class_names.index(name) for name in folders])
    train = ImageTensors(payload["train_images"], order[payload["train_labels"]])
    test = ImageTensors(payload["test_images"], order[payload["test_labels"]])
    sample = list_images(root / "train" / folders[0])[0]
    if sample.suffix.lower() in (".jpg", ".jpeg"):
        logger.warning(
            "%s from JPEG files (%s): lossy, so accuracies are not comparable with published "
            "CIFAR figures",
            info.name,
            data_dir,
        )
    logger.info("%s: image-folder copy at %s", info.name, root)
    return LoadedData(info=info, train=train, test={"test": test})


for _source in (
    _Source(MNIST_INFO, datasets.MNIST, "MNIST/raw", tuple(_MNIST_FILES.items())),
    _Source(CIFAR10_INFO, datasets.CIFAR10, "cifar-10-batches-py", image_tree=True),
    _Source(CIFAR100_INFO, datasets.CIFAR100, "cifar-100-python", image_tree=True),
):
    register_dataset(DatasetBuilder(_source.info.name, NoOptions, _source.load, _source.describe))
