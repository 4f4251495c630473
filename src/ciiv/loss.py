"""CiiV's losses (SPEC section 4): per-view cross-entropy and the view-consistency regulariser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

__all__ = ["RegWeightSchedule", "consistency_loss", "view_cross_entropy"]

ConsistencyKind = Literal["smooth_l1", "l2"]


def consistency_loss(
    features: Tensor,
    z: Tensor,
    kind: ConsistencyKind = "smooth_l1",
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """View-consistency loss L_reg: features should scale linearly with the sampling density.

    For each view l, with zbar_l and phibar_l the means of z and phi over the other L - 1 views,
    it compares phi_l * zbar_l with phibar_l * z_l (phi_l / z_l against the others' phi / z):
    SmoothL1 (beta 1; ``kind="smooth_l1"``, the paper's) or squared difference (``"l2"``), summed
    over the D feature dimensions, averaged over the batch, then over the views. features: phi
    [L, B, D]; z: densities [L] (one mask per view) or [L, B] (per-example masks);
    ``reduction="none"``: one value per example [B] (mean over the views only), for attacks.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [L, B, D], got shape {tuple(features.shape)}")
    num_views, batch, _ = features.shape
    if num_views < 2:
        raise ValueError(
            "the consistency loss needs at least 2 views (a model with num_views=1, e.g. the "
            "paper protocol's centre view, has no view agreement to measure)"
        )
    if z.shape not in ((num_views,), (num_views, batch)):
        raise ValueError(
            f"z must have shape [L]=[{num_views}] or [L, B]=[{num_views}, {batch}], "
            f"got {tuple(z.shape)}"
        )
    z = z.reshape(num_views, -1, 1).expand(num_views, batch, 1).to(features.dtype)
    # Leave-one-out means without a loop: (sum - own) / (L - 1).
    z_others = (z.sum(0, keepdim=True) - z) / (num_views - 1)
    phi_others = (features.sum(0, keepdim=True) - features) / (num_views - 1)
    own, others = features * z_others, phi_others * z
    if kind == "smooth_l1":
        per_dim = F.smooth_l1_loss(own, others, reduction="none", beta=1.0)
    elif kind == "l2":
        per_dim = (own - others).square()
    else:
        raise ValueError(f"unknown consistency kind {kind!r}; valid: smooth_l1, l2")
    return _reduce(per_dim.sum(-1).mean(0), reduction)


def view_cross_entropy(logits: Tensor, y: Tensor, reduction: Literal["mean", "none"] = "mean"):
    """L_CE: cross-entropy of each view's raw logits (not divided by z), averaged over views.

    logits: [L, B, classes]; y: integer labels [B]; reduction "mean" (scalar) or "none" ([B]).
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be [L, B, classes], got shape {tuple(logits.shape)}")
    num_views, batch, classes = logits.shape
    per = F.cross_entropy(logits.reshape(-1, classes), y.repeat(num_views), reduction="none")
    return _reduce(per.view(num_views, batch).mean(0), reduction)


def _reduce(per_example: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_example
    if reduction == "mean":
        return per_example.mean()
    raise ValueError(f"unknown reduction {reduction!r}; valid: mean, none")


@dataclass(frozen=True)
class RegWeightSchedule:
    """w_reg of the 0-based epoch: ``initial * factor**(milestones passed)``; the paper's is 0.1,
    x10 after epochs 25, 50 and 75 (epochs 0-24 use 0.1, 25-49 use 1, 50-74 10, 75+ 100)."""

    initial: float = 0.1
    factor: float = 10.0
    milestones: tuple[int, ...] = (25, 50, 75)

    def __post_init__(self) -> None:
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")

    def __call__(self, epoch: int) -> float:
        passed = sum(epoch >= m for m in self.milestones)
        return self.initial * self.factor**passed
