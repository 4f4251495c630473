"""Classifiers that take pixels in [0, 1]: a plain one and CiiV's multi-view one (SPEC section 3).

Both own their normalisation, so attacks and evaluation work in pixel space. ``forward`` always
returns one logits tensor; CiiV's training outputs come from ``forward_views``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ciiv._checks import check_choice, check_images
from ciiv.sampling import SURROGATES, RetinotopicSampler, Surrogate

from .registry import Backbone

__all__ = ["CiiVClassifier", "Classifier", "ViewOutput", "predict"]


def predict(model: nn.Module, x: Tensor) -> Tensor:
    """Labels [B] by the model's own inference rule: ``model.predict`` if it has one (randomized
    smoothing votes), else the argmax of its logits."""
    rule = getattr(model, "predict", None)
    return rule(x) if callable(rule) else model(x).argmax(1)


class _Normalised(nn.Module):
    """Holds per-channel mean/std buffers and validates + normalises pixel input."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean {mean} and std {std} must have equal length and std > 0")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        # Validation costs one device sync per call; the training loop may turn it off.
        self.check_inputs = True

    def normalise(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        if self.check_inputs:
            check_images(x, channels=self.mean.shape[1], size=size)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class Classifier(_Normalised):
    """A plain classifier: logits = backbone((x - mean) / std), x in [0, 1], [B, C, H, W]."""

    stochastic = False

    def __init__(self, backbone: Backbone, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__(mean, std)
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(self.normalise(x))


@dataclass
class ViewOutput:
    """Per-view outputs: logits [L, B, classes], features phi [L, B, D], z [L] or [L, B]."""

    logits: Tensor
    features: Tensor
    z: Tensor


class CiiVClassifier(_Normalised):
    """CiiV: normalisation -> retinotopic sampler -> backbone on all views at once.

    The L views are folded into the batch and go through the backbone as one batch of L * B images
    (the same function as L separate passes at inference; one large batch keeps a GPU busy, see
    benchmarks/throughput.py). BatchNorm layers therefore compute their training statistics over
    all L * B views together.

    ``forward(x)`` returns the prediction logits (1/L) * sum_l logits_l / z_l over ``num_views``
    views (default: all of the sampler's; :class:`~ciiv.models.CentreView` is the centre view
    alone). It is random: each call draws fresh noise and masks, unless inside
    ``fixed_randomness``.
    """

    stochastic = True

    def __init__(
        self,
        backbone: Backbone,
        sampler: RetinotopicSampler,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__(mean, std)
        self.backbone = backbone
        self.sampler = sampler
        self.num_views = sampler.num_views
        self._fixed_seed: int | None = None

    def _generator(self, device: torch.device, generator: torch.Generator | None):
        if generator is not None or self._fixed_seed is None:
            return generator
        return torch.Generator(device=device).manual_seed(self._fixed_seed)

    def forward_views(
        self, x: Tensor, num_views: int | None = None, generator: torch.Generator | None = None
    ) -> ViewOutput:
        """All per-view outputs for pixels x in [0, 1], [B, C, H, W] (see ViewOutput)."""
        v = self.normalise(x, (self.sampler.height, self.sampler.width))
        sampled = self.sampler(v, self._generator(x.device, generator), num_views or self.num_views)
        num, batch = sampled.views.shape[:2]
        features = self.backbone.forward_features(sampled.views.flatten(0, 1))
        logits = self.backbone.forward_head(features)
        return ViewOutput(logits.view(num, batch, -1), features.view(num, batch, -1), sampled.z)

    @staticmethod
    def combine(logits: Tensor, z: Tensor) -> Tensor:
        """Prediction (1/L) * sum_l logits_l / z_l from logits [L, B, K] and z [L] or [L, B]."""
        z = z[:, None, None] if z.dim() == 1 else z[..., None]
        return (logits / z.to(logits.dtype)).mean(0)

    def forward(self, x: Tensor) -> Tensor:
        out = self.forward_views(x)
        return self.combine(out.logits, out.z)

    def forward_expected(self, x: Tensor) -> Tensor:
        """Deterministic mean-field stand-in for the sampler, for diagnostics: every spike is
        replaced by its firing probability and every mask by its keep-probability (the random
        layer's expectations), one smooth view per centre. Not the deployed function: it asks
        whether the backbone alone is easy to attack."""
        v = self.normalise(x, (self.sampler.height, self.sampler.width))
        keep = self.sampler.keep_probability()[: self.num_views].to(v.dtype)  # [L, H, W]
        views = self.sampler.firing_probability(v)[None] * keep[:, None, None]
        logits = self.backbone(views.flatten(0, 1)).view(keep.shape[0], x.shape[0], -1)
        return self.combine(logits, keep.mean(dim=(1, 2)))

    @property
    def independent_rows(self) -> bool:
        """Whether copies of one image stacked into one call (inside :meth:`independent_draws`)
        are independent draws: attacks and the evaluation then stack their draws (see
        :mod:`ciiv.attacks.draws`). Not inside ``fixed_randomness``."""
        return self._fixed_seed is None

    def independent_draws(self) -> contextlib.AbstractContextManager[CiiVClassifier]:
        """Inside the block every row of a batch gets its own masks, for stacked EOT draws.

        Shared masks (the official behaviour) would make E copies of an image in one call one
        draw. For a per-example attack this is the same random function: an example's loss
        depends only on its own masks, distributed alike under both settings.
        """
        return _setting(self.sampler, "per_example_masks", True, self)

    def fixed_randomness(self, seed: int) -> contextlib.AbstractContextManager[CiiVClassifier]:
        """Inside the block every forward pass reuses the same seeded draws: a deterministic model.

        For debugging, tests and the audit's fixed-randomness check; the deployed model is random.
        """
        return _setting(self, "_fixed_seed", int(seed), self)

    def bpda(self, surrogate: Surrogate = "identity") -> contextlib.AbstractContextManager:
        """Inside the block the spike step back-propagates through a BPDA substitute.

        The forward value is unchanged; only gradients differ ("identity" straight-through or
        "smooth" sigmoid). The masks carry no gradient in any case: they do not depend on x.
        """
        check_choice("surrogate", surrogate, SURROGATES)
        return _setting(self.sampler, "surrogate", surrogate, self)


@contextlib.contextmanager
def _setting(obj: object, name: str, value: object, result: object) -> Iterator[object]:
    """Set ``obj.name = value`` inside the block (which gets ``result``), then restore it."""
    previous = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield result
    finally:
        setattr(obj, name, previous)
