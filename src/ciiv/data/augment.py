"""Device-side, batched augmentation and uint8 -> float conversion.

Everything here runs on the input's device with one set of random draws per batch (no loop over
images), so augmentation costs a few kernel launches per step instead of a CPU worker pool.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["random_crop_flip", "to_float"]


def to_float(
    x: torch.Tensor, device: torch.device | str | None = None, *, channels_last: bool = False
) -> torch.Tensor:
    """uint8 images [B, C, H, W] in 0..255 -> float32 in [0, 1] on ``device``.

    The copy to ``device`` happens before the conversion, so only uint8 bytes (a quarter of the
    float32 size) cross the bus. ``channels_last`` returns the NHWC memory format, which is faster
    for convolutions under mixed precision on GPUs.
    """
    if x.dtype != torch.uint8:
        raise ValueError(f"to_float expects uint8 images, got {x.dtype}")
    if device is not None:
        x = x.to(device, non_blocking=True)
    out = x.float().div_(255.0)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def random_crop_flip(
    x: torch.Tensor,
    padding: int,
    hflip: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per image of x [B, C, H, W] (any float dtype and range, any device): a random crop after
    ``padding`` px of reflect padding (< min(H, W); 0 = no crop), then with ``hflip`` a left-right
    flip with probability 1/2 -- torchvision's ``RandomCrop(size, padding, padding_mode="reflect")``
    then ``RandomHorizontalFlip(0.5)``. ``generator`` (on x's device) draws the offsets and flips;
    the result has x's shape, dtype and device."""
    if x.dim() != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(x.shape)}")
    batch, channels, height, width = x.shape
    if not 0 <= padding < min(height, width):
        raise ValueError(f"padding must be in [0, {min(height, width)}), got {padding}")
    if padding == 0 and not hflip:
        return x
    device = x.device
    padded = F.pad(x, (padding, padding, padding, padding), mode="reflect") if padding else x
    offset_y = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    offset_x = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    rows = offset_y[:, None] + torch.arange(height, device=device)  # [B, H]
    cols = torch.arange(width, device=device).expand(batch, width)  # [B, W]
    if hflip:
        flip = torch.rand(batch, generator=generator, device=device) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    cols = offset_x[:, None] + cols
    # One gather for the whole batch: out[b, c, i, j] = padded[b, c, rows[b, i], cols[b, j]].
    index_b = torch.arange(batch, device=device)[:, None, None, None]
    index_c = torch.arange(channels, device=device)[None, :, None, None]
    return padded[index_b, index_c, rows[:, None, :, None], cols[:, None, None, :]]
