"""Measurements on the model itself, without an attack: input gradients and their EOT stability.

Gradients are PGD's own (:meth:`ciiv.attacks.PGD.loss_gradient`): the same objective, EOT draws,
BPDA backward and call layout as the audited attacks, per example (losses are summed over the
batch before ``autograd.grad``, which gives each example the gradient of its own loss as long as
examples do not interact, in eval mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ciiv.attacks import PGD

__all__ = ["Stability", "cosine", "eot_stability"]


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Per-example cosine similarity of a and b [N, ...] -> [N]; 0 where either is zero."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    denom = a.norm(dim=1) * b.norm(dim=1)
    dot = (a * b).sum(1)
    return torch.where(denom > 0, dot / denom.clamp_min(1e-300), torch.zeros_like(dot)).float()


@dataclass
class Stability:
    """How stable the direction of an EOT gradient is as the number of draws E grows.

    Attributes:
        eot: the E values measured.
        cosine: per E, the median over examples of the cosine between two independent EOT-E
            estimates (disjoint draws).
        mean_gradient: the EOT estimate over all 2 * max(E) draws, [N, C, H, W].
    """

    eot: list[int]
    cosine: list[float]
    mean_gradient: Tensor

    def needed(self, threshold: float) -> int | None:
        """Smallest measured E whose cosine reaches ``threshold``; None when none does."""
        return next((e for e, c in zip(self.eot, self.cosine, strict=True) if c >= threshold), None)

    def extrapolated(self, threshold: float) -> float | None:
        """E at which the cosine would reach ``threshold``, from the largest E measured.

        Two independent EOT-E means of draws with mean m and per-draw noise variance s^2 have a
        cosine of about E * r / (1 + E * r), r = |m|^2 / s^2; solving for the threshold t gives
        E = t / ((1 - t) * r). None when the measured cosine is <= 0 (no signal at all).
        """
        e, c = self.eot[-1], self.cosine[-1]
        if c <= 0:
            return None
        if c >= 1:
            return float(e)
        ratio = c / (e * (1 - c))
        return threshold / ((1 - threshold) * ratio)

    def to_numbers(self, threshold: float) -> dict:
        extrapolated = self.extrapolated(threshold)
        return {
            "cosine_by_eot": {
                str(e): round(c, 4) for e, c in zip(self.eot, self.cosine, strict=True)
            },
            "eot_needed": self.needed(threshold),
            "eot_extrapolated": None if extrapolated is None else math.ceil(extrapolated),
        }


def eot_stability(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    grid: tuple[int, ...],
    surrogate: str | None = None,
    batch_size: int = 256,
) -> Stability:
    """Measure the EOT gradient's stability at E in ``grid`` (see :class:`Stability`).

    Draws 2 * max(grid) CE gradients per example (laid out in calls as PGD's EOT draws) and deals
    them alternately to two streams, so at every E the two running means are independent EOT-E
    estimates; memory stays at three gradients per example whatever max(grid) is.
    """
    e_max = max(grid)
    sums = torch.zeros((2, *x.shape), dtype=torch.float64, device=x.device)
    counts = [0, 0]
    cosines: dict[int, float] = {}
    per_call = max(1, batch_size // x.shape[0])  # draws per call of ~batch_size images
    for start in range(0, 2 * e_max, per_call):
        k = min(per_call, 2 * e_max - start)
        pgd = PGD(model, eot=k, max_batch=batch_size, bpda=surrogate, seed=0)  # CE loss
        for g in pgd.loss_gradient(x, y, per_draw=True).grad:
            stream = counts.index(min(counts))
            sums[stream] += g.double()
            counts[stream] += 1
            if counts[0] == counts[1] and counts[0] in grid:
                cosines[counts[0]] = cosine(sums[0], sums[1]).median().item()
    eot = sorted(cosines)
    return Stability(
        eot=eot,
        cosine=[cosines[e] for e in eot],
        mean_gradient=(sums.sum(0) / sum(counts)).to(x.dtype),
    )
