"""Datasets held in memory as uint8 tensors, device-side augmentation, and batching.

Typical use (the training loop)::

    from ciiv.data import load_splits, iterate_batches
    from ciiv.data.augment import random_crop_flip, to_float

    splits = load_splits("cifar10", data_dir, seed=0)      # Splits(info, train, val, test)
    info = splits.info                                      # num_classes, mean, std, ...
    g = torch.Generator().manual_seed(seed + epoch)         # same seed on every DDP rank
    for xb, yb in iterate_batches(splits.train.images, splits.train.labels, 128,
                                  shuffle=True, generator=g, drop_last=True,
                                  rank=rank, world_size=world_size):
        x = to_float(xb, device)                            # float [B, C, H, W] in [0, 1]
        x = random_crop_flip(x, info.crop_padding, info.hflip)

Datasets: ``list_datasets()``, one module each (docs/training.md says where each reads its files).
The validation split is carved from the training split (stratified, seeded) unless the dataset
ships one; it is never taken from a test split.
"""

from ciiv.data import imagefolder, mini_imagenet, shapes, torchvision_sets  # noqa: F401 (register)
from ciiv.data.augment import random_crop_flip, to_float
from ciiv.data.paths import DatasetNotFoundError
from ciiv.data.registry import (
    DatasetInfo,
    Splits,
    get_dataset_info,
    list_datasets,
    load_splits,
)
from ciiv.data.shapes import generate_shapes
from ciiv.data.tensors import (
    ImageTensors,
    batches_per_epoch,
    iterate_batches,
    split_validation,
    stratified_subset,
)

__all__ = [
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageTensors",
    "Splits",
    "batches_per_epoch",
    "generate_shapes",
    "get_dataset_info",
    "iterate_batches",
    "list_datasets",
    "load_splits",
    "random_crop_flip",
    "split_validation",
    "stratified_subset",
    "to_float",
]
