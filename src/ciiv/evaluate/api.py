"""``evaluate_robustness``: attack any model that maps [0, 1] images to logits, honestly.

It works on ciiv's own models and on any ``torch.nn.Module`` of the user's (like RobustBench's
benchmark): the attacks query the model itself, the worst case is taken per example over the
suite, and a random model's prediction is counted over R draws (see :mod:`.summary`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ciiv._checks import check_images, check_labels
from ciiv.attacks import (
    RowVerdict,
    assume_rows,
    check_attack_dependencies,
    default_max_batch,
    preserve_mode,
    row_verdict,
)
from ciiv.attacks.threat import check_eps
from ciiv.models.views import MultiView, SupportsBPDA
from ciiv.versions import software_versions

from . import records
from .default_audit import DEFAULT_CHECKS, AuditPlan, plan_audit
from .engine import derive_seed, evaluate_batch, seeded
from .protocols import get_protocol
from .suites import DEFAULT_EOT, ModelTraits, Suite, format_eps, get_suite, resolve_suite
from .summary import worst_case_stats

__all__ = [
    "DEFAULT_DRAWS",
    "EvaluationResult",
    "ProgressFn",
    "detect_traits",
    "evaluate_robustness",
]

logger = logging.getLogger(__name__)

# Prediction draws per input for a random model (R). Each draw is one forward pass of the deployed
# model; an example counts as correct only if all R draws are.
DEFAULT_DRAWS = 10
SCHEMA = "ciiv.eval/1"

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


class EvaluationResult:
    """What :func:`evaluate_robustness` returns: the summary, the rows and where they were written.

    ``to_dict()`` is the content of ``summary.json``; the main numbers are also attributes.
    """

    def __init__(self, summary: dict[str, Any], rows: list[dict], out_dir: Path | None) -> None:
        self.summary = summary
        self.rows = rows
        self.out_dir = out_dir

    def __repr__(self) -> str:
        return (
            f"EvaluationResult(suite={self.summary['suite']!r}, protocol={self.protocol!r}, "
            f"clean={self.clean_accuracy:.4f}, robust={self.robust_accuracy:.4f}, "
            f"n={self.n_examples})"
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.summary)

    @property
    def clean_accuracy(self) -> float:
        return self.summary["clean_accuracy"]

    @property
    def robust_accuracy(self) -> float:
        return self.summary["robust_accuracy"]

    @property
    def per_attack(self) -> dict[str, float]:
        return self.summary["per_attack"]

    @property
    def protocol(self) -> str:
        return self.summary["protocol"]

    @property
    def eot(self) -> int:
        return self.summary["eot"]

    @property
    def n_examples(self) -> int:
        return self.summary["n_examples"]

    @property
    def forward_passes(self) -> int:
        return self.summary["forward_passes"]


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


def _check_inputs(x: Tensor, y: Tensor) -> None:
    check_images(x, nonempty=True)
    check_labels(y, x.shape[0])


@torch.no_grad()
def _check_outputs(model: nn.Module, x: Tensor, y: Tensor) -> tuple[int, int]:
    """One forward pass on a few examples x [b, C, H, W]: the labels y [N] must index the model's
    logits [b, K], and outputs that look like probabilities (in [0, 1], rows summing to 1) get a
    warning, as AutoAttack's checks give: a softmax output saturates, so gradient attacks stall
    and the model looks more robust than it is. Returns (b, K): the images it sent through and
    the number of classes."""
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


def _model_device(model: nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def _dist() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _model_info(model: nn.Module, traits: ModelTraits) -> dict[str, Any]:
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "stochastic": traits.stochastic,
        "views": traits.views,
        "num_views": model.num_views if isinstance(model, MultiView) else None,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


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
) -> EvaluationResult:
    """Evaluate ``model`` on (x, y) against an attack suite; per-example worst case over R draws.

    Args:
        model: maps pixels [B, C, H, W] in [0, 1] to logits [B, K] (optionally ``predict(x)`` for
            its own inference rule and ``stochastic``); it stays on its device, and x is moved
            there batch by batch. Its train/eval flags are restored afterwards.
        x: images [N, C, H, W], float in [0, 1]; y: labels [N], integer.
        suite: a suite name (:func:`~ciiv.evaluate.list_suites`), a :class:`Suite` or a mapping.
        protocol: "full" (attacks query the evaluated function with EOT) or "paper" (centre view).
        eps: overrides the suite's budget (float or "8/255"); None uses the suite's for
            ``dataset``.
        eot: E, gradient samples per step under the full protocol (None: DEFAULT_EOT). A
            deterministic model always gets 1.
        draws: R, prediction draws per input for a random model (None: DEFAULT_DRAWS); 1 for a
            deterministic model.
        seed: fixes every random draw (per batch, derived from the seed and the batch index).
        batch_size: examples per batch (the unit of resumption).
        out_dir: where ``examples.jsonl``, ``batches.jsonl``, ``config.json`` and
            ``summary.json`` go; an interrupted evaluation resumes there. None keeps it in memory.
        dataset: dataset name choosing the suite's budget (e.g. "mnist" -> 0.3 for Linf).
        indices: per example, its index in the source split (written to the rows); default 0..N-1.
        max_batch: most images per model call inside the gradient attacks (None: the device's
            fastest, :func:`ciiv.attacks.default_max_batch`: 64 on the CPU, all E * B rows of an
            EOT step in one call on a GPU).
        audit: True (the default) runs the default audit when the model is random: the
            randomness and gradient-health checks (:mod:`ciiv.evaluate.default_audit`) on at
            most the first ``audit_examples`` examples, sized to cost at most the suite's
            forward passes, stored as ``summary["audit"]``; a deterministic model gets none (a
            note). False runs none. A mapping (an audit result computed before, e.g. for the
            other protocol) is stored as is.
        overwrite: delete earlier results in ``out_dir`` instead of resuming.
        run_info: extra facts stored as ``summary["run"]`` (the command passes the run's). Its
            ``"model"`` entry, if any (e.g. ``ciiv.models.external.describe_user_model(...)``),
            also goes into ``config.json``: resuming with another model is refused.
        progress: optional callback, see :data:`ProgressFn`.

    Returns:
        An :class:`EvaluationResult` (``to_dict()`` = summary.json). Under torch.distributed
        batches are split across ranks; every rank gets the merged summary, rank 0 all the rows
        and the other ranks their own.

    Raises:
        ValueError: bad inputs (labels outside the model's classes, an eps out of range for the
            norm), an unknown suite/protocol, an ``out_dir`` that cannot be created or that holds
            an evaluation with different settings (pass ``overwrite=True`` or another directory).
    """
    _check_inputs(x, y)
    started = time.perf_counter()
    suite_obj = get_suite(suite)
    proto_requested = get_protocol(protocol)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    e = DEFAULT_EOT if eot is None else eot
    n = x.shape[0]
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    if len(indices) != n:
        raise ValueError(f"indices has {len(indices)} entries for {n} examples")
    device = _model_device(model)
    max_batch = default_max_batch(device) if max_batch is None else max_batch
    y = y.long()
    rank, world = _dist()

    sample = x[: min(n, 8)].to(device)
    with seeded(derive_seed(seed, "traits"), device):
        traits = detect_traits(model, sample)
        checked, num_classes = _check_outputs(model, sample, y)
        checked *= world
        # How the model's draws may go through it (ciiv.attacks.draws): measured once, here.
        layout = row_verdict(model, sample, stochastic=traits.stochastic, seed=seed)
    detection = 0 if getattr(model, "stochastic", None) is not None else 2 * len(sample)
    detection = (detection + layout.forward_passes) * world
    if not layout.independent:
        logger.info("%s: %s", type(model).__name__, layout.describe())
    proto = proto_requested.effective(traits)
    r = (DEFAULT_DRAWS if draws is None else int(draws)) if traits.stochastic else 1
    if r < 1:
        raise ValueError(f"draws must be >= 1, got {draws!r}")
    attacks, skipped, budget = resolve_suite(
        suite_obj, protocol=proto.name, traits=traits, dataset=dataset, eps=eps, eot=e
    )
    check_eps(suite_obj.norm, budget, tuple(x.shape[1:]))
    # Before anything is written: an attack whose package is missing stops the run here.
    check_attack_dependencies(a.attack for a in attacks)
    for name, reason in skipped.items():
        logger.info("skipping %s: %s", name, reason)
    config = {
        "schema": SCHEMA,
        "suite": suite_obj.to_dict(),
        "protocol": proto_requested.name,
        "eot": e if traits.stochastic else 1,
        "draws": r,
        "seed": int(seed),
        "batch_size": batch_size,
        "budget": budget,
        "dataset": dataset,
        "attacks": {a.name: a.describe() for a in attacks},
        "n_examples": n,
        "examples_digest": records.examples_digest(x, y, indices),
        "max_batch": max_batch,
    }
    if run_info and run_info.get("model") is not None:
        # What identifies the model (a user model's spec and weights digest): a resumed
        # evaluation must be of the same model.
        config["model"] = run_info["model"]
    out = None if out_dir is None else Path(out_dir)
    done_rows: dict[int, list[dict]] = {}
    done_records: dict[int, dict] = {}
    writer = None
    if out is not None:
        records.create_dir(out)
        if overwrite and rank == 0:
            records.remove_results(out)
        _barrier(world)
        records.check_config(out, config, "an evaluation", write=rank == 0)
        done_rows, done_records = records.load_done(out)
        writer = records.BatchWriter(out if world == 1 else out / records.SHARDS / f"rank{rank}")

    num_batches = (n + batch_size - 1) // batch_size
    mine = [b for b in range(num_batches) if b % world == rank]
    done = sum(b in done_records for b in mine)
    if done:
        logger.info("resuming: %d of %d batches done (in %s)", done, len(mine), out)
    planned = _planned_passes(attacks, n, r) + checked + detection
    audit_plan = _plan_default_audit(
        audit, model, traits, layout, suite_obj.norm, budget, n, audit_examples, planned, max_batch
    )
    if progress:
        progress(
            "plan",
            {
                "examples": n,
                "batches": len(mine),
                "done": done,
                "forward_passes": {
                    "suite": planned,
                    "audit": None if audit_plan is None else audit_plan.bound,
                },
                "audit": None if audit_plan is None else ", ".join(DEFAULT_CHECKS),
            },
        )
        progress("start", {"total": len(mine), "done": done})
    rows_by_batch = {b: done_rows[b] for b in mine if b in done_records}
    records_by_batch = {b: done_records[b] for b in mine if b in done_records}
    computed = 0
    with preserve_mode(model), assume_rows(model, layout):
        for b in mine:
            if b in records_by_batch:
                continue
            lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
            batch_rows, record = evaluate_batch(
                model,
                x[lo:hi].to(device),
                y[lo:hi].to(device),
                batch=b,
                positions=list(range(lo, hi)),
                indices=indices[lo:hi],
                attacks=attacks,
                protocol=proto,
                draws=r,
                seed=seed,
                max_batch=max_batch,
                on_attack=(lambda name, b=b: progress("attack", _attack_info(b, name, attacks)))
                if progress
                else None,
                on_step=(
                    lambda name, step, steps, b=b: progress(
                        "step", {"batch": b, "name": name, "step": step, "steps": steps}
                    )
                )
                if progress
                else None,
            )
            record["device"] = str(device)
            if writer is not None:
                writer.write(batch_rows, record)
            rows_by_batch[b], records_by_batch[b] = batch_rows, record
            computed += 1
            if progress:
                seen = [row for rows in rows_by_batch.values() for row in rows]
                progress(
                    "batch",
                    {
                        "batch": b,
                        "done": len(records_by_batch),
                        "total": len(mine),
                        "robust": sum(row["robust"] for row in seen),
                        "seen": len(seen),
                    },
                )
                if computed == 1:
                    remaining = len(mine) - len(records_by_batch)
                    progress("estimate", _estimate(record, remaining, audit_plan))

    all_rows = [row for b in sorted(rows_by_batch) for row in rows_by_batch[b]]
    all_records = [records_by_batch[b] for b in sorted(records_by_batch)]
    if world > 1:
        all_rows, all_records = _gather(all_rows, all_records, world)
    summary = None
    if rank == 0:
        if out is not None and (world > 1 or (out / records.SHARDS).exists()):
            # Rows of other ranks (or of an earlier multi-process run) go into the merged files.
            records.write_merged(out, all_rows, all_records)
        summary = _summarise(
            all_rows,
            all_records,
            config=config,
            suite=suite_obj,
            attacks=attacks,
            skipped=skipped,
            traits=traits,
            proto_note=proto_requested.note(traits),
            model=model,
            device=device,
            run_info=run_info,
            elapsed=time.perf_counter() - started,
            checked=checked,
            num_classes=num_classes,
            detection=detection,
        )
        summary["randomness"] = {
            "stochastic": traits.stochastic,
            "rows": layout.to_dict(),
            "draws": (
                "stacked: the EOT and prediction draws of an example share model calls"
                if layout.independent
                else "one call per draw: each model call holds one draw of each example"
            ),
            "seeded_generators": ["torch", "random", "numpy"],
        }
        if isinstance(audit, Mapping):
            summary["audit"] = dict(audit)
        elif audit:
            t0 = time.perf_counter()
            summary["audit"] = _default_audit(
                model,
                x,
                y,
                device,
                traits,
                layout,
                suite_obj.norm,
                budget,
                seed,
                audit_examples,
                summary["forward_passes"],
                max_batch,
                progress,
            )
            summary["elapsed_s"] += time.perf_counter() - t0
        if out is not None:
            records.write_json_atomic(out / records.SUMMARY, summary)
    summary = _share(summary, world)
    return EvaluationResult(summary, sorted(all_rows, key=lambda r: r["position"]), out)


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _gather(rows: list[dict], recs: list[dict], world: int) -> tuple[list[dict], list[dict]]:
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, (rows, recs))
    return (
        [row for part in gathered for row in part[0]],
        [rec for part in gathered for rec in part[1]],
    )


def _share(summary: dict[str, Any] | None, world: int) -> dict[str, Any]:
    """Rank 0's summary on every rank."""
    if world > 1:
        holder = [summary]
        torch.distributed.broadcast_object_list(holder, src=0)
        summary = holder[0]
    return summary


def _summarise(
    rows: list[dict],
    recs: list[dict],
    *,
    config: dict[str, Any],
    suite: Suite,
    attacks: list,
    skipped: dict[str, str],
    traits: ModelTraits,
    proto_note: str,
    model: nn.Module,
    device: torch.device,
    run_info: Mapping[str, Any] | None,
    elapsed: float,
    checked: int,
    num_classes: int,
    detection: int,
) -> dict[str, Any]:
    chain = [a.name for a in attacks if a.worst_case]
    standalone = [a.name for a in attacks if not a.worst_case]
    draws = config["draws"]
    entries = [(a.name, a.worst_case, a.worst_case or a.in_threat_model) for a in attacks]
    stats = worst_case_stats(rows, entries, draws)
    passes: dict[str, int] = {
        "output_check": checked,
        "randomness_detection": detection,
        "predictions": 0,
    }
    attacked: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for rec in recs:
        for name, count in rec["forward_passes"].items():
            passes[name] = passes.get(name, 0) + count
        for name, count in rec["attacked"].items():
            attacked[name] = attacked.get(name, 0) + count
        for name, value in rec["elapsed"].items():
            seconds[name] = seconds.get(name, 0.0) + value
    first = recs[0]["settings"] if recs else {}
    # Attack seeds differ per batch; the summary gives the rule, examples.jsonl's batches the rest.
    settings = {
        name: {**value, "seed": "derive_seed(seed, 'attack', batch, name)"}
        if "seed" in value
        else dict(value)
        for name, value in first.items()
    }
    details = {}
    for spec in attacks:
        block = stats["attacks"][spec.name]
        details[spec.name] = {
            **spec.describe(),
            "role": "worst_case" if spec.worst_case else "standalone",
            "counts_for_worst_case": spec.worst_case or spec.in_threat_model,
            "accuracy": block["accuracy"],
            "ci95": block["ci95"],
            "per_draw": block["per_draw"],
            "attacked": attacked.get(spec.name, 0),
            "newly_broken": stats["broken_by"].get(spec.name),
            "forward_passes": passes.get(spec.name, 0),
            "elapsed_s": seconds.get(spec.name, 0.0),
        }
    clean, robust = stats["clean"], stats["robust"]
    eot_used = {a.name: int(a.hyper["eot"]) for a in attacks if "eot" in a.hyper}
    return {
        "schema": SCHEMA,
        "suite": suite.name,
        "suite_description": suite.description,
        "threat_model": {
            "norm": suite.norm,
            "eps": config["budget"],
            "eps_label": format_eps(config["budget"]),
        },
        "protocol": config["protocol"],
        "protocol_note": proto_note,
        # The EOT the attacks used (under the paper protocol most take 1 whatever E was asked).
        "eot": max(eot_used.values(), default=1),
        "eot_requested": config["eot"],
        "eot_by_attack": eot_used,
        "draws": draws,
        "rule": (
            "an example is correct under an input only if all `draws` predictions are correct; "
            "robust = correct on clean input and under every worst-case attack; the worst-case "
            "chain attacks only the points still standing"
        ),
        "n_examples": len(rows),
        "seed": config["seed"],
        "batch_size": config["batch_size"],
        "dataset": config["dataset"],
        "num_classes": num_classes,  # the model's K: chance accuracy is 1 / K
        "clean_accuracy": clean["accuracy"],
        "clean_accuracy_ci95": clean["ci95"],
        "clean_accuracy_per_draw": clean["per_draw"],
        "robust_accuracy": robust["accuracy"],
        "robust_accuracy_ci95": robust["ci95"],
        "robust_accuracy_per_draw": robust["per_draw"],
        "per_attack": {name: block["accuracy"] for name, block in stats["attacks"].items()},
        "worst_case_chain": chain,
        "standalone": standalone,
        "broken_by": stats["broken_by"],
        "attacks": details,
        "skipped_attacks": skipped,
        "attack_settings": settings,
        "forward_passes": sum(passes.values()),
        "forward_passes_by_source": passes,
        "model": _model_info(model, traits),
        "run": dict(run_info) if run_info else None,
        "examples_digest": config["examples_digest"],
        "versions": software_versions(device),
        "elapsed_s": sum(rec["elapsed_s"] for rec in recs),
        "wall_s_this_session": elapsed,
    }


def _attack_info(batch: int, name: str, attacks: list) -> dict[str, Any]:
    """The "attack" progress event's info."""
    names = [a.name for a in attacks]
    return {"batch": batch, "name": name, "index": names.index(name), "attacks": len(names)}


def _planned_passes(attacks: list, n: int, draws: int) -> int:
    """Upper bound on the suite's forward passes: every attack on every example, R prediction
    draws on the clean points and after every attack."""
    return n * (draws + sum(a.queries_per_example() + draws for a in attacks))


def _plan_default_audit(
    audit: bool | Mapping[str, Any],
    model: nn.Module,
    traits: ModelTraits,
    layout: RowVerdict,
    norm: str,
    eps: float,
    n: int,
    audit_examples: int,
    budget: int,
    max_batch: int | None,
) -> AuditPlan | None:
    """The default audit that will run (sized to ``budget``, the suite's planned passes), or None
    when none will: a precomputed or disabled audit, a deterministic model, a zero budget."""
    if isinstance(audit, Mapping) or not audit or not traits.stochastic or eps <= 0:
        return None
    bpda = isinstance(model, SupportsBPDA)
    return plan_audit(
        eps,
        norm,
        available=min(audit_examples, n),
        budget=budget,
        surrogates=2 if bpda else 0,
        rows_measured=layout.source == "measured",
        batch_size=max_batch,
    )


def _estimate(record: dict[str, Any], remaining: int, audit_plan: AuditPlan | None) -> dict:
    """Seconds left, extrapolated from the first batch computed this session."""
    seconds = record["elapsed_s"]
    images = sum(record["forward_passes"].values())
    rate = images / seconds if seconds > 0 else float("inf")
    audit_s = None if audit_plan is None else audit_plan.bound / rate
    return {
        "batch_s": seconds,
        "images_per_s": rate,
        "suite_s": seconds * remaining,
        "audit_s": audit_s,
    }


def _default_audit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    device: torch.device,
    traits: ModelTraits,
    layout: RowVerdict,
    norm: str,
    eps: float,
    seed: int,
    audit_examples: int,
    suite_passes: int,
    max_batch: int | None,
    progress: ProgressFn | None,
) -> dict[str, Any]:
    """The default audit's result as a dict (:mod:`.default_audit`), or why none ran."""
    if not traits.stochastic:
        return {
            "passed": None,
            "detail": "not run: the model is deterministic (the default audit checks random "
            "models; `ciiv audit` audits any model)",
        }
    if eps <= 0:
        return {"passed": None, "detail": "not run: the budget is 0"}
    plan = _plan_default_audit(
        True, model, traits, layout, norm, eps, x.shape[0], audit_examples, suite_passes, max_batch
    )
    if plan is None:
        return {"passed": None, "detail": "not run: the audit needs at least 2 examples"}
    from .audit import audit, check_events

    events = None
    if progress:
        sizes = {"examples": plan.n, "forward_passes": plan.bound}
        events = check_events(lambda info: progress("audit", {**info, **sizes}), DEFAULT_CHECKS)
    with preserve_mode(model), assume_rows(model, layout):
        result = audit(
            model,
            x[: plan.n].to(device),
            y[: plan.n].to(device),
            eps=eps,
            norm=norm,
            quick=True,
            seed=seed,
            checks=DEFAULT_CHECKS,
            progress=events,
            **plan.overrides,
        )
    return {**result.to_dict(), "default": plan.to_dict()}
