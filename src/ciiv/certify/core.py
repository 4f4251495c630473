"""CERTIFY and PREDICT of Cohen, Rosenfeld and Kolter (ICML 2019) for Gaussian smoothing.

g(x) = argmax_c P(f(clip(x + d, 0, 1)) = c), d ~ N(0, sigma^2 I), the Gaussian smoothing of
f o clip (docs/evaluation.md, "Certification"). Draws of a random base are stacked into one call
only where its rows are independent (declared, or measured by the spread test of
:mod:`ciiv.attacks.draws`), else one call per draw, so the counts stay binomial.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ciiv._checks import check_images, positive_int
from ciiv.attacks import (
    RowVerdict,
    assume_rows,
    independent_draws,
    inputs_checked_once,
    preserve_mode,
    row_verdict,
    rows_independent,
)
from ciiv.evaluate.engine import derive_seed, seeded
from ciiv.models import SmoothedClassifier

from .stats import binomial_test_half, clopper_pearson_lower

__all__ = [
    "ABSTAIN",
    "Certification",
    "SmoothedPrediction",
    "base_classifier",
    "certify",
    "noise_counts",
    "predict",
]

ABSTAIN = -1  # the prediction of an example on which the smoothed classifier abstains


@dataclass(frozen=True)
class Certification:
    """What :func:`certify` returns; tensors on the input's device, N = number of examples.

    Attributes:
        prediction: [N] int64, the certified class cA, or -1 (abstain: pA_lower <= 1/2).
        radius: [N] float64, sigma * Phi^-1(pA_lower) in L2 pixel units of the [0, 1] scale;
            0 where abstained.
        p_lower: [N] float64, the one-sided (1 - alpha) Clopper-Pearson lower bound on pA.
        count: [N] int64, how many of the n estimation draws the base classifier gave cA.
        counts: [N, K] int64, the estimation draws per class.
        selection_counts: [N, K] int64, the n0 selection draws per class (cA is their argmax).
        sigma, n0, n, alpha: the settings.
    """

    prediction: Tensor
    radius: Tensor
    p_lower: Tensor
    count: Tensor
    counts: Tensor
    selection_counts: Tensor
    sigma: float
    n0: int
    n: int
    alpha: float

    @property
    def abstained(self) -> Tensor:
        """[N] bool: examples on which g abstains."""
        return self.prediction == ABSTAIN


@dataclass(frozen=True)
class SmoothedPrediction:
    """What :func:`predict` returns; tensors on the input's device.

    Attributes:
        prediction: [N] int64, the top class, or -1 where the binomial test between the top two
            classes is not significant at level alpha (abstain).
        p_value: [N] float64, the two-sided binomial test's p-value (top count vs. top two).
        counts: [N, K] int64, the n draws per class.
        sigma, n, alpha: the settings.
    """

    prediction: Tensor
    p_value: Tensor
    counts: Tensor
    sigma: float
    n: int
    alpha: float


def base_classifier(model: nn.Module) -> nn.Module:
    """``model.base`` for a :class:`~ciiv.models.SmoothedClassifier`, else ``model`` itself (any
    module mapping [0, 1] inputs [B, ...] to logits [B, K])."""
    return model.base if isinstance(model, SmoothedClassifier) else model


def _check(x: Tensor, sigma: float, alpha: float, **counts: int) -> None:
    """Validate the inputs and settings (``counts``: positive integers such as n, batch_size)."""
    check_images(x, nonempty=True, image=False)
    for name, value in counts.items():
        positive_int(name, value)
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma > 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    if not math.isfinite(sigma):
        raise ValueError(f"sigma must be finite, got {sigma!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")


def _device(module: nn.Module, fallback: torch.device) -> torch.device:
    return next((t.device for t in [*module.parameters(), *module.buffers()]), fallback)


@torch.no_grad()
def noise_counts(
    base: nn.Module,
    x: Tensor,
    sigma: float,
    num: int,
    batch_size: int,
    generator: torch.Generator,
) -> Tensor:
    """Counts [N, K] int64 of the classes ``base`` ([B, ...] in [0, 1] -> logits [B, K], in its
    current mode) predicts on ``num`` copies clip(x + sigma * d, 0, 1), d ~ N(0, I) from
    ``generator``, of each example of x [N >= 1, ...] on base's device.

    At most ``batch_size`` noisy images per call: the draws of a group of G examples are stacked
    (row r * G + i is draw r of example i), their noise from one ``randn`` call; a base whose rows
    are not known to be independent (:func:`~ciiv.attacks.rows_independent`) gets one draw of the
    group per call.
    """
    counts = None  # [N, K], allocated once the first call shows K
    for start in range(0, x.shape[0], batch_size):
        group = x[start : start + batch_size]
        size = group.shape[0]
        per_call = max(1, batch_size // size) if rows_independent(base) else 1
        for done in range(0, num, per_call):
            draws = min(per_call, num - done)
            batch = group.repeat(draws, *([1] * (group.dim() - 1)))
            noise = torch.randn(batch.shape, generator=generator, device=x.device, dtype=x.dtype)
            logits = base((batch + sigma * noise).clamp(0, 1))
            if counts is None:
                counts = x.new_zeros((x.shape[0], logits.shape[-1]), dtype=torch.long)
            labels = logits.argmax(-1).view(draws, size).T  # [G, draws]
            counts[start : start + size].scatter_add_(1, labels, torch.ones_like(labels))
    assert counts is not None  # x holds at least one example
    return counts


def _rows(base: nn.Module, x: Tensor, seed: int) -> RowVerdict:
    """How the draws of ``base`` may go through it (:func:`ciiv.attacks.row_verdict` on images x
    on its device), in eval mode, with the generators it draws from seeded from ``seed`` (and
    restored): the verdict :func:`certify` finds, which a caller may measure once ahead."""
    with preserve_mode(base), seeded(derive_seed(seed, "rows"), x.device):
        return row_verdict(base, x, seed=seed)


@contextlib.contextmanager
def _sampling(model: nn.Module, x: Tensor, seed: int) -> Iterator[tuple]:
    """(base, x on its device, seeded generator there), the base in eval mode, drawing per row,
    its rows measured by the spread test unless known, without its per-call pixel check (x was
    checked), and the global generators it may draw from seeded (restored afterwards)."""
    base = base_classifier(model)
    device = _device(base, x.device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    xd = x.detach().to(device)
    with preserve_mode(base), inputs_checked_once(base):
        verdict = _rows(base, xd, seed)
        with seeded(derive_seed(seed, "base"), device), assume_rows(base, verdict):
            with independent_draws(base):
                yield base, xd, generator


def certify(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    seed: int = 0,
) -> Certification:
    """CERTIFY (Cohen et al. 2019, algorithm 1) for every example of x at once.

    cA = the most frequent class of n0 noisy draws; nA = its count among n fresh draws; if the
    one-sided (1 - alpha) Clopper-Pearson lower bound pA_lower of nA / n exceeds 1/2, class cA
    with L2 radius sigma * Phi^-1(pA_lower), else abstain (-1, radius 0). With probability
    >= 1 - alpha per example, a returned class is g's and g is constant on that open L2 ball.

    Args:
        model: a :class:`~ciiv.models.SmoothedClassifier` (its ``base`` is used, and ``sigma``
            is still the argument's) or any base classifier mapping [B, ...] in [0, 1] to logits.
        x: [N, ...] in [0, 1] (images [N, C, H, W]); moved to the model's device.
        sigma: noise standard deviation in pixel units of the [0, 1] scale.
        n0, n: selection and estimation draws per example.
        alpha: failure probability per example.
        batch_size: noisy images per call of the base classifier.
        seed: seeds the noise (a generator on the model's device; the same seed, batch_size and
            device type give the same result).

    Returns:
        A :class:`Certification` on x's device. The base classifier's train/eval flags are
        restored afterwards.
    """
    _check(x, sigma, alpha, n0=n0, n=n, batch_size=batch_size)
    with _sampling(model, x, seed) as (base, xd, generator):
        selection = noise_counts(base, xd, sigma, n0, batch_size, generator)
        top = selection.argmax(-1)
        counts = noise_counts(base, xd, sigma, n, batch_size, generator)
    count = counts.gather(1, top[:, None])[:, 0]
    out = x.device
    p_lower = torch.from_numpy(clopper_pearson_lower(count.cpu().numpy(), n, alpha)).to(out)
    certified = p_lower > 0.5
    radius = torch.where(certified, sigma * torch.special.ndtri(p_lower), 0.0)
    return Certification(
        prediction=torch.where(certified, top.to(out), ABSTAIN),
        radius=radius,
        p_lower=p_lower,
        count=count.to(out),
        counts=counts.to(out),
        selection_counts=selection.to(out),
        sigma=float(sigma),
        n0=int(n0),
        n=int(n),
        alpha=float(alpha),
    )


def predict(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    seed: int = 0,
) -> SmoothedPrediction:
    """PREDICT (Cohen et al. 2019): the smoothed classifier's class, or abstain.

    Per example: n noisy draws; the two most frequent classes with counts nA >= nB; the class
    cA unless the two-sided binomial test of nA successes in nA + nB trials at p = 1/2 has
    p-value > alpha, then -1 (abstain). A returned class differs from g(x) with probability
    <= alpha. Arguments as in :func:`certify`.
    """
    _check(x, sigma, alpha, n=n, batch_size=batch_size)
    with _sampling(model, x, seed) as (base, xd, generator):
        counts = noise_counts(base, xd, sigma, n, batch_size, generator)
    top = counts.topk(min(2, counts.shape[-1]), dim=-1)
    first = top.values[:, 0].cpu().numpy()
    second = top.values[:, 1].cpu().numpy() if counts.shape[-1] > 1 else np.zeros_like(first)
    p_value = binomial_test_half(first, first + second)
    significant = torch.from_numpy(p_value <= alpha).to(counts.device)
    out = x.device
    return SmoothedPrediction(
        prediction=torch.where(significant, top.indices[:, 0], ABSTAIN).to(out),
        p_value=torch.from_numpy(p_value).to(out),
        counts=counts.to(out),
        sigma=float(sigma),
        n=int(n),
        alpha=float(alpha),
    )
