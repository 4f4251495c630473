"""The audit that accompanies every evaluation of a random model, at most as costly as the suite.

The ``randomness`` and ``gradient_health`` checks on the quick preset made cheaper
(:data:`DEFAULT_SETTINGS`), on as many evaluated examples (up to ``audit_examples``, at least two)
as keep :func:`forward_pass_bound` within the suite's forward passes (docs/evaluation.md, "The
default audit and its cost")."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import partial
from typing import Any

from .checks.settings import AuditSettings, audit_settings

__all__ = ["DEFAULT_CHECKS", "DEFAULT_SETTINGS", "AuditPlan", "forward_pass_bound", "plan_audit"]

DEFAULT_CHECKS: tuple[str, ...] = ("randomness", "gradient_health")
# On top of the quick preset (checks/settings.py QUICK): what the two checks above use.
DEFAULT_SETTINGS: dict[str, Any] = {
    "steps": 10,
    "eot_grid": (1, 2, 4, 8),
    "max_eot": 8,
    "grad_examples": 8,
    "draws": 2,
}
# The audit compares accuracies over examples: it needs at least two.
MIN_EXAMPLES = 2
# The spread test of ciiv.attacks.draws: calls x copies x (at most 8) points.
_SPREAD_CALLS, _SPREAD_COPIES, _SPREAD_POINTS = 4, 4, 8


def forward_pass_bound(
    settings: AuditSettings, n: int, *, surrogates: int, rows_measured: bool
) -> int:
    """An upper bound on the images the default checks send through a random model, for ``n``
    audited examples, ``surrogates`` BPDA backwards the model offers (2 for CiiV, else 0), and
    ``rows_measured`` when the evaluation measured the model's rows already (the audit reuses it).

    On g = min(grad_examples, n) points: max(draws, 4) logit draws, 2 seeded passes, 4 single
    gradients, 2 * max(eot_grid) gradients per backward, and the spread test. On the n points:
    single-draw PGD, at most 1 + surrogates EOT PGD runs ((steps + 1) * E images each, E <=
    max_eot), ``draws`` predictions after each run and on the clean points.
    """
    g = min(settings.grad_examples, n)
    per_point = max(settings.draws, 4) + 2 + 4 + (1 + surrogates) * 2 * max(settings.eot_grid)
    spread = 0 if rows_measured else _SPREAD_CALLS * _SPREAD_COPIES * min(_SPREAD_POINTS, g)
    steps = settings.steps + 1  # the gradient steps and the final estimate
    per_example = (
        (steps + settings.draws)  # single-draw PGD
        + (1 + surrogates) * (steps * settings.max_eot + settings.draws)  # EOT PGD runs
        + settings.draws  # clean predictions
    )
    return g * per_point + spread + n * per_example


@dataclass(frozen=True)
class AuditPlan:
    """What the default audit will do: ``n`` examples, at most ``bound`` forward passes, for a
    suite that used ``budget``; ``overrides`` are its :class:`AuditSettings` on top of the quick
    preset."""

    n: int
    bound: int
    budget: int
    overrides: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "checks": list(DEFAULT_CHECKS),
            "examples": self.n,
            "forward_pass_bound": self.bound,
            "suite_forward_passes": self.budget,
            "within_budget": self.bound <= self.budget,
        }


def plan_audit(
    eps: float,
    norm: str,
    *,
    available: int,
    budget: int,
    surrogates: int,
    rows_measured: bool,
    batch_size: int | None = None,
) -> AuditPlan | None:
    """The largest default audit (up to ``available`` examples) whose
    :func:`forward_pass_bound` is at most ``budget`` (at least two examples, whatever the
    budget); None when fewer than two examples are available.

    ``batch_size``: the audit's images per model call (None: the settings' default).
    """
    overrides = dict(DEFAULT_SETTINGS)
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    settings = audit_settings(eps, norm, quick=True, **overrides)
    bound = partial(
        forward_pass_bound, settings, surrogates=surrogates, rows_measured=rows_measured
    )
    if available < MIN_EXAMPLES:
        return None
    sizes = range(MIN_EXAMPLES, available + 1)  # the bound grows with n: the largest n that fits
    n = sizes[max(bisect.bisect_right(sizes, budget, key=bound) - 1, 0)]
    return AuditPlan(n=n, bound=bound(n), budget=budget, overrides=overrides)
