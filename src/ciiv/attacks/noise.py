"""Random-noise baselines: one noise draw (Gaussian or uniform) and a random search over many draws.

They answer the sanity check "white-box attacks must beat random noise" (SPEC section 6): a defence
whose accuracy falls more under noise than under gradient attacks is being evaluated wrongly.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attack, BestIterate, positive_int
from .registry import register_attack

__all__ = ["GaussianNoise", "RandomSearch", "UniformNoise"]


class _AdditiveNoise(Attack):
    """x + noise with standard deviation sigma per pixel-channel, projected into the eps-ball and
    [0, 1]. The model is never queried (``forward_passes`` stays 0; ``max_batch`` is ignored)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "Linf",
        eps: float | str = "16/255",
        sigma: float = 0.1,
        seed: int | None = None,
        max_batch: int | None = None,
    ) -> None:
        super().__init__(model, seed=seed, max_batch=max_batch, eval_mode=None)
        self._set_threat(norm, eps)
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)
        self._record(sigma=self.sigma)

    @abstractmethod
    def _noise(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Noise of x's shape with per-element standard deviation sigma."""

    def _attack(self, x: Tensor, y: Tensor) -> Tensor:
        return self.threat.project(x + self._noise(x, self.generator(x.device)), x)


@register_attack("gaussian_noise")
class GaussianNoise(_AdditiveNoise):
    """x + N(0, sigma^2) per pixel-channel, clipped to the ball (SPEC: sigma 0.1, Linf 16/255)."""

    def _noise(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.sigma * torch.randn(
            x.shape, generator=generator, device=x.device, dtype=x.dtype
        )


@register_attack("uniform_noise")
class UniformNoise(_AdditiveNoise):
    """x + U(-sqrt(3) sigma, sqrt(3) sigma) per pixel-channel (standard deviation sigma, the same as
    the Gaussian baseline), clipped to the ball (SPEC: sigma 0.1, Linf 16/255)."""

    def _noise(self, x: Tensor, generator: torch.Generator) -> Tensor:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return math.sqrt(3) * self.sigma * (2 * u - 1)


@register_attack("random_search")
class RandomSearch(Attack):
    """Random search: up to ``draws`` uniform points in the eps-ball per example; the kept one is
    the best by (label flipped, cross-entropy), lexicographically. ``max_batch // B`` draws of the
    whole batch per model call (at least one); the search stops once every example has a flipping
    draw, so ``forward_passes`` <= draws * B.

    Args (besides :class:`~ciiv.attacks.base.Attack`'s; the seed drives the draws):
        norm: "Linf" or "L2"; eps: budget in pixel units (float or "16/255").
        draws: N, random points per example.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "Linf",
        eps: float | str = "16/255",
        draws: int = 100,
        max_batch: int | None = None,
        seed: int | None = None,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, seed=seed, max_batch=max_batch, eval_mode=eval_mode)
        self._set_threat(norm, eps)
        self.draws = positive_int("draws", draws)
        self._record(draws=self.draws, max_batch=self.max_batch)

    def _attack(self, x: Tensor, y: Tensor) -> Tensor:
        batch, generator = x.shape[0], self.generator(x.device)
        per_call = max((self.max_batch or self.draws * batch) // batch, 1)
        best = BestIterate(x)  # scored by (label flipped, cross-entropy)
        done = 0
        while done < self.draws and not bool((best.primary > 0).all()):
            n = min(per_call, self.draws - done)
            points = self.threat.random_init(x.repeat(n, 1, 1, 1), generator)  # row d * B + i
            logits = self.logits_no_grad(points)
            labels = y.repeat(n)
            flip = (logits.argmax(1) != labels).view(n, batch)
            loss = F.cross_entropy(logits, labels, reduction="none").view(n, batch)
            # The best draw of this chunk per example: flipping draws first, then the highest loss.
            score = torch.where(flip, loss, loss.new_tensor(float("-inf")))
            pick = torch.where(flip.any(0), score.argmax(0), loss.argmax(0))
            cols = torch.arange(batch, device=x.device)
            best.update(points.view(n, *x.shape)[pick, cols], flip[pick, cols], loss[pick, cols])
            done += n
        return best.x
