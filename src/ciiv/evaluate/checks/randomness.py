"""Check 1, randomness: does the same input give different logits, how many draws does a
gradient attack need to average (EOT) before its direction is stable, are copies of an image in
one call independent draws (the spread test of :mod:`ciiv.attacks.draws`), and does a seed make
the model repeatable?"""

from __future__ import annotations

from ciiv.attacks import declared_rows
from ciiv.sampling import EXACT

from .base import CheckResult, Status, register_check, sentence
from .context import AuditContext


def _describe(surrogate: str | None) -> str:
    return "the true gradient" if surrogate is None else f"the BPDA '{surrogate}' gradient"


def _layout(ctx: AuditContext, numbers: dict) -> tuple[str, str | None]:
    """(a sentence on how the model's draws are laid out in calls, a failure or None)."""
    rows, declared = ctx.rows, declared_rows(ctx.model)
    stacked = rows.independent if declared is None else declared
    numbers["rows"] = rows.to_dict()
    numbers["declared_independent_rows"] = declared
    numbers["draw_layout"] = "stacked" if stacked else "one call per draw"
    measured = (
        f"spread ratio {rows.spread_ratio:.2f}, p = {rows.p_value:.3g}"
        if rows.source == "measured"
        else rows.source
    )
    if declared and not rows.independent:
        return "", (
            "The model declares independent_rows, but copies of an image in one call share their "
            f"randomness ({measured}): the evaluation stacks its EOT and prediction draws into "
            "one call, so they are one draw repeated and every EOT result is a single-draw "
            "result. Fix the model's independent_draws() or drop the declaration (ciiv then "
            "measures the rows and makes one call per draw)."
        )
    if not rows.independent:
        return (
            f" The model draws its randomness once per call for the whole batch ({measured}): "
            "the evaluation and this audit make one call per EOT and prediction draw, so the "
            "draws are independent."
        ), None
    return "", None


@register_check(
    "randomness",
    order=10,
    summary="same input, different logits? then the EOT draws needed for a stable gradient",
)
def randomness(ctx: AuditContext) -> CheckResult:
    s = ctx.settings
    logits = ctx.logit_draws.float()  # [R, n, K]
    spread = logits.std(0).mean().item()
    scale = logits.mean(0).std(1).mean().item()
    labels = logits.argmax(-1)
    flips = (labels != labels[0]).any(0).float().mean().item()
    numbers = {
        "stochastic": ctx.stochastic,
        "declared_stochastic": getattr(ctx.model, "stochastic", None),
        "forward_passes_compared": logits.shape[0],
        "logit_std": round(spread, 6),
        "logit_std_relative": round(spread / scale, 6) if scale > 0 else None,
        "prediction_flip_fraction": round(flips, 4),
    }
    if not ctx.stochastic:
        return CheckResult(
            "randomness",
            "pass",
            f"Deterministic: {logits.shape[0]} forward passes of the same inputs give the same "
            "logits, so gradient attacks need no EOT.",
            numbers,
        )
    layout, broken = _layout(ctx, numbers)
    numbers["reproducible_with_seed"] = ctx.reproducible
    unseeded = (
        ""
        if ctx.reproducible
        else " The model is not reproducible: two passes under the same seed of torch's, "
        "Python's and NumPy's global generators differ, so it draws from a generator ciiv does "
        "not seed (np.random.default_rng(), its own torch.Generator) and a seeded evaluation "
        "of it cannot be repeated. Draw from the global generators or offer "
        "fixed_randomness(seed)."
    )

    def result(status: Status, text: str) -> CheckResult:
        if status == "pass" and not ctx.reproducible:
            status = "warn"
        return CheckResult("randomness", status, text + unseeded, numbers)

    relative = f"{spread / scale:.0%}" if scale > 0 else "all"
    intro = (
        f"Random model: logits vary by {spread:.3g} (std over passes, {relative} of their scale) "
        f"and predictions flip on {flips:.0%} of the inputs.{layout}"
    )
    if broken is not None:
        return result("fail", f"{intro} {broken}")
    t = s.cosine_threshold
    options = [None, *ctx.surrogates]
    for surrogate in options:
        numbers[surrogate or EXACT] = ctx.stability(surrogate).to_numbers(t)
    best = ctx.best_surrogate
    needed = ctx.stability(best).needed(t)
    numbers["best_gradient"] = best or EXACT
    numbers["eot_used_by_audit"] = {s_ or EXACT: ctx.eot(s_) for s_ in options}
    if needed is None:
        extra = ctx.stability(best).extrapolated(t)
        guess = f"about {extra:.0f}" if extra is not None else "an unknown number of"
        cos = ctx.stability(best).cosine[-1]
        return result(
            "fail",
            f"{intro} No gradient gives a stable direction with E = {max(s.eot_grid)} draws "
            f"(best: {_describe(best)}, cosine {cos:.2f} < {t}); gradient attacks are unreliable "
            f"here. Run EOT with {guess} draws, try BPDA surrogates, and trust gradient-free "
            "attacks (Square, SPSA) as much as PGD.",
        )
    # What averaging buys: single-draw PGD against EOT PGD with the same steps and backward.
    single = ctx.pgd(surrogate=best, eot=1)
    averaged = ctx.pgd(surrogate=best)
    numbers["pgd_accuracy_eot1"] = round(single.accuracy, 4)
    numbers[f"pgd_accuracy_eot{ctx.eot(best)}"] = round(averaged.accuracy, 4)
    gain = ctx.compare(single.correct, averaged.correct)
    numbers["eot_gain"] = gain.to_dict()
    if gain.violated:
        return result(
            "fail",
            f"{intro} The randomness hides the gradient (stochastic gradients, Athalye et al. "
            f"2018): single-draw PGD leaves {single.accuracy:.1%} accuracy, PGD averaging "
            f"{ctx.eot(best)} draws (EOT) only {averaged.accuracy:.1%}. Only attacks with EOT over "
            f"E >= {needed} draws using {_describe(best)} measure this model; robust accuracies "
            "from single-draw attacks (e.g. the paper protocol) are overstated.",
        )
    exact = ctx.stability(None)
    if best is not None and exact.needed(t) is None:
        return result(
            "warn",
            f"{intro} The true gradient never gives a stable direction (cosine "
            f"{exact.cosine[-1]:.2f} between independent EOT-{exact.eot[-1]} estimates): averaging "
            "does not repair it. "
            f"{sentence(_describe(best))} is stable with E >= {needed} draws: gradient attacks "
            "on this model must use BPDA (see gradient_health).",
        )
    if needed == 1:
        return result(
            "pass",
            f"{intro} One draw already gives a stable gradient direction (cosine >= {t}) and EOT "
            "does not make PGD stronger, so the randomness does not hide the gradient.",
        )
    return result(
        "warn",
        f"{intro} A stable gradient direction needs E >= {needed} draws (EOT) using "
        f"{_describe(best)}, although here single-draw PGD ({single.accuracy:.1%}) and EOT-"
        f"{ctx.eot(best)} PGD ({averaged.accuracy:.1%}) agree within sampling error. Use EOT in "
        "every reported gradient attack (the audit's attacks do).",
    )
