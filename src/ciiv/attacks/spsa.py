"""SPSA: a gradient-free Linf attack (Uesato et al. 2018, "Adversarial risk and the dangers of
evaluating against weak attacks"), vectorised over examples and samples.

Each step estimates, per example, the gradient of the margin J(x) = max_{j != y} Z_j - Z_y from
finite differences along random Rademacher directions v in {-1, +1}^d:

    g = (1 / S) * sum_s (J(x + delta v_s) - J(x - delta v_s)) / (2 delta) * v_s

then takes an Adam step (learning rate ``lr``) that increases J and projects back into the Linf ball
and [0, 1]. Each example's estimate uses only its own queries (never a loss averaged over the
batch). The probe points x +- delta v are clamped to [0, 1] because the models only accept valid
images; near the box edges the difference is then taken over the clamped points. The S samples of
all B examples go through the model as 2 * S * B rows in calls of at most ``max_batch`` images.

The attack starts from a uniform point in the ball (as in the reference implementation) and keeps,
per example, the best point it visited: a misclassified one first, then the highest margin. That
costs one extra query of the current point per step (B images) on top of the 2 * S * B probes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .base import Attack, BestIterate, positive_int
from .objectives import margin
from .registry import register_attack

__all__ = ["SPSA"]


@register_attack("spsa")
class SPSA(Attack):
    """SPSA-Linf (module doc). Defaults are SPEC section 6's settings.

    Args (besides :class:`~ciiv.attacks.base.Attack`'s; the seed drives the start point and
    directions, ``max_batch`` None sends all 2 * S * B probes in one call):
        norm: "Linf" only (accepted so that suites can pass a norm to every attack).
        eps: Linf budget in pixel units (float or "16/255").
        delta: finite-difference step in pixel units.
        nb_sample: S, Rademacher directions per step and example.
        steps: Adam steps.
        lr: Adam learning rate on the perturbation.
        random_start: start from a uniform draw in the ball (else from x).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: Literal["Linf"] = "Linf",
        eps: float | str = "16/255",
        delta: float = 0.1,
        nb_sample: int = 16,
        steps: int = 20,
        lr: float = 0.1,
        random_start: bool = True,
        max_batch: int | None = None,
        seed: int | None = None,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, seed=seed, max_batch=max_batch, eval_mode=eval_mode)
        self._set_threat(norm, eps, only="Linf")
        if delta <= 0 or lr <= 0:
            raise ValueError(f"delta and lr must be positive, got delta={delta}, lr={lr}")
        self.delta, self.lr = float(delta), float(lr)
        self.nb_sample = positive_int("nb_sample", nb_sample)
        self.steps = positive_int("steps", steps)
        self.random_start = bool(random_start)
        self._record(
            delta=self.delta, nb_sample=self.nb_sample, steps=self.steps, lr=self.lr,
            random_start=self.random_start, max_batch=self.max_batch,
        )  # fmt: skip

    def estimate_gradient(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None):
        """SPSA estimate [B, C, H, W] of the gradient of the margin J at x (module doc)."""
        batch, samples = x.shape[0], self.nb_sample
        generator = self.generator(x.device) if generator is None else generator
        bits = torch.randint(0, 2, (samples, *x.shape), generator=generator, device=x.device)
        v = (2 * bits - 1).to(x.dtype)  # [S, B, C, H, W]
        probes = torch.cat([x + self.delta * v, x - self.delta * v]).clamp(0, 1).flatten(0, 1)
        logits = self.logits_no_grad(probes)
        values = margin(logits, y.repeat(2 * samples)).view(2, samples, batch)
        slope = (values[0] - values[1]) / (2 * self.delta)  # [S, B]
        return (slope.view(samples, batch, *([1] * (x.dim() - 1))).to(x.dtype) * v).mean(0)

    def _attack(self, x: Tensor, y: Tensor) -> Tensor:
        generator = self.generator(x.device)
        x_adv = self.threat.random_init(x, generator) if self.random_start else x.clone()
        perturbation = (x_adv - x).requires_grad_(True)
        optimizer = torch.optim.Adam([perturbation], lr=self.lr)
        best = BestIterate(x_adv)  # a fooled point beats any unfooled one, then the margin
        for step in range(self.steps + 1):
            with torch.no_grad():
                # Projected, not x + perturbation: the sum can round a hair outside [0, 1].
                current = self.threat.project(x + perturbation.detach(), x)
                value = margin(self.logits(current), y)
                best.update(current, value > 0, value)
            if step == self.steps:
                break
            # Adam minimises, so it gets the negated ascent direction.
            perturbation.grad = -self.estimate_gradient(current, y, generator)
            optimizer.step()
            with torch.no_grad():
                perturbation.copy_(self.threat.project(x + perturbation, x) - x)
            self._step_done(step + 1, self.steps)
        return best.x
