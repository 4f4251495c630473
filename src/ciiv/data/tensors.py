"""In-memory image splits and the batch iterator that serves them.

Every dataset of the project is small enough (at most 60k images of <= 84 px) to be held whole as
one uint8 tensor, so the training loop batches by indexing -- on the CPU, or on the accelerator
after one ``ImageTensors.to(device)`` -- instead of running a DataLoader with worker processes.
Augmentation then happens on the device (:mod:`ciiv.data.augment`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = [
    "ImageTensors",
    "batches_per_epoch",
    "channel_stats",
    "iterate_batches",
    "split_validation",
    "stratified_subset",
]


@dataclass(frozen=True)
class ImageTensors:
    """One split held in memory: images uint8 [N, C, H, W] (0..255), labels int64 [N] (class
    indices)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                "images must be a uint8 tensor [N, C, H, W], got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be an int64 tensor [N={self.images.shape[0]}], got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor) -> ImageTensors:
        """The examples at ``index`` (int64 [M] or bool [N]), in that order."""
        return ImageTensors(self.images[index], self.labels[index])

    def to(self, device: torch.device | str) -> ImageTensors:
        """A copy on ``device`` (images stay uint8: a quarter of the float32 footprint)."""
        return ImageTensors(self.images.to(device), self.labels.to(device))


def split_validation(
    data: ImageTensors, fraction: float, seed: int
) -> tuple[ImageTensors, ImageTensors]:
    """Carve a stratified validation split out of ``data`` -> ``(train, val)``, disjoint.

    Each class gives ``round(fraction * count)`` examples, chosen by a permutation seeded with
    ``seed`` (the same seed gives the same split on every machine). Both outputs keep the original
    order of ``data``. ``fraction`` in [0, 1); 0 gives an empty validation split.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    labels = data.labels.cpu()
    n = labels.shape[0]
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    # A stable sort by label keeps the random order inside each class, so "the first k of a
    # class" below is a uniformly random subset of that class.
    by_class = perm[torch.argsort(labels[perm], stable=True)]
    sorted_labels = labels[by_class]
    counts = torch.bincount(sorted_labels, minlength=int(labels.max()) + 1 if n else 0)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(n) - starts[sorted_labels]
    num_val = torch.floor(counts.double() * fraction + 0.5).long()
    is_val = rank_in_class < num_val[sorted_labels]
    val_index = torch.sort(by_class[is_val]).values
    train_index = torch.sort(by_class[~is_val]).values
    device = data.labels.device
    return data.subset(train_index.to(device)), data.subset(val_index.to(device))


def stratified_subset(data: ImageTensors, size: int, seed: int) -> ImageTensors:
    """About ``size`` examples of ``data``, each class keeping its share (rounded), chosen by a
    permutation seeded with ``seed``, in the original order; all of ``data`` if ``size`` is not
    smaller. The same selection rule as :func:`split_validation`."""
    if size >= len(data):
        return data
    return split_validation(data, size / len(data), seed)[1]


def _rank_order(
    n: int, shuffle: bool, generator: torch.Generator | None, rank: int, world_size: int
) -> torch.Tensor:
    """Indices [M] that ``rank`` visits in one epoch (DistributedSampler semantics)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if shuffle:
        device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=device).cpu()
    else:
        order = torch.arange(n)
    if world_size > 1 and n > 0:
        # Pad by wrapping around so that every rank gets ceil(n / world_size) examples: the ranks
        # then run the same number of steps, which DDP's collective ops require.
        total = math.ceil(n / world_size) * world_size
        order = order.repeat(math.ceil(total / n))[:total]
        order = order[rank::world_size]
    return order


def iterate_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images[idx], labels[idx])`` mini-batches (``batch_size`` per rank) of one epoch
    over images [N, ...] (any dtype) and labels [N], on the tensors' devices.

    ``shuffle`` visits the examples in an order drawn from ``generator``; with ``world_size > 1``
    every rank must pass a generator seeded identically (e.g. ``seed + epoch``) so the ranks
    partition one permutation, as ``DistributedSampler.set_epoch`` does. Rank ``r`` takes positions
    ``r, r + world_size, ...`` of the order, padded by wrapping around when N is not divisible by
    ``world_size`` (a few examples are then seen twice per epoch; evaluate with ``world_size=1``
    for exact counts).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images ({images.shape[0]}) and labels ({labels.shape[0]}) differ in N")
    order = _rank_order(images.shape[0], shuffle, generator, rank, world_size)
    m = order.shape[0]
    stop = m - m % batch_size if drop_last else m
    image_order = order.to(images.device)
    label_order = order.to(labels.device)
    for start in range(0, stop, batch_size):
        yield (
            images[image_order[start : start + batch_size]],
            labels[label_order[start : start + batch_size]],
        )


def batches_per_epoch(
    n: int, batch_size: int, *, drop_last: bool = False, world_size: int = 1
) -> int:
    """Number of batches :func:`iterate_batches` yields per rank for N examples."""
    per_rank = math.ceil(n / world_size) if world_size > 1 else n
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images [N, C, H, W], in [0, 1] units,
    rounded to 4 decimals; accumulated in float64 over chunks of about 16M values, so no float
    copy of the whole split is made."""
    if images.shape[0] == 0:
        raise ValueError("cannot compute channel statistics of an empty split")
    channels = images.shape[1]
    chunk = max(1, 2**24 // images[0].numel())
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3)).cpu()
        total_sq += x.square().sum(dim=(0, 2, 3)).cpu()
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
