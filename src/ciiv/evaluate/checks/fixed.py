"""Check 7, fixed randomness: once the model's random draws are fixed (a deterministic function,
``context.fixed_randomness``), the attack must succeed at least as well as against the random
model. A model that reseeding cannot fix (a private generator) skips the check and says so."""

from __future__ import annotations

from functools import partial

import torch

from .base import CheckResult, register_check
from .context import AuditContext, fixed_randomness, worst_case


@register_check(
    "fixed_randomness",
    order=70,
    summary="the attack succeeds at least as well once the model's randomness is fixed",
)
def fixed_randomness_check(ctx: AuditContext) -> CheckResult:
    s = ctx.settings
    if not ctx.stochastic:
        return CheckResult(
            "fixed_randomness", "skip", "The model is deterministic: there is no randomness to fix."
        )
    fixed = fixed_randomness(ctx.model, s.seed)
    with torch.no_grad():
        same = torch.equal(fixed(ctx.grad_x), fixed(ctx.grad_x))
    if not same:
        return CheckResult(
            "fixed_randomness",
            "skip",
            "Reseeding the global generators (torch, random, numpy) before each forward pass "
            "does not make this model deterministic (it draws from its own generator), so a "
            "seeded evaluation of it is not reproducible either. Give the model a "
            "fixed_randomness(seed) context manager (as CiiVClassifier has) to run this check.",
            {"fixed_is_deterministic": False},
        )
    # The same PGD configurations on both: the true gradient and every BPDA backward.
    backwards = [None, *ctx.surrogates]
    runs = [ctx.pgd(model=fixed, target="fixed", eot=1, surrogate=b) for b in backwards]
    random_runs = [ctx.pgd(surrogate=b) for b in backwards]
    fixed_worst, random_worst = worst_case(runs), worst_case(random_runs)
    # The fixed draw's adversarial points against the random model: does each draw need its own?
    best_fixed = min(runs, key=lambda r: r.accuracy)
    transferred = ctx.correct(best_fixed.x_adv)
    acc_fixed = fixed_worst.mean().item()
    acc_random = random_worst.mean().item()
    worse = ctx.compare(fixed_worst, random_worst)  # > 0: the attack does worse when fixed
    owed = ctx.compare(random_worst, fixed_worst)  # > 0: robustness that exists only by chance
    numbers = {
        "fixed_is_deterministic": True,
        "accuracy_fixed": round(acc_fixed, 4),
        "accuracy_random": round(acc_random, 4),
        "accuracy_random_on_fixed_points": round(transferred.float().mean().item(), 4),
        "attacks": {r.label: round(r.accuracy, 4) for r in runs + random_runs},
        "fixed_minus_random": worse.to_dict(),
    }
    verdict = partial(CheckResult, "fixed_randomness", numbers=numbers)
    if worse.violated:
        return verdict(
            "fail",
            f"The attack does worse on a deterministic copy of the model ({acc_fixed:.1%}) than on "
            f"the random model ({acc_random:.1%}): the gradient itself is broken (shattered or "
            "vanishing), not merely noisy. Attack through BPDA and with gradient-free attacks.",
        )
    if owed.violated:
        return verdict(
            "warn",
            f"Every fixed draw is easy to break ({acc_fixed:.1%} left) but the random model keeps "
            f"{acc_random:.1%} (points crafted on the fixed draw leave "
            f"{numbers['accuracy_random_on_fixed_points']:.1%}): {owed.diff:.1%} of the robust "
            "accuracy comes from the randomness. Check that it survives twice the audit's EOT "
            f"(E = {2 * max(ctx.eot(b) for b in backwards)}), BPDA and more steps before "
            "trusting it.",
        )
    return verdict(
        "pass",
        f"With the randomness fixed the attack leaves {acc_fixed:.1%}, about what it leaves on the "
        f"random model ({acc_random:.1%}): the randomness is not what stops the attack.",
    )
