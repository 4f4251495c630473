"""Check 8 (CiiV and other sampler models): without the random sampler the backbone must be easy
to break. If the same attack cannot break a deterministic, smooth version of the network, the
evaluation may be broken rather than the defence strong."""

from __future__ import annotations

from functools import partial

from .base import CheckResult, register_check
from .context import AuditContext
from .standins import stand_ins

# A stand-in whose clean accuracy is below this fraction of the model's does not compute the same
# function closely enough to say anything about the model.
_FAITHFUL = 0.5


@register_check(
    "sampler_removed",
    order=80,
    summary="CiiV: the backbone without the random sampler is easy to break",
)
def sampler_removed(ctx: AuditContext) -> CheckResult:
    candidates = stand_ins(ctx.model)
    if not candidates:
        return CheckResult(
            "sampler_removed",
            "skip",
            "The model has no sampler to remove (no forward_expected): this check is for CiiV.",
        )
    s = ctx.settings
    model_clean = ctx.clean_correct.float().mean().item()
    # Like for like: the same PGD on the model (with its best backward and EOT) and the stand-ins.
    model_run = ctx.pgd(surrogate=ctx.best_surrogate)
    model_robust = model_run.accuracy
    numbers: dict = {
        "model_clean_accuracy": round(model_clean, 4),
        "model_robust_accuracy": round(model_robust, 4),
    }
    verdict = partial(CheckResult, "sampler_removed", numbers=numbers)
    faithful = []
    for name, stand_in in candidates.items():
        clean = ctx.correct(ctx.x, stand_in)
        at_eps = ctx.pgd(model=stand_in, target=name, eot=1)
        unbounded = ctx.pgd(model=stand_in, target=name, eot=1, eps=ctx.unbounded_eps)
        entry = {
            "clean_accuracy": round(clean.float().mean().item(), 4),
            "robust_accuracy": round(at_eps.accuracy, 4),
            "unbounded_accuracy": round(unbounded.accuracy, 4),
        }
        numbers[name] = entry
        entry["faithful"] = entry["clean_accuracy"] >= _FAITHFUL * model_clean
        if entry["faithful"]:
            entry["stand_in_minus_model"] = ctx.compare(at_eps.correct, model_run.correct).to_dict()
            faithful.append((name, at_eps, unbounded))
    if not faithful:
        cleans = ", ".join(f"{k} {numbers[k]['clean_accuracy']:.0%}" for k in candidates)
        return verdict(
            "warn",
            f"No stand-in without the sampler keeps the model's clean accuracy ({cleans} vs "
            f"{model_clean:.0%}), so the backbone cannot be tested alone. Check "
            "forward_expected, or attack the model with the paper protocol (centre view) as a "
            "second surrogate.",
        )
    # One stand-in that the attack breaks is enough to show the attack works on the backbone
    # (forward_expected clips the firing probability, which can mask its own gradient).
    name, at_eps, unbounded = min(faithful, key=lambda f: (f[2].accuracy, f[1].accuracy))
    numbers["easiest_stand_in"] = name
    if unbounded.accuracy > s.unbounded_max_accuracy:
        return verdict(
            "fail",
            f"The attack cannot break any deterministic stand-in even without a budget (best: "
            f"{name}, {unbounded.accuracy:.1%} left at eps {ctx.unbounded_eps:.3g}). The attack "
            "machinery is broken (wrong loss, labels, step size, input range) or the backbone "
            "masks its own gradient: fix that before trusting any robust accuracy.",
        )
    if ctx.compare(at_eps.correct, model_run.correct).violated:
        return verdict(
            "warn",
            f"Without the sampler the backbone resists the attack better than the random model "
            f"({name}: {at_eps.accuracy:.1%} vs the model's {model_robust:.1%}). The backbone "
            "itself is robust (e.g. adversarially trained) or the attack is too weak on it: add "
            "steps and restarts and confirm with AutoAttack on the stand-in.",
        )
    owed = model_robust - at_eps.accuracy
    return verdict(
        "pass",
        f"Without the sampler the backbone is easy to break ({name}: {at_eps.accuracy:.1%} at "
        f"eps, {unbounded.accuracy:.1%} unbounded, vs the model's {model_robust:.1%}): "
        f"{max(owed, 0):.1%} of robust accuracy comes from the random sampler, which is what EOT "
        "and BPDA attacks must defeat.",
    )
