"""Dataset registry: name -> metadata (:class:`DatasetInfo`) and in-memory splits (:class:`Splits`).

Each dataset module registers a :class:`DatasetBuilder`: a frozen dataclass of its options
(unknown option names are rejected with the list of valid ones), a loader, and -- when the
metadata does not depend on the files -- a cheap ``describe`` that needs no data.

The validation split is never taken from a test split: datasets that ship one (mini-ImageNet) use
it, every other dataset has it carved from its training split by :func:`split_validation`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ciiv._mapping import build_dataclass
from ciiv.data.tensors import ImageTensors, split_validation

__all__ = [
    "DEFAULT_VAL_FRACTION",
    "DatasetBuilder",
    "DatasetInfo",
    "LoadRequest",
    "LoadedData",
    "Splits",
    "get_dataset_info",
    "list_datasets",
    "load_splits",
    "register_dataset",
]

logger = logging.getLogger(__name__)

DEFAULT_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class DatasetInfo:
    """What a model, the sampler and the augmentation need to know about a dataset: K =
    ``num_classes`` (labels in [0, K), ``class_names[label]``), C = ``in_channels``, H = W =
    ``image_size`` pixels, per-channel ``mean`` / ``std`` (length C, [0, 1] pixel units), the
    sampler's noise amplitude a = ``spike_scale`` (SPEC section 2), whether horizontal flips keep
    the label (``hflip``), and the random crop's reflect padding ``crop_padding`` (pixels)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    spike_scale: float
    hflip: bool
    crop_padding: int
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(
                f"{self.name}: mean/std need {self.in_channels} values, "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{self.name}: std must be positive, got {self.std}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {self.num_classes} classes but {len(self.class_names)} names"
            )


@dataclass(frozen=True)
class Splits:
    """A dataset loaded in memory (CPU): ``train`` without the validation examples, ``val`` for
    checkpoint selection (disjoint from both), and named test splits (``{"test": ...}``;
    ``shapes`` has ``{"iid", "shifted"}``)."""

    info: DatasetInfo
    train: ImageTensors
    val: ImageTensors
    test: dict[str, ImageTensors]


@dataclass(frozen=True)
class LoadRequest:
    """Where and how a loader may read its files: the user's ``--data-dir`` (None: the loader's
    default, see :mod:`.paths`), whether a missing torchvision dataset may be downloaded, and the
    data seed (synthetic datasets are generated from it)."""

    data_dir: Path | None
    download: bool
    seed: int


@dataclass(frozen=True)
class LoadedData:
    """What a loader returns: ``val`` is set only for datasets that ship a validation split."""

    info: DatasetInfo
    train: ImageTensors
    test: dict[str, ImageTensors]
    val: ImageTensors | None = None


@dataclass(frozen=True)
class DatasetBuilder:
    """A registry entry: ``options`` is the frozen dataclass type of the dataset's options (all
    fields have defaults); ``describe(options)`` gives the metadata without touching any file, or
    is None when it comes from the data (then :func:`get_dataset_info` loads it)."""

    name: str
    options: type
    load: Callable[[LoadRequest, Any], LoadedData]
    describe: Callable[[Any], DatasetInfo] | None


_DATASETS: dict[str, DatasetBuilder] = {}


def register_dataset(builder: DatasetBuilder) -> DatasetBuilder:
    """Add ``builder`` to the registry (names are unique)."""
    if builder.name in _DATASETS:
        raise ValueError(f"dataset {builder.name!r} is already registered")
    if not dataclasses.is_dataclass(builder.options):
        raise TypeError(f"{builder.name}: options must be a dataclass type")
    _DATASETS[builder.name] = builder
    return builder


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_DATASETS)


def _prepare(
    name: str, options: Mapping[str, Any], data_dir: str | os.PathLike[str] | None, **request: Any
) -> tuple[DatasetBuilder, Any, LoadRequest]:
    """The registry entry ``name``, its parsed ``options`` and the load request."""
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    builder = _DATASETS[name]
    opts = build_dataclass(builder.options, options, what="option", owner=f"dataset {name!r}")
    path = None if data_dir is None else Path(data_dir).expanduser()
    return builder, opts, LoadRequest(data_dir=path, **request)


def get_dataset_info(
    name: str, data_dir: str | os.PathLike[str] | None = None, **options: Any
) -> DatasetInfo:
    """Metadata of dataset ``name`` with the given dataset options.

    Needs no files except for ``imagefolder``, whose classes, size and statistics come from the
    data at ``data_dir`` (the decoded tree is cached, so this is cheap after the first load);
    the other datasets ignore ``data_dir``. Equal to ``load_splits(...).info``.
    """
    builder, opts, request = _prepare(name, options, data_dir, download=False, seed=0)
    if builder.describe is not None:
        return builder.describe(opts)
    return builder.load(request, opts).info


def load_splits(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    val_fraction: float | None = None,
    seed: int = 0,
    download: bool = True,
    **options: Any,
) -> Splits:
    """Load dataset ``name`` (:func:`list_datasets`) into memory as train / val / test splits.

    ``data_dir`` is where the files are (see each dataset; torchvision datasets default to
    ``$CIIV_DATA``, then ``~/.cache/ciiv/data``, and are downloaded when missing if ``download``).
    ``val_fraction`` of each training class (None: 0.1) becomes the validation split; it must stay
    None for datasets that ship one (mini-imagenet). ``seed``, the data seed, selects the
    validation examples and seeds synthetic generation: keep it fixed across training seeds so that
    every run sees the same splits. ``options`` are the dataset's (e.g. ``image_size``, ``rho``).
    Raises ValueError for an unknown dataset or option or a bad value, DatasetNotFoundError when
    the files are missing (the message says where they were looked for).

    Under DDP every rank may call this. The first load of an image tree or archive then decodes
    on every rank at once (correct, the caches are written atomically, but wasteful): load on
    rank 0, barrier, then load on the other ranks, which read the cache.
    """
    builder, opts, request = _prepare(name, options, data_dir, download=download, seed=seed)
    loaded = builder.load(request, opts)
    if loaded.val is not None:
        if val_fraction is not None:
            raise ValueError(
                f"dataset {name!r} ships its own validation split; leave val_fraction unset"
            )
        train, val = loaded.train, loaded.val
    else:
        fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
        train, val = split_validation(loaded.train, fraction, seed)
    splits = Splits(info=loaded.info, train=train, val=val, test=loaded.test)
    logger.info(
        "dataset %s: train %d, val %d, %s",
        name,
        len(train),
        len(val),
        ", ".join(f"{k} {len(v)}" for k, v in splits.test.items()),
    )
    return splits
