"""Check 6, white-box vs black-box: the best gradient attack must beat gradient-free attacks,
transfer and random noise on the same points. A black-box attack that breaks points the gradient
attacks miss shows that the gradients, not the model, are the obstacle."""

from __future__ import annotations

import logging
from functools import partial

from .base import CheckResult, register_check
from .context import AttackRun, AuditContext, worst_case
from .standins import stand_ins

logger = logging.getLogger(__name__)


def black_box(ctx: AuditContext) -> tuple[list[AttackRun], dict[str, str]]:
    """Gradient-free, transfer and noise attacks at the audit's budget; (runs, {label: error})."""
    s = ctx.settings
    plans: list[tuple[str, str, dict]] = [
        ("square", "square", {"n_queries": s.square_queries}),
        ("random-search", "random_search", {"draws": s.random_search_draws}),
        ("noise-gaussian", "gaussian_noise", {"sigma": s.noise_sigma}),
        ("noise-uniform", "uniform_noise", {"sigma": s.noise_sigma}),
    ]
    if s.norm == "Linf":  # SPSA is a Linf attack
        plans.append(("spsa", "spsa", {"steps": s.spsa_steps, "nb_sample": s.spsa_samples}))
    surrogate = stand_ins(ctx.model).get("expected")
    if surrogate is not None:
        plans.append(
            ("transfer-from-expected", "transfer",
             {"surrogate": surrogate, "base": "pgd", "steps": s.steps,
              "step_size": 2.5 * s.eps / s.steps})
        )  # fmt: skip
    runs, errors = [], {}
    for label, name, hyper in plans:
        try:
            runs.append(ctx.run(label, name, **hyper))
        except ImportError as err:  # an optional dependency (pyautoattack for Square)
            logger.warning("audit: %s skipped: %s", label, err)
            errors[label] = str(err)
    return runs, errors


@register_check(
    "whitebox_vs_blackbox",
    order=60,
    summary="the best gradient attack beats Square, SPSA, transfer and random noise",
)
def whitebox_vs_blackbox(ctx: AuditContext) -> CheckResult:
    wb_runs = ctx.white_box()
    worst = worst_case(wb_runs)  # per example, [1, N] fractions
    bb_runs, errors = black_box(ctx)
    p_wb, wb_accuracy = worst[0], round(worst.mean().item(), 4)
    numbers: dict = {
        "white_box_accuracy": wb_accuracy,
        "white_box_attacks": [r.label for r in wb_runs],
        "black_box": {},
    }
    verdict = partial(CheckResult, "whitebox_vs_blackbox", numbers=numbers)
    if errors:
        numbers["not_run"] = errors
    beaten, only = [], {}
    for run in bb_runs:
        cmp = ctx.compare(worst, run.correct)
        # Points the black-box attack breaks in every draw while no gradient attack ever does.
        missed = int(((run.correct.float().mean(0) == 0) & (p_wb == 1)).sum().item())
        numbers["black_box"][run.label] = {
            "accuracy": round(run.accuracy, 4),
            "white_box_minus_black_box": cmp.to_dict(),
            "broken_only_by_black_box": missed,
        }
        if cmp.violated:
            beaten.append(f"{run.label} ({run.accuracy:.1%} vs {wb_accuracy:.1%})")
        if missed:
            only[run.label] = missed
    if not bb_runs:
        return verdict("skip", f"No black-box attack could run: {errors}.")
    if beaten:
        return verdict(
            "fail",
            "Black-box attacks beat the best gradient attack: " + ", ".join(beaten) + ". The "
            "gradients mislead the attack (masked, shattered or too noisy): use BPDA, more EOT "
            "draws and steps, and report the worst case over both kinds of attack.",
        )
    if only:
        return verdict(
            "warn",
            f"The gradient attacks are stronger overall, but black-box attacks break points that "
            f"no gradient attack breaks ({only}). Include these attacks in the evaluation's worst "
            "case and look at those points (a local failure of the gradient).",
        )
    return verdict(
        "pass",
        f"The best gradient attack ({wb_accuracy:.1%}) beats every black-box, "
        "transfer and noise attack ("
        + ", ".join(f"{r.label} {r.accuracy:.0%}" for r in bb_runs)
        + ") and misses no point they break.",
    )
