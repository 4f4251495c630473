"""Per-example attack objectives and target selection. Pure functions of tensors.

Every function returns one value per example (``reduction="none"`` semantics): attacks keep the
best iterate per example, so a batch-mean loss would be the wrong quantity.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TARGET_MODES", "choose_targets", "margin", "per_example_consistency"]

TargetMode = Literal["random", "most_likely", "least_likely"]
TARGET_MODES: tuple[str, ...] = ("random", "most_likely", "least_likely")


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin max_{j != y} logit_j - logit_y, shape [B]; > 0 iff misclassified."""
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.amax(1) - true


def per_example_consistency(features: Tensor, z: Tensor, kind: str = "smooth_l1") -> Tensor:
    """CiiV's view-consistency loss per example, shape [B].

    The same formula as ``ciiv.loss.consistency_loss`` (its batch mean equals that scalar): for each
    view l, compare phi_l * zbar_l with phibar_l * z_l (leave-one-out means over the other views),
    SmoothL1 (beta 1) or squared difference summed over the D features, averaged over the L views.

    Args:
        features: phi, [L, B, D] with L >= 2.
        z: densities, [L] (masks shared by the batch) or [L, B] (per-example masks).
        kind: "smooth_l1" (the paper's) or "l2".
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [L, B, D], got shape {tuple(features.shape)}")
    num_views, batch, _ = features.shape
    if num_views < 2:
        raise ValueError(
            "the consistency term needs at least 2 views; the model runs with num_views=1 "
            "(paper protocol): use loss='ce' there, or set model.num_views >= 2"
        )
    z = (z[:, None] if z.dim() == 1 else z).expand(num_views, batch)[..., None].to(features.dtype)
    z_others = (z.sum(0, keepdim=True) - z) / (num_views - 1)
    phi_others = (features.sum(0, keepdim=True) - features) / (num_views - 1)
    own, others = features * z_others, phi_others * z
    if kind == "smooth_l1":
        per_dim = F.smooth_l1_loss(own, others, reduction="none", beta=1.0)
    elif kind == "l2":
        per_dim = (own - others).square()
    else:
        raise ValueError(f"unknown consistency kind {kind!r}; valid: smooth_l1, l2")
    return per_dim.sum(-1).mean(0)


def choose_targets(
    logits: Tensor, y: Tensor, mode: TargetMode, generator: torch.Generator | None = None
) -> Tensor:
    """Target classes [B] != y for a targeted attack.

    Args:
        logits: clean logits [B, K] (for a random model, their mean over several draws).
        y: true labels [B].
        mode: "random" (uniform over the K - 1 wrong classes, drawn from ``generator``),
            "most_likely" (the highest wrong logit) or "least_likely" (the lowest logit).
    """
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError("a targeted attack needs at least 2 classes")
    if mode == "random":
        shift = torch.randint(1, num_classes, y.shape, generator=generator, device=y.device)
        return (y + shift) % num_classes
    if mode == "most_likely":
        return logits.scatter(1, y[:, None], float("-inf")).argmax(1)
    if mode == "least_likely":
        return logits.scatter(1, y[:, None], float("inf")).argmin(1)
    raise ValueError(f"unknown target mode {mode!r}; valid: {', '.join(TARGET_MODES)}")
