"""Check 1, randomness: does the same input give different logits, and how many draws does a
gradient attack need to average (EOT) before its direction is stable?"""

from __future__ import annotations

from .base import CheckResult, register_check
from .base import sentence as _sentence
from .context import AuditContext


def _describe(surrogate: str | None) -> str:
    return "the true gradient" if surrogate is None else f"the BPDA '{surrogate}' gradient"


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
    t = s.cosine_threshold
    options = [None, *ctx.surrogates]
    for surrogate in options:
        numbers[surrogate or "exact"] = ctx.stability(surrogate).to_numbers(t)
    best = ctx.best_surrogate
    needed = ctx.stability(best).needed(t)
    numbers["best_gradient"] = best or "exact"
    numbers["eot_used_by_audit"] = {s_ or "exact": ctx.eot(s_) for s_ in options}
    relative = f"{spread / scale:.0%}" if scale > 0 else "all"
    intro = (
        f"Random model: logits vary by {spread:.3g} (std over passes, {relative} of their scale) "
        f"and predictions flip on {flips:.0%} of the inputs."
    )
    numbers["draws_shared_by_batch"] = ctx.shared_draws
    if ctx.shared_draws:
        return CheckResult(
            "randomness",
            "fail",
            f"{intro} The model draws its randomness once per call: copies of an image in one "
            "batch get the same draw, so batched EOT (E copies per call, as the attacks do it) "
            "averages nothing and every EOT result is a single-draw result. Draw the randomness "
            "per example, or attack with one call per EOT draw ("
            + (f"E >= {needed} here)." if needed else f"more than {max(s.eot_grid)} draws here)."),
            numbers,
        )
    if needed is None:
        extra = ctx.stability(best).extrapolated(t)
        guess = f"about {extra:.0f}" if extra is not None else "an unknown number of"
        cos = ctx.stability(best).cosine[-1]
        return CheckResult(
            "randomness",
            "fail",
            f"{intro} No gradient gives a stable direction with E = {max(s.eot_grid)} draws "
            f"(best: {_describe(best)}, cosine {cos:.2f} < {t}); gradient attacks are unreliable "
            f"here. Run EOT with {guess} draws, try BPDA surrogates, and trust gradient-free "
            "attacks (Square, SPSA) as much as PGD.",
            numbers,
        )
    # What averaging buys: single-draw PGD against EOT PGD with the same steps and backward.
    single = ctx.pgd(surrogate=best, eot=1)
    averaged = ctx.pgd(surrogate=best)
    numbers["pgd_accuracy_eot1"] = round(single.accuracy, 4)
    numbers[f"pgd_accuracy_eot{ctx.eot(best)}"] = round(averaged.accuracy, 4)
    gain = ctx.compare(single.correct, averaged.correct)
    numbers["eot_gain"] = gain.to_dict()
    if gain.violated:
        return CheckResult(
            "randomness",
            "fail",
            f"{intro} The randomness hides the gradient (stochastic gradients, Athalye et al. "
            f"2018): single-draw PGD leaves {single.accuracy:.1%} accuracy, PGD averaging "
            f"{ctx.eot(best)} draws (EOT) only {averaged.accuracy:.1%}. Only attacks with EOT over "
            f"E >= {needed} draws using {_describe(best)} measure this model; robust accuracies "
            "from single-draw attacks (e.g. the paper protocol) are overstated.",
            numbers,
        )
    exact = ctx.stability(None)
    if best is not None and exact.needed(t) is None:
        return CheckResult(
            "randomness",
            "warn",
            f"{intro} The true gradient never gives a stable direction (cosine "
            f"{exact.cosine[-1]:.2f} between independent EOT-{exact.eot[-1]} estimates): averaging "
            "does not repair it. "
            f"{_sentence(_describe(best))} is stable with E >= {needed} draws: gradient attacks "
            "on this model must use BPDA (see gradient_health).",
            numbers,
        )
    if needed == 1:
        return CheckResult(
            "randomness",
            "pass",
            f"{intro} One draw already gives a stable gradient direction (cosine >= {t}) and EOT "
            "does not make PGD stronger, so the randomness does not hide the gradient.",
            numbers,
        )
    return CheckResult(
        "randomness",
        "warn",
        f"{intro} A stable gradient direction needs E >= {needed} draws (EOT) using "
        f"{_describe(best)}, although here single-draw PGD ({single.accuracy:.1%}) and EOT-"
        f"{ctx.eot(best)} PGD ({averaged.accuracy:.1%}) agree within sampling error. Use EOT in "
        "every reported gradient attack (the audit's attacks do).",
        numbers,
    )
