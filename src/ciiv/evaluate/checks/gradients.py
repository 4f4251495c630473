"""Check 2, gradient health: finite, non-zero input gradients on clean and perturbed points, and
(for a model with BPDA backwards) how the true gradient compares with the BPDA ones."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from ciiv.attacks import PGD

from .base import CheckResult, register_check
from .context import AuditContext
from .measure import cosine


def _health(grads: dict[str, Tensor], atol: float) -> dict[str, float]:
    """Statistics of single-draw gradients {loss: [N, C, H, W]} at one set of points."""
    out: dict[str, float] = {}
    for loss, g in grads.items():
        flat = g.flatten(1)
        finite = torch.isfinite(flat)
        out[f"{loss}_nonfinite_fraction"] = round(1 - finite.float().mean().item(), 6)
        clean = torch.where(finite, flat, torch.zeros_like(flat))
        out[f"{loss}_zero_entry_fraction"] = round((clean == 0).float().mean().item(), 6)
        out[f"{loss}_vanishing_fraction"] = round(
            (clean.abs().amax(1) <= atol).float().mean().item(), 6
        )
        out[f"{loss}_norm_median"] = clean.norm(dim=1).median().item()
    return out


@register_check(
    "gradient_health",
    order=20,
    summary="input gradients finite and non-zero on clean and perturbed points; true vs BPDA",
)
def gradient_health(ctx: AuditContext) -> CheckResult:
    s = ctx.settings
    x, y = ctx.grad_x, ctx.grad_y
    generator = torch.Generator(device=x.device).manual_seed(s.seed)
    points = {"clean": x, "perturbed": ctx.threat.random_init(x, generator)}
    numbers: dict = {"examples": x.shape[0], "vanishing_atol": s.vanishing_atol}
    verdict = partial(CheckResult, "gradient_health", numbers=numbers)
    # One draw of PGD's own gradient per loss: the attacks' objective, call layout and backward.
    pgds = [PGD(ctx.model, loss=loss, max_batch=s.batch_size, seed=0) for loss in ("ce", "margin")]
    for where, p in points.items():
        grads = {pgd.loss: pgd.loss_gradient(p, y, per_draw=True).grad[0] for pgd in pgds}
        numbers[where] = _health(grads, s.vanishing_atol)
    # BPDA: the EOT-mean gradients of the randomness measurement (one draw if deterministic).
    bpda, masked = {}, False
    if ctx.surrogates:
        exact = ctx.stability(None).mean_gradient
        for surrogate in ctx.surrogates:
            other = ctx.stability(surrogate).mean_gradient
            ratio = other.flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1).clamp_min(1e-30)
            bpda[surrogate] = {
                "cosine_median": round(cosine(exact, other).median().item(), 4),
                "norm_ratio_median": ratio.median().item(),
            }
        numbers["bpda_vs_true"] = bpda
        numbers["bpda_eot"] = ctx.stability(None).eot[-1] * 2
        # The attack-level evidence: PGD through the true gradient against PGD through each BPDA.
        true_run = ctx.pgd()
        bpda_runs = [ctx.pgd(surrogate=b) for b in ctx.surrogates]
        strongest = min(bpda_runs, key=lambda r: r.accuracy)
        gap = ctx.compare(true_run.correct, strongest.correct)
        numbers["pgd_accuracy"] = {r.label: round(r.accuracy, 4) for r in [true_run, *bpda_runs]}
        numbers["true_minus_bpda"] = gap.to_dict()
        masked = gap.violated

    stats = [numbers[w] for w in points]
    nonfinite = max(
        max(st["ce_nonfinite_fraction"], st["margin_nonfinite_fraction"]) for st in stats
    )
    vanishing = max(st["margin_vanishing_fraction"] for st in stats)
    ce_vanishing = max(st["ce_vanishing_fraction"] for st in stats)
    if nonfinite > 0:
        return verdict(
            "fail",
            f"{nonfinite:.2%} of the gradient entries are NaN or infinite: attacks silently stall "
            "there. Find the layer (a division by zero, log(0), sqrt at 0) and fix it, or attack "
            "through a BPDA substitute, and confirm with gradient-free attacks (Square, SPSA).",
        )
    if vanishing > s.zero_grad_max_fraction:
        return verdict(
            "fail",
            f"The gradient of the margin loss vanishes on {vanishing:.0%} of the points (largest "
            f"entry <= {s.vanishing_atol:g}): shattered or vanishing gradients, e.g. quantisation, "
            "a non-differentiable preprocessing step or a saturated output. Robust accuracy from "
            "gradient attacks means nothing here: attack with BPDA (replace the layer by the "
            "identity in the backward pass) and with gradient-free attacks (Square, SPSA).",
        )
    if masked:
        cosines = {k: v["cosine_median"] for k, v in bpda.items()}
        return verdict(
            "fail",
            f"The true gradient is obfuscated: PGD through it leaves {true_run.accuracy:.1%} "
            f"accuracy, PGD through a BPDA substitute ({strongest.label}) only "
            f"{strongest.accuracy:.1%} (median cosine of the EOT gradients: {cosines}). Only BPDA "
            "attacks measure this model; robust accuracies from true-gradient attacks alone are "
            "overstated.",
        )
    problems = []
    if vanishing > 0:
        problems.append(
            f"the margin-loss gradient vanishes on {vanishing:.0%} of the points (inspect those "
            "points; add BPDA or gradient-free attacks)"
        )
    if ce_vanishing > s.zero_grad_max_fraction:
        problems.append(
            f"the cross-entropy gradient vanishes on {ce_vanishing:.0%} of the points (saturated "
            "softmax): use a margin (C&W) or DLR loss, e.g. AutoAttack's APGD-DLR"
        )
    low = {
        k: v["cosine_median"] for k, v in bpda.items() if v["cosine_median"] < s.bpda_cosine_warn
    }
    if low:
        problems.append(
            f"the true gradient and the BPDA gradient disagree (median cosine {low} after EOT "
            f"over {numbers['bpda_eot']} draws): attack with both (the suites' BPDA-PGD entries), "
            "the true gradient alone may be obfuscated"
        )
    if problems:
        return verdict("warn", "Gradients are finite, but " + "; ".join(problems) + ".")
    return verdict(
        "pass",
        "Input gradients are finite and non-zero on clean and randomly perturbed points"
        + (", and the true and BPDA gradients agree." if bpda else "."),
    )
