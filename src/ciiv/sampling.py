"""The retinotopic sampling layer: CiiV's instrumental variable (SPEC section 2).

One forward pass turns a batch of normalised images into L "views". Each view is the average of K
spike-sampled copies of the image, each multiplied by a random binary mask whose keep-probability
falls off with the distance to the view's centre (a retina-like density). The layer also returns
the sampling density z of every view, which the classifier divides by and the consistency loss
regresses on.

All masks and all spike noise of a batch come from one random draw each, on the input's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ciiv._checks import check_choice

__all__ = [
    "BPDA_SURROGATES",
    "EXACT",
    "GRID_FRACTIONS",
    "SURROGATES",
    "RetinotopicSampler",
    "SamplerOutput",
    "Surrogate",
    "grid_centers",
]

Surrogate = Literal["exact", "identity", "smooth"]
# The spike step's backward: the true gradient (EXACT, the label of "no surrogate" in records),
# or one of the BPDA substitutes that attacks and the audit may request (``model.bpda(name)``).
# The one list of these names.
EXACT = "exact"
BPDA_SURROGATES: tuple[str, ...] = ("identity", "smooth")
SURROGATES: tuple[str, ...] = (EXACT, *BPDA_SURROGATES)

# Centre coordinates per axis as fractions of the image size, in the official order: the middle
# first, so that view 0 is the image centre and the paper's single-view protocol uses it.
GRID_FRACTIONS: tuple[float, ...] = (1 / 2, 1 / 6, 5 / 6)
MIN_IMAGE_SIZE = 6


def grid_centers(height: int, width: int) -> Tensor:
    """Centres (row, col) of the 9 official views, shape [9, 2], in pixels.

    View l has col = c_w[l // 3] and row = c_h[l % 3], with c = round(f * size) for the fractions in
    GRID_FRACTIONS (rounded half up). For 32 px this gives [16, 5, 27], for 64 px [32, 11, 53].
    """
    rows = [math.floor(f * height + 0.5) for f in GRID_FRACTIONS]
    cols = [math.floor(f * width + 0.5) for f in GRID_FRACTIONS]
    return torch.tensor([(rows[v % 3], cols[v // 3]) for v in range(9)], dtype=torch.float32)


@dataclass
class SamplerOutput:
    """views: [L, B, C, H, W] spike rates in [0, 1]; z: densities, [L] (shared masks) or [L, B]."""

    views: Tensor
    z: Tensor


class _SpikeBPDA(torch.autograd.Function):
    """s = r / (r + eps) with r = relu(pre) forward; BPDA backward: the gradient unchanged
    (tau None, "identity") or that of sigmoid(pre / tau), a smooth step at the threshold.

    Averaged over the spike noise u ~ U(-1, 1) the smooth surrogate gradient approaches 1 / (2a)
    for |v| < a, the derivative of the firing probability clip((v + a) / (2a), 0, 1).
    """

    @staticmethod
    def forward(ctx, pre: Tensor, eps: float, tau: float | None) -> Tensor:
        if tau is not None:
            ctx.save_for_backward(pre)
        ctx.tau = tau
        r = pre.clamp_min(0)
        return r / (r + eps)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        if ctx.tau is None:
            return grad, None, None
        (pre,) = ctx.saved_tensors
        sig = torch.sigmoid(pre / ctx.tau)
        return grad * sig * (1 - sig) / ctx.tau, None, None


def spike(pre: Tensor, eps: float, surrogate: Surrogate = "exact", tau: float = 0.1) -> Tensor:
    """Differentiable spike s = relu(pre) / (relu(pre) + eps), with a choice of backward pass.

    "exact" is plain autograd (gradient eps / (r + eps)^2, spiky); "identity" is straight-through;
    "smooth" uses the derivative of sigmoid(pre / tau). The forward value is the same for all three.
    """
    if surrogate == EXACT:
        r = torch.relu(pre)
        return r / (r + eps)
    if surrogate in BPDA_SURROGATES:
        return _SpikeBPDA.apply(pre, eps, tau if surrogate == "smooth" else None)
    raise ValueError(f"unknown spike surrogate {surrogate!r}; valid: {', '.join(SURROGATES)}")


class RetinotopicSampler(nn.Module):
    """Retinotopic spike sampling of a normalised image into L views (SPEC section 2).

    Args:
        image_size: H (square) or (H, W) of the images the layer will see.
        num_views: L. At most 9 with the official 3x3 grid of centres; any number with
            ``random_centers``.
        samples_per_view: K spike samples (each with its own noise and mask) averaged per view.
        alpha, gamma: shape of the density m = (max(d) - d + alpha)^gamma, normalised to max 1.
        keep_threshold: t; a pixel is kept when m + U(0, 1) > t, so P(keep) = min(1, m + 1 - t).
        spike_scale: a, the amplitude of the spike noise u ~ U(-1, 1) (0.9 CIFAR, 0.8 MNIST).
        spike_eps: eps of s = r / (r + eps).
        per_example_masks: draw masks per example instead of one H x W mask per view and sample
            shared by the whole batch and every channel (the official behaviour, the default).
        random_centers: draw each view's centre uniformly over the pixels at every forward pass
            (the "RC" ablation) instead of the fixed 3x3 grid.
        surrogate: backward of the spike step: "exact" (true gradient), or the BPDA substitutes
            "identity" and "smooth". The forward value never changes.
        surrogate_tau: temperature of the "smooth" surrogate, in normalised pixel units.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        num_views: int = 9,
        samples_per_view: int = 3,
        alpha: float = 10.0,
        gamma: float = 0.3,
        keep_threshold: float = 0.9,
        spike_scale: float = 0.9,
        spike_eps: float = 1e-5,
        per_example_masks: bool = False,
        random_centers: bool = False,
        surrogate: Surrogate = "exact",
        surrogate_tau: float = 0.1,
    ) -> None:
        super().__init__()
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        if min(height, width) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"image_size {height}x{width} is smaller than the {MIN_IMAGE_SIZE} px needed for "
                "the 3x3 grid of view centres; upsample the images first"
            )
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        if num_views > 9 and not random_centers:
            raise ValueError(
                f"num_views={num_views}: the official grid has 9 centres; use num_views <= 9 "
                "or random_centers=True"
            )
        if samples_per_view < 1:
            raise ValueError(f"samples_per_view must be >= 1, got {samples_per_view}")
        if not 0 < keep_threshold <= 1:
            raise ValueError(f"keep_threshold must be in (0, 1], got {keep_threshold}")
        if spike_scale <= 0 or spike_eps <= 0 or alpha <= 0 or gamma <= 0:
            raise ValueError("alpha, gamma, spike_scale and spike_eps must be positive")
        check_choice("surrogate", surrogate, SURROGATES)
        self.height, self.width = height, width
        self.num_views = num_views
        self.samples_per_view = samples_per_view
        self.alpha, self.gamma = alpha, gamma
        self.keep_threshold = keep_threshold
        self.spike_scale, self.spike_eps = spike_scale, spike_eps
        self.per_example_masks = per_example_masks
        self.random_centers = random_centers
        self.surrogate: Surrogate = surrogate
        self.surrogate_tau = surrogate_tau
        rows = torch.arange(height, dtype=torch.float32)
        cols = torch.arange(width, dtype=torch.float32)
        # Pixel coordinates [H, W, 2] as (row, col); a buffer so it follows the module's device.
        self.register_buffer(
            "coords", torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1), persistent=False
        )
        centers = grid_centers(height, width)[: min(num_views, 9)]
        self.register_buffer("grid_density", self._density(centers), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"image_size=({self.height}, {self.width}), num_views={self.num_views}, "
            f"samples_per_view={self.samples_per_view}, spike_scale={self.spike_scale}, "
            f"per_example_masks={self.per_example_masks}, random_centers={self.random_centers}, "
            f"surrogate={self.surrogate!r}"
        )

    def _density(self, centers: Tensor) -> Tensor:
        """Normalised density m in (0, 1] for centres [..., 2] (row, col) -> [..., H, W]."""
        delta = self.coords - centers[..., None, None, :].to(self.coords)
        d = delta.square().sum(-1).sqrt()
        d_max = d.flatten(-2).amax(-1)[..., None, None]
        m = (d_max - d + self.alpha).pow(self.gamma)
        return m / m.flatten(-2).amax(-1)[..., None, None]

    def keep_probability(self) -> Tensor:
        """Probability that each pixel is kept, min(1, m + 1 - threshold), shape [L, H, W], for
        the official grid's centres."""
        return (self.grid_density + 1 - self.keep_threshold).clamp(max=1.0)

    def firing_probability(self, v: Tensor) -> Tensor:
        """Probability that a spike fires for normalised value v: clip((v + a) / (2a), 0, 1)."""
        a = self.spike_scale
        return ((v + a) / (2 * a)).clamp(0, 1)

    def _check(self, v: Tensor, num_views: int) -> None:
        if v.dim() != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(v.shape)}")
        if v.shape[-2:] != (self.height, self.width):
            raise ValueError(
                f"sampler was built for {self.height}x{self.width} images, got "
                f"{v.shape[-2]}x{v.shape[-1]}; build it with image_size={tuple(v.shape[-2:])}"
            )
        if not 1 <= num_views <= self.num_views:
            raise ValueError(f"num_views must be in [1, {self.num_views}], got {num_views}")

    def _masks(self, batch: int, num_views: int, device: torch.device, generator) -> Tensor:
        """Binary masks [L, K, B or 1, 1, H, W] (float), one random draw for the whole batch."""
        n = batch if self.per_example_masks else 1
        if self.random_centers:
            scale = torch.tensor([self.height - 1, self.width - 1], dtype=torch.float32)
            u = torch.rand(num_views, n, 2, generator=generator, device=device)
            density = self._density(torch.round(u * scale.to(device)))[:, None, :, None]
        else:
            density = self.grid_density[:num_views, None, None, None]
        shape = (num_views, self.samples_per_view, n, 1, self.height, self.width)
        noise = torch.rand(shape, generator=generator, device=device)
        return (density + noise > self.keep_threshold).to(torch.float32)

    def forward(
        self, v: Tensor, generator: torch.Generator | None = None, num_views: int | None = None
    ) -> SamplerOutput:
        """Sample views from normalised images v [B, C, H, W].

        Returns views [L, B, C, H, W] with values in [0, 1] and densities z ([L], or [L, B] with
        per-example masks). ``num_views`` uses the first n views (1 = the image centre only).
        """
        num_views = self.num_views if num_views is None else num_views
        self._check(v, num_views)
        batch = v.shape[0]
        k = self.samples_per_view
        masks = self._masks(batch, num_views, v.device, generator).to(v.dtype)
        u = torch.rand((num_views, k, *v.shape), generator=generator, device=v.device)
        pre = v + self.spike_scale * (2 * u.to(v.dtype) - 1)
        s = spike(pre, self.spike_eps, self.surrogate, self.surrogate_tau)
        views = (s * masks).mean(1)
        z = masks.mean(dim=(1, 3, 4, 5))  # [L, B or 1]
        z = z.expand(num_views, batch) if self.per_example_masks else z[:, 0]
        return SamplerOutput(views=views, z=z)
