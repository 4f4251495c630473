"""Randomized smoothing (SPEC section 5, "RS"): a base classifier under Gaussian input noise.

The base model is trained on noisy inputs clip(x + sigma * n, 0, 1), n ~ N(0, I). The deployed
model predicts by a majority vote over fresh noisy draws, so, like CiiV, it is random at inference.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn

from ciiv._checks import positive_int

from .views import declared_rows, independent_draws

__all__ = ["SmoothedClassifier"]


class SmoothedClassifier(nn.Module):
    """``base`` (pixels [B, C, H, W] in [0, 1] -> logits [B, classes], usually a
    :class:`~ciiv.models.Classifier`) smoothed by Gaussian noise of standard deviation ``sigma``
    (pixel units of the [0, 1] scale; SPEC: 0.25), with ``n_votes`` draws voting in ``predict``
    (SPEC: 10) and ``n_draws`` averaged by ``forward``.

    ``forward(x)`` returns log((1/n) * sum_i softmax(base(noisy_i(x)))), the log of the mean class
    probability over ``n_draws`` draws: one logits tensor that is differentiable in x (the
    expectation-over-transformation view of the smoothed model, what gradient attacks should
    query). Its argmax can differ from the vote of ``predict`` when draws disagree, so accuracy is
    counted with ``predict`` (through :func:`ciiv.models.predict`). All draws of a batch go
    through the base model as one batch of n * B images.
    """

    stochastic = True

    def __init__(self, base: nn.Module, sigma: float = 0.25, n_draws: int = 10, n_votes: int = 10):
        super().__init__()
        if not (isinstance(sigma, int | float) and sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        self.base = base
        self.sigma = float(sigma)
        self.n_draws = positive_int("n_draws", n_draws)
        self.n_votes = positive_int("n_votes", n_votes)

    @property
    def independent_rows(self) -> bool | None:
        """Whether stacked copies of one image are independent draws: the noise is per element,
        so what the base declares (:func:`~ciiv.models.views.declared_rows`)."""
        return declared_rows(self.base)

    def independent_draws(self) -> contextlib.AbstractContextManager:
        """The base's ``independent_draws()`` (stacked draws of a CiiV base get their own
        masks), or a no-op context."""
        return independent_draws(self.base)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, n_draws={self.n_draws}, n_votes={self.n_votes}"

    def noisy(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """clip(x + sigma * n, 0, 1) with n ~ N(0, I), same shape as x (one draw)."""
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + self.sigma * noise).clamp(0, 1)

    def _draw_logits(self, x: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        """Base logits of n noisy copies of x: [n, B, classes] (one batched base pass)."""
        copies = x.unsqueeze(0).expand(n, *x.shape).flatten(0, 1)
        logits = self.base(self.noisy(copies, generator))
        return logits.view(n, x.shape[0], -1)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Log mean softmax over ``n_draws`` noisy draws: [B, classes], x in [0, 1] [B, C, H, W]."""
        log_probs = self._draw_logits(x, self.n_draws, generator).log_softmax(-1)
        return torch.logsumexp(log_probs, 0) - math.log(self.n_draws)

    @torch.no_grad()
    def predict(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Majority vote over ``n_votes`` noisy draws: labels [B] (int64).

        Ties go to the class with the larger mean probability over the same draws (the mean is
        below 1, so it only ever breaks ties).
        """
        probs = self._draw_logits(x, self.n_votes, generator).softmax(-1)  # [n, B, K]
        votes = nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).sum(0)
        return (votes + probs.mean(0)).argmax(-1)
