"""Check 4, strength monotonicity: accuracy never rises with the budget, and an unbounded attack
(one that may reach any image) brings it to about 0 %."""

from __future__ import annotations

from functools import partial

from .base import CheckResult, register_check, sentence
from .context import AuditContext


@register_check(
    "strength_monotonicity",
    order=40,
    summary="accuracy falls as eps grows and reaches about 0 % without a budget",
)
def strength_monotonicity(ctx: AuditContext) -> CheckResult:
    s = ctx.settings
    unbounded = ctx.unbounded_eps
    grid = sorted({m * s.eps for m in s.eps_multipliers if m * s.eps < unbounded} | {unbounded})
    surrogate = ctx.best_surrogate
    curve = [(0.0, ctx.clean_correct)] + [
        (e, ctx.pgd(eps=e, surrogate=surrogate).correct) for e in grid
    ]
    numbers: dict = {
        "attack": f"pgd-{s.steps}" + (f" bpda-{surrogate}" if surrogate else ""),
        "eot": ctx.eot(surrogate),
        "eps": [round(e, 6) for e, _ in curve],
        "accuracy": [round(c.float().mean().item(), 4) for _, c in curve],
        "unbounded_eps": unbounded,
        "unbounded_max_accuracy": s.unbounded_max_accuracy,
    }
    verdict = partial(CheckResult, "strength_monotonicity", numbers=numbers)
    rises = []
    for (e0, c0), (e1, c1) in zip(curve, curve[1:], strict=False):
        cmp = ctx.compare(c1, c0)
        if cmp.violated:
            rises.append({"from_eps": round(e0, 6), "to_eps": round(e1, 6), **cmp.to_dict()})
    numbers["rises"] = rises
    final = numbers["accuracy"][-1]
    problems = []
    if final > s.unbounded_max_accuracy:
        problems.append(
            f"an unbounded attack (eps = {unbounded:.3g}, any image reachable) still leaves "
            f"{final:.1%} accuracy (> {s.unbounded_max_accuracy:.0%}): the attack cannot even "
            "find an image of another class, so its gradients are masked or it is broken"
        )
    if rises:
        r = rises[0]
        problems.append(
            f"accuracy rises from eps {r['from_eps']:.4g} to {r['to_eps']:.4g} by {r['diff']:.1%} "
            f"(more than {r['tolerance']:.1%} sampling error), which a working attack never allows"
        )
    if problems:
        return verdict(
            "fail",
            sentence("; ".join(problems))
            + ". Try BPDA, more steps and restarts, a margin loss, and gradient-free attacks "
            "(Square, SPSA); the robust accuracy at eps is not trustworthy until this passes.",
        )
    return verdict(
        "pass",
        f"Accuracy falls with eps ({' > '.join(f'{a:.0%}' for a in numbers['accuracy'])}) and an "
        f"unbounded attack leaves {final:.1%}.",
    )
