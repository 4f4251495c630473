"""``shapes``: a synthetic, seeded dataset with a known spurious feature (the built-in default).

Each image shows one black shape -- the class -- on a background of 8 x 8 coloured blocks. The
blocks are jittered around one dominant colour, and the dominant colour is a confounder: every class
has its own colour, and the image takes its class's colour with probability ``rho`` (else one of
the other colours, uniformly). A model can therefore score about ``rho`` by reading the colour
alone, and the ``shifted`` test split, where the colour is independent of the class (uniform over
the colours, i.e. ``rho = 1 / num_classes``), tells a shape-reader from a colour-reader. The
``iid`` test split uses the training ``rho``.

Classes, in label order: circle, square, triangle, cross, diamond, ring (``num_classes`` 2..6,
default 4). Every shape is mirror-symmetric, so horizontal flips keep the label. A shape's
half-extent is 20-36 % of the image side, and it keeps a margin of ``crop_padding`` pixels from
the border, so the random-crop augmentation never cuts or mirrors it.

Generation is vectorised (shapes are inequalities on coordinate grids): 10k 32-px images take a
fraction of a second on one CPU core, and a seed fixes every pixel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ciiv.data.registry import (
    DatasetBuilder,
    DatasetInfo,
    LoadedData,
    LoadRequest,
    register_dataset,
)
from ciiv.data.tensors import ImageTensors, channel_stats

__all__ = ["PALETTE", "SHAPE_NAMES", "ShapesOptions", "ShapesSample", "generate_shapes"]

SHAPE_NAMES = ("circle", "square", "triangle", "cross", "diamond", "ring")

# Class k's own background colour, RGB in [0, 1]. All are bright, so the black shape stands out
# whatever the colour, and they are at least 0.5 apart so the dominant colour is unambiguous.
PALETTE = torch.tensor(
    [
        [0.90, 0.30, 0.25],  # red
        [0.30, 0.80, 0.35],  # green
        [0.30, 0.50, 0.95],  # blue
        [0.95, 0.85, 0.30],  # yellow
        [0.85, 0.40, 0.85],  # magenta
        [0.35, 0.85, 0.85],  # cyan
    ]
)

BLOCKS = 8  # background blocks per side
BLOCK_JITTER = 0.12  # each block's colour is the dominant colour + U(-j, j) per channel
RADIUS_RANGE = (0.20, 0.36)  # shape half-extent, as a fraction of the image side
_CHUNK = 4096  # images rendered at once (bounds the float32 working memory)


class ShapesSample(NamedTuple):
    """Images uint8 [N, 3, S, S], labels (the shape class) int64 [N] and the dominant background
    colours (indices into ``PALETTE``) int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    colors: torch.Tensor


