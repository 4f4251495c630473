"""``evaluate_robustness``: attack any model that maps [0, 1] images to logits, honestly.

It works on ciiv's own models and on any ``torch.nn.Module`` of the user's (like RobustBench's
benchmark): the attacks query the model itself, the worst case is taken per example over the
suite, and a random model's prediction is counted over R draws (see :mod:`.summary`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ciiv import distributed
from ciiv._checks import check_images, check_labels
from ciiv.attacks import (
    assume_rows,
    check_attack_dependencies,
    default_max_batch,
    inputs_checked_once,
    preserve_mode,
    row_verdict,
)
from ciiv.attacks.threat import check_eps
from ciiv.models.views import MultiView, SupportsBPDA

from .default_audit import DEFAULT_CHECKS, AuditPlan, plan_audit
from .engine import derive_seed, evaluate_batch, seeded
from .protocols import get_protocol
from .records import Batches, examples_digest, model_digest
from .settings import DEFAULT_DRAWS, SCHEMA, EvalPlan, EvalSettings
from .suites import DEFAULT_EOT, ModelTraits, Suite, resolve_suite
from .summary import build_summary

__all__ = ["EvaluationResult", "ProgressFn", "detect_traits", "evaluate_robustness"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, dict[str, Any]], None]
"""``progress(event, info)``: "plan" {examples, batches, done, forward_passes: {suite, audit},
audit} before the batches (forward passes are upper bounds: every attack on every example; audit
None when none runs); "start" {total, done} (batches of this process); "attack" {batch, name,
index, attacks} before each attack of a batch (``index`` of ``attacks``, from 0); "step" {batch,
name, step, steps} after each iteration of an iterative attack; "batch" {batch, done, total,
robust, seen} after each batch; "estimate" {batch_s, images_per_s, suite_s, audit_s} once after
the first batch this session computed (seconds left, extrapolated from that batch); "audit"
{check, status, done, total, examples, forward_passes} before (status None) and after each
check of the default audit."""


def _from_summary(key: str) -> property:
    """A read-only attribute that is ``summary[key]``."""
    return property(lambda self: self.summary[key], doc=f"``summary[{key!r}]``")


class EvaluationResult:
    """What :func:`evaluate_robustness` returns: the summary (``to_dict()``, the content of
    ``summary.json``; the main numbers are also attributes), the rows and where they went."""

    def __init__(self, summary: dict[str, Any], rows: list[dict], out_dir: Path | None) -> None:
        self.summary, self.rows, self.out_dir = summary, rows, out_dir

    def __repr__(self) -> str:
        return (
            f"EvaluationResult(suite={self.summary['suite']!r}, protocol={self.protocol!r}, "
            f"clean={self.clean_accuracy:.4f}, robust={self.robust_accuracy:.4f}, "
            f"n={self.n_examples})"
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.summary)

    clean_accuracy = _from_summary("clean_accuracy")
    robust_accuracy = _from_summary("robust_accuracy")
    per_attack = _from_summary("per_attack")
    protocol = _from_summary("protocol")
    eot = _from_summary("eot")
    n_examples = _from_summary("n_examples")
    forward_passes = _from_summary("forward_passes")


def detect_traits(model: nn.Module, x: Tensor) -> ModelTraits:
    """Whether ``model`` is random and whether it has views (:class:`~ciiv.models.MultiView`).

    A model that declares ``stochastic`` is believed; otherwise two forward passes on x (a few
    examples) decide: any difference in the logits makes it random.
    """
    views = isinstance(model, MultiView)
    declared = getattr(model, "stochastic", None)
    if declared is not None:
        return ModelTraits(stochastic=bool(declared), views=views)
    with torch.no_grad(), preserve_mode(model):
        first, second = model(x), model(x)
    return ModelTraits(stochastic=not torch.equal(first, second), views=views)


@torch.no_grad()
def _check_outputs(model: nn.Module, x: Tensor, y: Tensor) -> tuple[int, int]:
    """One pass on a few examples x [b, C, H, W]: logits [b, K] that the labels y index, and a
    warning (as AutoAttack gives) for probabilities, whose saturated softmax stalls gradient
    attacks. Returns (b, K)."""
    with preserve_mode(model):
        out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits [B, K]; it returned {shape}")
    classes, low, high = out.shape[1], int(y.min()), int(y.max())
    if low < 0 or high >= classes:
        raise ValueError(
            f"labels range over {low}..{high}, but the model has {classes} classes (valid labels: "
            f"0..{classes - 1})"
        )
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    if in_unit and bool(((out.sum(1) - 1).abs() < 1e-4).all()):
        logger.warning(
            "the model's outputs look like probabilities (in [0, 1], each row summing to 1): "
            "attacks need logits, and a softmax output hides gradients, which overstates "
            "robustness; return the scores before the softmax"
        )
    return x.shape[0], classes


def evaluate_robustness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    suite: str | Suite | Mapping[str, Any] = "standard-linf",
    protocol: str = "full",
    eps: float | str | None = None,
    eot: int | None = None,
    draws: int | None = None,
    seed: int = 0,
    batch_size: int = 128,
    out_dir: str | Path | None = None,
    dataset: str | None = None,
    indices: list[int] | None = None,
    max_batch: int | None = None,
    audit: bool | Mapping[str, Any] = True,
    audit_examples: int = 100,
    overwrite: bool = False,
    run_info: Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
    settings: EvalSettings | None = None,
) -> EvaluationResult:
    """Evaluate ``model`` on (x, y) against an attack suite; per-example worst case over R draws.

    Three steps: plan (traits, resolved settings and attacks, the audit's size), run the batches
    (resumable, split across torch.distributed ranks: :class:`.records.Batches`), summarise.

    Args:
        model: maps pixels [B, C, H, W] in [0, 1] to logits [B, K] (optionally ``predict(x)`` for
            its own inference rule and ``stochastic``); it stays on its device, and x is moved
            there batch by batch. Its train/eval flags are restored afterwards.
        x: images [N, C, H, W], float in [0, 1]; y: labels [N], integer.
        suite, protocol, eps, eot, draws, seed, batch_size, dataset, max_batch, audit_examples:
            the fields of :class:`EvalSettings` (see there).
        out_dir: where ``examples.jsonl``, ``batches.jsonl``, ``config.json`` and
            ``summary.json`` go; an interrupted evaluation resumes there. None keeps it in memory.
        indices: per example, its index in the source split (written to the rows); default 0..N-1.
        audit: True (the default) stores the default audit of a random model
            (:mod:`ciiv.evaluate.default_audit`; a note for a deterministic one) as
            ``summary["audit"]``; False runs none; a mapping (an audit result computed before,
            e.g. for the other protocol) is stored as is.
        overwrite: delete earlier results in ``out_dir`` instead of resuming.
        run_info: extra facts stored as ``summary["run"]`` (the command passes the run's). Its
            ``"model"`` entry, if any (e.g. ``ciiv.models.external.describe_user_model(...)``),
            also goes into ``config.json``: resuming with another model is refused.
        progress: optional callback, see :data:`ProgressFn`.
        settings: the settings as one :class:`EvalSettings`, instead of the keyword arguments
            above (which must then keep their defaults; ``audit`` may still be a mapping).

    Returns:
        An :class:`EvaluationResult` (``to_dict()`` = summary.json). Under torch.distributed
        every rank gets the merged summary and all the rows.

    Raises:
        ValueError: bad inputs (labels, eps), an unknown suite/protocol, an ``out_dir`` that cannot
            be created or that holds an evaluation with other settings.
    """
    started = time.perf_counter()
    precomputed = dict(audit) if isinstance(audit, Mapping) else None
    keywords = EvalSettings(
        suite=suite,
        protocol=protocol,
        eps=eps,
        eot=eot,
        draws=draws,
        seed=seed,
        batch_size=batch_size,
        max_batch=max_batch,
        dataset=dataset,
        audit=precomputed is not None or bool(audit),
        audit_examples=audit_examples,
    )
    if settings is not None and keywords != EvalSettings():
        raise ValueError("pass settings=EvalSettings(...) or the keyword settings, not both")
    check_images(x, nonempty=True)
    check_labels(y, x.shape[0])
    ctx = distributed.current()
    y = y.long()
    settings = keywords if settings is None else settings
    out = None if out_dir is None else Path(out_dir)
    audited = precomputed is None
    plan = _plan(model, x, y, settings, indices, ctx.world_size, audited, run_info, out is not None)
    settings, device, audit_plan, n = plan.settings, plan.device, plan.audit, plan.n
    batches = Batches(out, plan.config, "an evaluation", n, settings.batch_size, ctx, overwrite)
    if batches.done:
        logger.info("resuming: %d of %d batches done (in %s)", batches.done, batches.total, out)
    if progress:
        bound = None if audit_plan is None else audit_plan.bound
        progress(
            "plan",
            {
                "examples": n,
                "batches": batches.total,
                "done": batches.done,
                "forward_passes": {"suite": plan.suite_bound(), "audit": bound},
                "audit": None if audit_plan is None else ", ".join(DEFAULT_CHECKS),
            },
        )
        progress("start", {"total": batches.total, "done": batches.done})

    def compute(b: int, lo: int, hi: int) -> tuple[list[dict], dict]:
        x_b, y_b = x[lo:hi].to(device), y[lo:hi].to(device)
        rows, record = evaluate_batch(model, x_b, y_b, plan, b, lo, progress)
        return rows, {**record, "device": str(device)}

    def on_batch(b: int) -> None:
        seen = list(batches.seen())
        info = {"batch": b, "done": batches.done, "total": batches.total}
        progress("batch", {**info, "robust": sum(r["robust"] for r in seen), "seen": len(seen)})
        if batches.computed == 1:  # seconds left, extrapolated from this session's first batch
            seconds = batches.records[b]["elapsed_s"]
            images = sum(batches.records[b]["forward_passes"].values())
            rate = images / seconds if seconds > 0 else float("inf")
            estimate = {
                "batch_s": seconds,
                "images_per_s": rate,
                "suite_s": seconds * (batches.total - batches.done),
                "audit_s": None if audit_plan is None else audit_plan.bound / rate,
            }
            progress("estimate", estimate)

    def summarise(rows: list[dict], recs: list[dict]) -> dict[str, Any]:
        info = {
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "stochastic": plan.traits.stochastic,
            "views": plan.traits.views,
            "num_views": model.num_views if isinstance(model, MultiView) else None,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        wall = time.perf_counter() - started
        summary = build_summary(plan, rows, recs, model=info, run_info=run_info, wall=wall)
        if precomputed is not None and settings.audit:
            summary["audit"] = precomputed
        elif settings.audit:
            t0 = time.perf_counter()
            summary["audit"] = _default_audit(
                model, x, y, plan, summary["forward_passes"], progress
            )
            summary["elapsed_s"] += time.perf_counter() - t0
        return summary

    # x was checked above and the model's first call (in _plan) checked its shape, so the model's
    # per-call pixel check is off; the attacks' points are checked by their contract.
    with preserve_mode(model), assume_rows(model, plan.layout), inputs_checked_once(model):
        batches.run(compute, on_batch if progress else None)
    summary, rows = batches.finish(summarise)
    return EvaluationResult(summary, rows, out)


def _plan(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    settings: EvalSettings,
    indices: list[int] | None,
    world_size: int,
    run_audit: bool,
    run_info: Mapping[str, Any] | None,
    written: bool,
) -> EvalPlan:
    """Everything decided before the batches (traits, resolved settings, attacks, config.json,
    the audit's size); raises before anything is written. ``written``: whether config.json goes
    to a directory (only then is the model's digest, a hash of every weight, computed)."""
    n = x.shape[0]
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    if len(indices) != n:
        raise ValueError(f"indices has {len(indices)} entries for {n} examples")
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    sample = x[: min(n, 8)].to(device)
    with seeded(derive_seed(settings.seed, "traits"), device):
        traits = detect_traits(model, sample)
        checked, num_classes = _check_outputs(model, sample, y)
        # How the model's draws may go through it (ciiv.attacks.draws): measured once, here.
        layout = row_verdict(model, sample, stochastic=traits.stochastic, seed=settings.seed)
    detection = 0 if getattr(model, "stochastic", None) is not None else 2 * len(sample)
    passes = {
        "output_check": checked * world_size,
        "randomness_detection": (detection + layout.forward_passes) * world_size,
    }
    if not layout.independent:
        logger.info("%s: %s", type(model).__name__, layout.describe())
    requested = get_protocol(settings.protocol)
    protocol = requested.effective(traits)
    random = traits.stochastic
    settings = dataclasses.replace(
        settings,
        eot=(DEFAULT_EOT if settings.eot is None else settings.eot) if random else 1,
        draws=(DEFAULT_DRAWS if settings.draws is None else settings.draws) if random else 1,
        max_batch=settings.max_batch or default_max_batch(device),
    )
    suite = settings.suite
    attacks, skipped, budget = resolve_suite(
        suite,
        protocol=protocol.name,
        traits=traits,
        dataset=settings.dataset,
        eps=settings.eps,
        eot=settings.eot,
    )
    settings = dataclasses.replace(settings, eps=budget)
    check_eps(suite.norm, budget, tuple(x.shape[1:]))
    # Before anything is written: an attack whose package is missing stops the run here.
    check_attack_dependencies(a.attack for a in attacks)
    for name, reason in skipped.items():
        logger.info("skipping %s: %s", name, reason)
    config = {
        "schema": SCHEMA,
        "settings": settings.to_dict(),
        "attacks": {a.name: a.describe() for a in attacks},
        "n_examples": n,
        "examples_digest": examples_digest(x, y, indices),
    }
    if written:  # guards a resume against other weights; nothing to guard in memory
        config["model_digest"] = model_digest(model)
    if run_info and run_info.get("model") is not None:
        # A user model's spec and weights digest: a resumed evaluation must be of the same model.
        config["model"] = run_info["model"]
    plan = EvalPlan(
        settings=settings,
        protocol=protocol,
        protocol_note=requested.note(traits),
        attacks=attacks,
        skipped=skipped,
        traits=traits,
        layout=layout,
        device=device,
        indices=indices,
        num_classes=num_classes,
        passes=passes,
        audit=None,
        config=config,
    )
    if run_audit:
        plan = dataclasses.replace(plan, audit=_audit_plan(model, plan, plan.suite_bound()))
    return plan


def _audit_plan(model: nn.Module, plan: EvalPlan, budget: int) -> AuditPlan | None:
    """The default audit that will run (sized to ``budget`` forward passes), or None when none
    will: no audit asked for, a deterministic model, a zero budget, fewer than two examples."""
    settings = plan.settings
    if not settings.audit or not plan.traits.stochastic or settings.eps <= 0:
        return None
    return plan_audit(
        settings.eps,
        settings.suite.norm,
        available=min(settings.audit_examples, plan.n),
        budget=budget,
        surrogates=2 if isinstance(model, SupportsBPDA) else 0,
        rows_measured=plan.layout.source == "measured",
        batch_size=settings.max_batch,
    )


def _default_audit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    plan: EvalPlan,
    suite_passes: int,
    progress: ProgressFn | None,
) -> dict[str, Any]:
    """The default audit's dict, sized to the suite's forward passes, or why none ran."""
    audit_plan = _audit_plan(model, plan, suite_passes)
    if audit_plan is None:
        why = "the audit needs at least 2 examples"
        if not plan.traits.stochastic:
            why = "the model is deterministic (the default audit checks random models; `ciiv "
            why += "audit` audits any model)"
        elif plan.settings.eps <= 0:
            why = "the budget is 0"
        return {"passed": None, "detail": f"not run: {why}"}
    from .audit import audit, check_events

    events = None
    if progress:
        sizes = {"examples": audit_plan.n, "forward_passes": audit_plan.bound}
        events = check_events(lambda info: progress("audit", {**info, **sizes}), DEFAULT_CHECKS)
    with preserve_mode(model), assume_rows(model, plan.layout):
        result = audit(
            model,
            x[: audit_plan.n].to(plan.device),
            y[: audit_plan.n].to(plan.device),
            eps=plan.settings.eps,
            norm=plan.settings.suite.norm,
            quick=True,
            seed=plan.settings.seed,
            checks=DEFAULT_CHECKS,
            progress=events,
            **audit_plan.overrides,
        )
    return {**result.to_dict(), "default": audit_plan.to_dict()}
