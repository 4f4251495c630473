"""Batched device-side augmentation: crop with reflect padding, flips, uint8 -> float."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ciiv.data.augment import random_crop_flip, to_float


def _images(batch: int = 16, size: int = 8) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def _candidates(image: torch.Tensor, padding: int, hflip: bool) -> list[torch.Tensor]:
    """Every output torchvision's RandomCrop(reflect) + RandomHorizontalFlip could give."""
    size = image.shape[-1]
    padded = F.pad(image[None], (padding,) * 4, mode="reflect")[0] if padding else image
    crops = [
        padded[:, i : i + size, j : j + size]
        for i in range(2 * padding + 1)
        for j in range(2 * padding + 1)
    ]
    return crops + [c.flip(-1) for c in crops] if hflip else crops


def test_shape_dtype_range_preserved():
    x = _images()
    out = random_crop_flip(x, padding=2, hflip=True, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min() >= x.min() and out.max() <= x.max()  # reflect padding adds no new values


def test_no_padding_no_flip_is_identity():
    x = _images()
    assert torch.equal(random_crop_flip(x, padding=0, hflip=False), x)


@pytest.mark.parametrize(("padding", "hflip"), [(2, True), (3, False), (0, True)])
def test_every_output_is_a_valid_crop(padding, hflip):
    x = _images(batch=12)
    out = random_crop_flip(x, padding, hflip, generator=torch.Generator().manual_seed(2))
    for image, result in zip(x, out, strict=True):
        assert any(torch.equal(result, c) for c in _candidates(image, padding, hflip))


def test_flip_with_the_same_draws_twice_is_identity():
    x = _images()
    once = random_crop_flip(x, 0, True, generator=torch.Generator().manual_seed(3))
    twice = random_crop_flip(once, 0, True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(twice, x)
    flipped = (once == x.flip(-1)).flatten(1).all(1)
    kept = (once == x).flatten(1).all(1)
    assert (flipped | kept).all() and flipped.any() and kept.any()


def test_examples_get_independent_offsets_and_flips():
    # One batch draws every offset and both flip states: the randomness is per example.
    x = torch.arange(64.0).reshape(1, 1, 8, 8).expand(400, 1, 8, 8)
    generator = torch.Generator().manual_seed(4)
    cropped = random_crop_flip(x, 2, False, generator=generator)
    assert cropped[:, 0, 4, 4].unique().numel() == 25  # x[2 + dy, 2 + dx], dx, dy in 0..4
    flipped = random_crop_flip(x, 0, True, generator=generator)[:, 0, 0, 0] == 7
    assert 150 < int(flipped.sum()) < 250  # Binomial(400, 1/2)


def test_generator_makes_it_deterministic():
    x = _images()
    a = random_crop_flip(x, 2, True, generator=torch.Generator().manual_seed(5))
    b = random_crop_flip(x, 2, True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_bad_padding():
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(_images(size=4), padding=4, hflip=False)


def test_to_float_range_and_layout():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 3, 1, 1).expand(2, 3, 4, 4)
    out = to_float(x, "cpu")
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.0, 0.2, 1.0]))
    assert to_float(x, channels_last=True).is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="uint8"):
        to_float(out)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_input_device():
    x = to_float(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), "cuda")
    out = random_crop_flip(x, 2, True, generator=torch.Generator("cuda").manual_seed(0))
    assert out.device == x.device
    for image, result in zip(x.cpu(), out.cpu(), strict=True):
        assert any(torch.equal(result, c) for c in _candidates(image, 2, True))
