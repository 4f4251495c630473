"""Carlini & Wagner's L2 attack (Carlini and Wagner 2017, "Towards evaluating the robustness of
neural networks"), vectorised over the batch.

For each example, minimise ||x' - x||_2^2 + c * max(Z_y(x') - max_{j != y} Z_j(x'), -kappa) over
x' = (tanh(w) + 1) / 2 (the change of variables keeps x' in [0, 1]) with Adam on w, where Z are the
logits. An outer binary search adapts c per example: after a success c moves down towards the
largest failing value, after a failure it moves up (x10 until a success brackets it). Over all
iterates, the smallest successful perturbation of each example is kept.

As an evaluation attack with a budget (``eps`` given): the attack reports success only if
||delta||_2 <= eps, so the returned point is the smallest successful perturbation projected onto the
eps-ball (unchanged when it is already inside; a projected point may or may not still fool the
model, the evaluation decides). Examples that were never fooled are returned unchanged (x), as in
the original attack. With ``eps=None`` the attack is the unbounded minimum-norm attack.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ciiv._checks import check_choice
from ciiv.sampling import BPDA_SURROGATES

from .base import Attack, BestIterate, bpda_context, positive_int
from .objectives import margin
from .registry import register_attack
from .threat import L2Threat, canonical_norm

__all__ = ["CarliniWagnerL2"]

# tanh-space starts at atanh of x scaled slightly inwards, so x = 0 or 1 maps to a finite w.
_TANH_MARGIN = 1 - 1e-6


@register_attack("cw")
class CarliniWagnerL2(Attack):
    """C&W-L2 with binary search over c (module doc).

    Args (besides :class:`~ciiv.attacks.base.Attack`'s):
        norm: "L2" only (accepted so that suites can pass a norm to every attack).
        eps: L2 budget in pixel units (float or "128/255") or None for the unbounded attack.
        confidence: kappa, the logit margin a success must reach (0 = just misclassified).
        initial_const: c at the first binary-search step.
        binary_search_steps: outer steps adapting c per example.
        steps: Adam iterations per binary-search step.
        lr: Adam learning rate in tanh-space.
        abort_early: stop a binary-search step once the total loss has stopped falling (checked
            every steps // 10 iterations, as in the original).
        bpda: None, "identity" or "smooth" (CiiV: BPDA backward of the spike step).
        seed: recorded for the interface; the attack itself draws nothing at random.
        max_batch: accepted for the interface; the attack forwards the batch itself.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: Literal["L2"] = "L2",
        eps: float | str | None = None,
        confidence: float = 0.0,
        initial_const: float = 1e-3,
        binary_search_steps: int = 9,
        steps: int = 100,
        lr: float = 0.01,
        abort_early: bool = True,
        bpda: Literal["identity", "smooth"] | None = None,
        seed: int | None = None,
        max_batch: int | None = None,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, seed=seed, max_batch=max_batch, eval_mode=eval_mode)
        if canonical_norm(norm) != "L2":
            raise ValueError(f"C&W here is the L2 attack; got norm={norm!r}")
        self.threat = None if eps is None else L2Threat(eps)
        if confidence < 0 or initial_const <= 0 or lr <= 0:
            raise ValueError("confidence must be >= 0, initial_const and lr > 0")
        check_choice("bpda", bpda, BPDA_SURROGATES, optional=True)
        self.confidence = float(confidence)
        self.initial_const = float(initial_const)
        self.binary_search_steps = positive_int("binary_search_steps", binary_search_steps)
        self.steps = positive_int("steps", steps)
        self.lr = float(lr)
        self.abort_early = bool(abort_early)
        self.bpda = bpda
        self._record(
            norm="L2", eps=None if self.threat is None else self.threat.eps,
            confidence=self.confidence, initial_const=self.initial_const,
            binary_search_steps=self.binary_search_steps, steps=self.steps, lr=self.lr,
            abort_early=self.abort_early, bpda=bpda,
        )  # fmt: skip

    def _attack(self, x: Tensor, y: Tensor) -> Tensor:
        batch = x.shape[0]
        w_clean = torch.atanh((2 * x - 1) * _TANH_MARGIN)
        const = torch.full((batch,), self.initial_const, device=x.device, dtype=x.dtype)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, float("inf"))
        # (success, -L2) from x itself at (0, 0): only successes replace it, then smaller ones.
        best = BestIterate(x, initial=(0.0, 0.0))
        check_every = max(self.steps // 10, 1)
        total_steps = self.binary_search_steps * self.steps  # an upper bound (early aborts)
        with bpda_context(self.model, self.bpda):
            for search in range(self.binary_search_steps):
                w = w_clean.clone().requires_grad_(True)
                optimizer = torch.optim.Adam([w], lr=self.lr)
                succeeded = torch.zeros(batch, dtype=torch.bool, device=x.device)
                previous = float("inf")
                for step in range(self.steps):
                    with torch.enable_grad():
                        x_adv = (torch.tanh(w) + 1) / 2
                        logits = self.logits(x_adv)
                        l2_sq = (x_adv - x).flatten(1).square().sum(1)
                        gap = margin(logits, y)  # max_{j != y} Z_j - Z_y
                        # max(Z_y - max_other, -kappa), shifted by kappa so that it is >= 0.
                        hinge = (self.confidence - gap).clamp_min(0)
                        loss = l2_sq + const * hinge
                        # Gradient w.r.t. w only: never accumulate into the model's parameters.
                        (w.grad,) = torch.autograd.grad(loss.sum(), w)
                    with torch.no_grad():
                        success = (logits.argmax(1) != y) & (gap >= self.confidence)
                        best.update(x_adv, success, -l2_sq.sqrt())
                        succeeded |= success
                    optimizer.step()
                    self._step_done(search * self.steps + step + 1, total_steps)
                    if self.abort_early and step % check_every == 0:
                        total = float(loss.detach().sum())
                        if total > previous * 0.9999:
                            break
                        previous = total
                # Binary search on c, per example.
                upper = torch.where(succeeded, torch.minimum(upper, const), upper)
                lower = torch.where(succeeded, lower, torch.maximum(lower, const))
                bracketed = torch.isfinite(upper)
                const = torch.where(bracketed, (lower + upper) / 2, const * 10)
        # tanh keeps every iterate in [0, 1]; only the budget needs a projection.
        return best.x if self.threat is None else self.threat.project(best.x, x)