def shapes_crop_padding(image_size: int) -> int:
    """Crop padding (and shape margin) for ``image_size``: 2 px at 32 px."""
    return max(1, image_size // 16)


def _circle(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return dx.square() + dy.square() <= 1.0


def _square(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return (dx.abs() <= 0.8) & (dy.abs() <= 0.8)


def _triangle(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    # Apex at (0, -1), base at dy = 0.8 with half-width 0.95 (image rows grow downwards).
    return (dy <= 0.8) & (dx.abs() <= 0.95 * (dy + 1.0) / 1.8)


def _cross(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return ((dx.abs() <= 0.3) & (dy.abs() <= 0.95)) | ((dy.abs() <= 0.3) & (dx.abs() <= 0.95))


def _diamond(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return dx.abs() + dy.abs() <= 1.0


def _ring(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    d2 = dx.square() + dy.square()
    return (d2 <= 1.0) & (d2 >= 0.55**2)


# Each takes coordinates relative to the shape's centre in units of its half-extent (dx [M, 1, S],
# dy [M, S, 1]) and returns its pixels [M, S, S]; all fit in the unit square [-1, 1]^2.
_SHAPES = (_circle, _square, _triangle, _cross, _diamond, _ring)


def _check_shape_args(num_classes: int, image_size: int, rho: float) -> None:
    if not 2 <= num_classes <= len(SHAPE_NAMES):
        raise ValueError(f"num_classes must be in [2, {len(SHAPE_NAMES)}], got {num_classes}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16 for recognisable shapes, got {image_size}")
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")


def _render(
    labels: torch.Tensor,
    colors: torch.Tensor,
    centre_x: torch.Tensor,
    centre_y: torch.Tensor,
    radius: torch.Tensor,
    jitter: torch.Tensor,
    image_size: int,
) -> torch.Tensor:
    """Deterministic rendering of drawn parameters -> uint8 [M, 3, S, S]."""
    blocks = (PALETTE[colors][:, :, None, None] + jitter).clamp(0.0, 1.0)
    blocks = (blocks * 255.0).round().to(torch.uint8)  # [M, 3, BLOCKS, BLOCKS]
    block_of = torch.arange(image_size) * BLOCKS // image_size  # pixel -> block, per axis
    image = blocks[:, :, block_of[:, None], block_of[None, :]]
    grid = torch.arange(image_size, dtype=torch.float32) + 0.5  # pixel centres
    inside = torch.zeros(labels.shape[0], image_size, image_size, dtype=torch.bool)
    for k, shape in enumerate(_SHAPES):  # a loop over classes, not over images
        index = torch.nonzero(labels == k).squeeze(1)
        if index.numel():
            scale = radius[index, None, None]
            dx = (grid[None, None, :] - centre_x[index, None, None]) / scale
            dy = (grid[None, :, None] - centre_y[index, None, None]) / scale
            inside[index] = shape(dx, dy)
    return image.masked_fill_(inside[:, None], 0)


def generate_shapes(
    n: int, *, rho: float = 0.9, seed: int = 0, num_classes: int = 4, image_size: int = 32
) -> ShapesSample:
    """``n`` shape images (CPU) of S = ``image_size`` (>= 16) pixels, fully determined by ``seed``.

    Labels are balanced (each of the 2..6 classes gets ``n // num_classes`` or one more); ``rho``
    is the probability that the dominant background colour is the class's own
    (``1 / num_classes`` makes colour and class independent).
    """
    _check_shape_args(num_classes, image_size, rho)
    generator = torch.Generator().manual_seed(seed)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
    # A non-matching colour is the label's colour shifted by 1..K-1: uniform over the others.
    shift = torch.randint(1, num_classes, (n,), generator=generator)
    colors = torch.where(uniform(n) < rho, labels, (labels + shift) % num_classes)
    low, high = RADIUS_RANGE
    radius = (low + (high - low) * uniform(n)) * image_size
    margin = radius + shapes_crop_padding(image_size)
    centre_x = margin + (image_size - 2 * margin) * uniform(n)
    centre_y = margin + (image_size - 2 * margin) * uniform(n)
    jitter = (2.0 * uniform(n, 3, BLOCKS, BLOCKS) - 1.0) * BLOCK_JITTER
    images = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    for start in range(0, n, _CHUNK):
        part = slice(start, start + _CHUNK)
        drawn = (labels, colors, centre_x, centre_y, radius, jitter)
        images[part] = _render(*(t[part] for t in drawn), image_size)
    return ShapesSample(images, labels, colors)


@dataclass(frozen=True)
class ShapesOptions:
    """Options of the ``shapes`` dataset: ``n_train`` images before the validation split is
    carved out, ``n_test`` in each test split (``iid`` and ``shifted``), and the colour-class
    agreement ``rho`` of the training and ``iid`` splits."""

    n_train: int = 10000
    n_test: int = 2000
    rho: float = 0.9
    image_size: int = 32
    num_classes: int = 4

    def __post_init__(self) -> None:
        _check_shape_args(self.num_classes, self.image_size, self.rho)
        if self.n_train < self.num_classes or self.n_test < 1:
            raise ValueError(
                f"need n_train >= num_classes and n_test >= 1, got {self.n_train}, {self.n_test}"
            )


@functools.lru_cache(maxsize=16)
def _stats(num_classes: int, image_size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # With balanced classes the marginal colour distribution is uniform for every rho, so the
    # statistics depend only on the class count and size: measure them once on a fixed sample.
    sample = generate_shapes(2048, rho=1.0, seed=0, num_classes=num_classes, image_size=image_size)
    return channel_stats(sample.images)


def describe_shapes(options: ShapesOptions) -> DatasetInfo:
    mean, std = _stats(options.num_classes, options.image_size)
    return DatasetInfo(
        name="shapes",
        num_classes=options.num_classes,
        in_channels=3,
        image_size=options.image_size,
        mean=mean,
        std=std,
        spike_scale=0.9,
        hflip=True,
        crop_padding=shapes_crop_padding(options.image_size),
        class_names=SHAPE_NAMES[: options.num_classes],
    )


def load_shapes(request: LoadRequest, options: ShapesOptions) -> LoadedData:
    """Train, ``iid`` and ``shifted`` splits from three seeds derived from the data seed."""
    kwargs = {"num_classes": options.num_classes, "image_size": options.image_size}
    base = 3 * request.seed

    def split(n: int, rho: float, offset: int) -> ImageTensors:
        sample = generate_shapes(n, rho=rho, seed=base + offset, **kwargs)
        return ImageTensors(sample.images, sample.labels)

    return LoadedData(
        info=describe_shapes(options),
        train=split(options.n_train, options.rho, 0),
        test={
            "iid": split(options.n_test, options.rho, 1),
            "shifted": split(options.n_test, 1.0 / options.num_classes, 2),
        },
    )


register_dataset(DatasetBuilder("shapes", ShapesOptions, load_shapes, describe_shapes))
