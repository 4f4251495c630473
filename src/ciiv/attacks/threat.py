"""Threat models: the set of allowed perturbations, separate from any optimisation loop.

A threat model is a norm ball of radius eps around the clean image x, intersected with the pixel box
[0, 1]. It knows three things: how to project a point back into that set, how to draw a random
starting point inside it, and what a steepest-ascent step of a given length looks like in its norm.
FGSM, PGD, EOT-PGD, BPDA-PGD, SPSA, random search and adversarial training all reuse these pieces.

Pixels are in [0, 1]; eps and step sizes are in the same units (8/255 means 8 grey levels).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from fractions import Fraction
from typing import ClassVar, Literal

import torch
from torch import Tensor

__all__ = [
    "L2Threat",
    "LinfThreat",
    "Norm",
    "ThreatModel",
    "check_eps",
    "default_budget",
    "default_eps",
    "get_threat_model",
    "parse_eps",
]

Norm = Literal["Linf", "L2"]

# Tiny constant that keeps divisions by a norm finite when a gradient or perturbation is exactly 0.
_TINY = 1e-12


def parse_eps(eps: float | int | str) -> float:
    """A perturbation budget in pixel units from a number or a string like "8/255" or "0.03";
    a ValueError for anything negative, non-finite or unparseable."""
    if isinstance(eps, str):
        try:
            value = float(Fraction(eps.strip()))
        except (ValueError, ZeroDivisionError) as err:
            raise ValueError(
                f"cannot parse eps {eps!r}; write a number or a fraction like '8/255'"
            ) from err
    elif isinstance(eps, (int, float)) and not isinstance(eps, bool):
        value = float(eps)
    else:
        raise ValueError(f"eps must be a number or a string like '8/255', got {eps!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
    return value


# The default budgets per norm and dataset (SPEC section 6, on the 0-255 scale): 8/255 Linf and
# 128/255 L2; MNIST gets the community's larger ones (0.3 Linf, 2.0 L2).
_DEFAULT_BUDGETS: dict[str, dict[str, float | str]] = {
    "Linf": {"default": "8/255", "mnist": 0.3},
    "L2": {"default": "128/255", "mnist": 2.0},
}


def default_budget(norm: str) -> dict[str, float | str]:
    """``{dataset: eps}`` of ``norm``'s default budgets, with a ``"default"`` key for every other
    dataset (values as written: floats or fractions like "8/255"); a fresh copy."""
    return dict(_DEFAULT_BUDGETS[canonical_norm(norm)])


def default_eps(norm: str, dataset: str | None = None) -> float:
    """The default budget of ``norm`` for ``dataset`` in pixel units (None or an unlisted
    dataset: 8/255 for Linf, 128/255 for L2)."""
    budget = default_budget(norm)
    return parse_eps(budget.get(dataset or "default", budget["default"]))


def check_eps(norm: str, eps: float, image_shape: tuple[int, ...] | None = None) -> None:
    """A ValueError (naming eps, norm and the valid range) for a budget no perturbation can use:
    Linf eps must be in [0, 1] (pixel units); an L2 eps at most the image's diameter
    sqrt(C * H * W) (the largest L2 distance inside [0, 1]), checked when ``image_shape`` (C, H, W)
    is given."""
    norm = canonical_norm(norm)
    high, what = math.inf, ">= 0"
    if norm == "Linf":
        high, what = 1.0, "[0, 1] (pixel units, e.g. 8/255)"
    elif image_shape is not None:
        high = math.sqrt(math.prod(image_shape))
        dims = "*".join(map(str, image_shape))
        what = f"[0, {high:.4g}] (the image diameter sqrt({dims}))"
    if not 0 <= eps <= high:
        raise ValueError(f"{norm} eps {eps:g} is out of range; valid: {what}")


def _flat_norm(t: Tensor) -> Tensor:
    """Per-example L2 norm of t [B, ...], shaped [B, 1, 1, ...] to broadcast against t."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


class ThreatModel(ABC):
    """An eps-ball around x (in the norm ``norm``) intersected with the pixel box [0, 1]. All
    tensors are image batches [B, C, H, W]; x is the clean batch with values in [0, 1]."""

    norm: ClassVar[Norm]

    def __init__(self, eps: float | str) -> None:
        self.eps = parse_eps(eps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:.6g})"

    @abstractmethod
    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-example distance ||x_adv - x|| in this norm, shape [B]."""

    @abstractmethod
    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """A point inside the ball around x and inside [0, 1]; the identity for points inside.
        The norm clip comes first and the box clamp second: clamping towards [0, 1] never moves a
        coordinate away from x (which is in [0, 1]), so the result stays inside the ball."""

    @abstractmethod
    def random_init(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A random point drawn uniformly from the ball around x, then clamped to [0, 1]."""

    @abstractmethod
    def step(self, x_adv: Tensor, grad: Tensor, step_size: float) -> Tensor:
        """x_adv moved by ``step_size`` along the ascent direction of ``grad`` (not projected)."""


class LinfThreat(ThreatModel):
    """||delta||_inf <= eps: every pixel-channel moves by at most eps."""

    norm = "Linf"

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        return (x_adv - x).flatten(1).abs().amax(dim=1)

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        return (x + (x_adv - x).clamp(-self.eps, self.eps)).clamp(0, 1)

    def random_init(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.project(x + self.eps * (2 * u - 1), x)

    def step(self, x_adv: Tensor, grad: Tensor, step_size: float) -> Tensor:
        # sign() is 0 where the gradient is exactly 0: no information, no move.
        return x_adv + step_size * grad.sign()


class L2Threat(ThreatModel):
    """||delta||_2 <= eps, the norm taken over all pixels and channels of one example."""

    norm = "L2"

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        return (x_adv - x).flatten(1).norm(dim=1)

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        delta = x_adv - x
        scale = (self.eps / (_flat_norm(delta) + _TINY)).clamp(max=1.0)
        return (x + delta * scale).clamp(0, 1)

    def random_init(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        # Uniform in the ball: an isotropic direction and a radius eps * U^(1/d).
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = direction / (_flat_norm(direction) + _TINY)
        u = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
        radius = self.eps * u.pow(1.0 / x[0].numel()).view(-1, *([1] * (x.dim() - 1)))
        return self.project(x + radius * direction, x)

    def step(self, x_adv: Tensor, grad: Tensor, step_size: float) -> Tensor:
        return x_adv + step_size * grad / (_flat_norm(grad) + _TINY)


_THREATS: dict[str, type[ThreatModel]] = {"Linf": LinfThreat, "L2": L2Threat}


def canonical_norm(norm: str) -> Norm:
    """ "Linf" or "L2" from any capitalisation ("linf", "LINF", "l2"); ValueError otherwise."""
    names = {name.lower(): name for name in _THREATS}
    key = str(norm).lower()
    if key not in names:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(_THREATS)}")
    return names[key]  # type: ignore[return-value]


def get_threat_model(norm: str, eps: float | str) -> ThreatModel:
    """The threat model for ``norm`` ("Linf" | "L2") with radius ``eps`` (float or "8/255")."""
    return _THREATS[canonical_norm(norm)](eps)
