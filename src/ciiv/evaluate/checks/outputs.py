"""Check 3, output sanity: the model returns logits, not probabilities, and its softmax is not so
saturated that the cross-entropy and its gradient are exactly zero."""

from __future__ import annotations

from functools import partial

from .base import CheckResult, register_check
from .context import AuditContext

# A row "sums to 1" (probabilities) or "log-sums to 0" (log-probabilities) within this.
_SUM_ATOL = 1e-3
# More rows than this that look like probabilities / are saturated make the verdict.
_MAJORITY = 0.5


@register_check(
    "output_sanity",
    order=30,
    summary="logits rather than probabilities; no saturated softmax that kills the CE gradient",
)
def output_sanity(ctx: AuditContext) -> CheckResult:
    s = ctx.settings
    logits = ctx.logits(ctx.x)
    probs = logits.float().softmax(1)
    in_unit = ((logits >= 0) & (logits <= 1)).all(1)
    prob_rows = (in_unit & ((logits.sum(1) - 1).abs() < _SUM_ATOL)).float().mean().item()
    log_normalised = logits.float().logsumexp(1).abs() < _SUM_ATOL
    log_prob_rows = ((logits <= 0).all(1) & log_normalised).float().mean().item()
    top2 = logits.float().topk(min(2, logits.shape[1]), dim=1).values
    # Saturated: p_max rounds to 1, so CE is exactly 0 (AutoAttack flags this). Dead: every other
    # probability underflows to 0, so even the CE gradient p - onehot is exactly 0.
    saturated = (probs.amax(1) == 1).float().mean().item()
    dead = ((probs > 0).sum(1) == 1).float().mean().item()
    numbers = {
        "num_classes": logits.shape[1],
        "probability_rows": round(prob_rows, 4),
        "log_probability_rows": round(log_prob_rows, 4),
        "logit_min": logits.min().item(),
        "logit_max": logits.max().item(),
        "top2_margin_median": (top2[:, 0] - top2[:, -1]).median().item(),
        "saturated_fraction": round(saturated, 4),
        "dead_ce_gradient_fraction": round(dead, 4),
    }
    verdict = partial(CheckResult, "output_sanity", numbers=numbers)
    if prob_rows > _MAJORITY:
        return verdict(
            "fail",
            f"{prob_rows:.0%} of the output rows are probabilities (in [0, 1], summing to 1): "
            "forward() must return logits. Cross-entropy on probabilities is almost flat, so "
            "gradient attacks stall. Return the logits (drop the final softmax) or attack with a "
            "margin loss on the logits.",
        )
    if dead > s.zero_grad_max_fraction:
        return verdict(
            "fail",
            f"The softmax is exactly one-hot on {dead:.0%} of the inputs (largest logit gap "
            f"{numbers['top2_margin_median']:.3g} at the median): the cross-entropy gradient is "
            "exactly zero there. Attack with a margin loss (C&W) or AutoAttack's DLR loss, or "
            "divide the logits by a temperature for the attack.",
        )
    notes = []
    if saturated > _MAJORITY:
        notes.append(
            f"the cross-entropy is exactly 0 at float precision on {saturated:.0%} of the inputs; "
            "CE-based attacks start with a tiny gradient there: include a margin-loss attack "
            "(C&W, APGD-DLR)"
        )
    if logits.shape[1] < 3:
        notes.append("with fewer than 3 classes AutoAttack's DLR loss is undefined: use C&W")
    if notes:
        return verdict("warn", "Outputs are logits, but " + "; ".join(notes) + ".")
    kind = "log-probabilities (fine for CE)" if log_prob_rows > _MAJORITY else "logits"
    return verdict(
        "pass",
        f"Outputs are {kind}, not probabilities, and the softmax is not saturated.",
    )
