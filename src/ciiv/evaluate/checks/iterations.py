"""Check 5, iteration monotonicity: more steps and restarts never raise the robust accuracy, and
a single-step attack never beats a multi-step one (within the sampling error)."""

from __future__ import annotations

from functools import partial

from ciiv.sampling import EXACT

from .base import CheckResult, register_check
from .context import AuditContext


@register_check(
    "iteration_monotonicity",
    order=50,
    summary="more steps / restarts never help the model; FGSM never beats PGD",
)
def iteration_monotonicity(ctx: AuditContext) -> CheckResult:
    s = ctx.settings
    surrogate = ctx.best_surrogate
    fgsm = ctx.fgsm(surrogate)
    by_steps = [ctx.pgd(steps, surrogate=surrogate) for steps in s.step_grid]
    main = ctx.pgd(surrogate=surrogate)
    restarted = ctx.pgd(restarts=s.restarts, surrogate=surrogate)
    # (weaker-or-equal, stronger-or-equal) pairs: the first may not leave less accuracy.
    pairs = [(fgsm, main), *zip(by_steps, by_steps[1:], strict=False), (main, restarted)]
    numbers: dict = {
        "eot": ctx.eot(surrogate),
        "backward": surrogate or EXACT,
        "accuracy": {r.label: round(r.accuracy, 4) for r in [fgsm, *by_steps, main, restarted]},
    }
    verdict = partial(CheckResult, "iteration_monotonicity", numbers=numbers)
    violations = []
    for weak, strong in pairs:
        cmp = ctx.compare(weak.correct, strong.correct)
        if -cmp.diff > cmp.tolerance:
            violations.append({"weaker": weak.label, "stronger": strong.label, **cmp.to_dict()})
    numbers["violations"] = violations
    if violations:
        v = violations[0]
        return verdict(
            "fail",
            f"{v['stronger']} leaves {-v['diff']:.1%} more accuracy than {v['weaker']} (sampling "
            f"error {v['tolerance']:.1%}): more optimisation should never help the model. The "
            "loss landscape misleads the attack (masked or noisy gradients, a too large step): try "
            "BPDA, more EOT draws, a smaller step size, and gradient-free attacks.",
        )
    last = ctx.compare(by_steps[-2].correct, by_steps[-1].correct) if len(by_steps) > 1 else None
    if last is not None and last.violated:
        numbers["not_converged"] = last.to_dict()
        return verdict(
            "warn",
            f"Monotone, but not converged: {by_steps[-1].label} still removes {last.diff:.1%} "
            f"accuracy over {by_steps[-2].label}. Evaluate with more steps (and restarts) until "
            "the accuracy stops falling.",
        )
    return verdict(
        "pass",
        "FGSM, PGD with "
        + ", ".join(str(k) for k in s.step_grid)
        + f" steps and {s.restarts} restarts give non-increasing accuracy ("
        + ", ".join(f"{v:.0%}" for v in numbers["accuracy"].values())
        + "), and the longest attack has converged.",
    )
