"""Check 9, evaluation bookkeeping: every adversarial point the audit produced (at least the
declared white-box baseline, which it runs itself) is finite, in [0, 1] and inside its ball; every
attack queried the function that was evaluated, counted its queries, recorded its settings and
restored the model's modes; the model predicts with the function the attacks differentiate (all
views, a ``predict`` rule that agrees with ``forward``)."""

from __future__ import annotations

import json
from functools import partial

from ciiv.attacks import get_threat_model
from ciiv.attacks.base import ball_tolerance, excess
from ciiv.models import CentreView, MultiView

from ..engine import draw_predictions
from .base import CheckResult, register_check
from .context import AttackRun, AuditContext

# Attacks that never query the target model: noise draws, and transfer (it queries a surrogate).
_QUERY_FREE = ("gaussian_noise", "uniform_noise", "transfer")


def _run_problems(run: AttackRun) -> tuple[list[str], list[str]]:
    """(hard problems, soft problems) of one run."""
    hard, soft = [], []
    x, x_adv = run.x, run.x_adv
    if x_adv.shape != x.shape or x_adv.dtype != x.dtype:
        hard.append(f"x_adv has shape {tuple(x_adv.shape)} {x_adv.dtype}, not x's")
        return hard, soft
    # The attacks' own contract (ciiv.attacks.base.check_output): no slack on the box, rounding
    # slack only on the ball.
    nonfinite, box, ball = excess(get_threat_model(run.norm, run.eps), x_adv, x)
    if nonfinite:
        hard.append(f"x_adv has {nonfinite} NaN/inf value(s)")
    if box > 0:
        hard.append(f"x_adv leaves [0, 1] by up to {box:.4g}")
    if ball > ball_tolerance(run.eps, x.dtype):
        hard.append(
            f"perturbation {run.eps + ball:.6g} exceeds the {run.norm} budget {run.eps:.6g}"
        )
    if not run.mode_restored:
        hard.append("the model's train/eval modes were not restored")
    settings = run.settings
    try:
        json.dumps(settings)
    except TypeError as err:
        soft.append(f"settings are not JSON-serialisable ({err})")
    if "seed" not in settings:
        soft.append("settings do not record the seed")
    eps = settings.get("eps")
    if eps is None or abs(float(eps) - run.eps) > 1e-9 * max(1.0, run.eps):
        soft.append(f"settings record eps {eps!r}, the audit asked for {run.eps:.6g}")
    if run.attack not in _QUERY_FREE:
        if run.queried == 0:
            hard.append(
                "the attack never queried the model it was given (it attacked another function)"
            )
        elif run.forward_passes != run.queried:
            soft.append(
                f"forward_passes says {run.forward_passes} images, the model saw {run.queried}"
            )
    return hard, soft


@register_check(
    "bookkeeping",
    order=90,
    summary="points in the ball and in [0, 1]; the attacked function is the evaluated one",
)
def bookkeeping(ctx: AuditContext) -> CheckResult:
    ctx.white_box()  # something to check when it runs alone
    found = [(run.label, *_run_problems(run)) for run in ctx.runs.values()]
    hard = {label: h for label, h, _ in found if h}
    soft = {label: s for label, _, s in found if s}
    numbers: dict = {
        "runs_checked": len(ctx.runs),
        "forward_passes_total": sum(r.forward_passes for r in ctx.runs.values()),
        "max_distance_over_eps": max(
            (get_threat_model(r.norm, r.eps).distance(r.x_adv, r.x).max().item() / r.eps)
            for r in ctx.runs.values()
        ),
    }
    verdict = partial(CheckResult, "bookkeeping", numbers=numbers)
    model = ctx.model
    # CiiV's sampler holds every view the model was built with (CentreView's is its model's).
    sampler = getattr(model.model if isinstance(model, CentreView) else model, "sampler", None)
    if sampler is not None and isinstance(model, MultiView):
        numbers["views_evaluated"] = model.num_views
        numbers["views_of_sampler"] = sampler.num_views
        if model.num_views < sampler.num_views:
            soft.setdefault("model", []).append(
                f"the model runs {model.num_views} of its sampler's {sampler.num_views} views: "
                "attacks on it are the paper's protocol, not the deployed function (audit the "
                "model itself, not CentreView(model), with model.num_views at the sampler's)"
            )
    if callable(getattr(model, "predict", None)):
        # Attacks differentiate forward(); accuracy counts predict(). Compare their agreement
        # with the agreement of two forward passes (the model's own randomness).
        predicted = draw_predictions(model, ctx.x, 1, ctx.settings.batch_size)[0]
        forward, again = (ctx.logits(ctx.x).argmax(1) for _ in range(2))
        agree_pf, agree_ff = (predicted == forward)[None], (forward == again)[None]
        cmp = ctx.compare(agree_ff, agree_pf)
        numbers["predict_forward_agreement"] = round(agree_pf.float().mean().item(), 4)
        numbers["forward_forward_agreement"] = round(agree_ff.float().mean().item(), 4)
        if cmp.violated:
            soft.setdefault("model", []).append(
                f"predict() agrees with forward()'s argmax on only "
                f"{numbers['predict_forward_agreement']:.0%} of clean inputs: the attacks "
                "maximise a loss of a different function than the one evaluated; attack the "
                "prediction rule itself (e.g. EOT over its draws)"
            )
    numbers["problems"] = hard
    numbers["notes"] = soft
    if hard:
        first = next(iter(hard.items()))
        return verdict(
            "fail",
            f"{len(hard)} attack run(s) broke the evaluation contract, e.g. {first[0]}: "
            f"{first[1][0]}. Fix the attack (its projection, clamping, mode handling or the model "
            "it queries) before reporting any number.",
        )
    if soft:
        first = next(iter(soft.items()))
        return verdict(
            "warn",
            f"Points are valid, but the records are incomplete or inconsistent, e.g. {first[0]}: "
            f"{first[1][0]}.",
        )
    return verdict(
        "pass",
        f"All {len(ctx.runs)} attack runs returned finite points in [0, 1] inside their ball "
        f"(largest distance {numbers['max_distance_over_eps']:.3f} x eps), queried the evaluated "
        "function, counted their queries, recorded their settings and restored the model's modes.",
    )
