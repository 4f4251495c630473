"""Per-example attack objectives and target selection. Pure functions of tensors.

Every function returns one value per example (``reduction="none"`` semantics): attacks keep the
best iterate per example, so a batch-mean loss would be the wrong quantity.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ciiv._checks import check_choice

__all__ = ["TARGET_MODES", "choose_targets", "margin"]

TargetMode = Literal["random", "most_likely", "least_likely"]
TARGET_MODES: tuple[str, ...] = ("random", "most_likely", "least_likely")


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin max_{j != y} logit_j - logit_y, shape [B]; > 0 iff misclassified."""
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.amax(1) - true


def choose_targets(
    logits: Tensor, y: Tensor, mode: TargetMode, generator: torch.Generator | None = None
) -> Tensor:
    """Target classes [B] != the true labels y [B] from the clean logits [B, K] (for a random
    model, their mean over draws): uniform over the K - 1 wrong classes (mode "random", drawn from
    ``generator``), the highest wrong logit ("most_likely") or the lowest logit ("least_likely")."""
    check_choice("target mode", mode, TARGET_MODES)
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError("a targeted attack needs at least 2 classes")
    if mode == "random":
        shift = torch.randint(1, num_classes, y.shape, generator=generator, device=y.device)
        return (y + shift) % num_classes
    if mode == "most_likely":
        return logits.scatter(1, y[:, None], float("-inf")).argmax(1)
    return logits.scatter(1, y[:, None], float("inf")).argmin(1)  # least_likely
