"""Certification on files: per-example rows written batch by batch, a summary and a plot.

``out_dir`` is laid out and resumed like an evaluation directory (:mod:`ciiv.evaluate.records`;
docs/evaluation.md, "Certification", **Files**). The noise of batch b is seeded from (seed, b)
alone, so a resumed certification equals an uninterrupted one on the same device type.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ciiv import distributed
from ciiv._checks import check_labels
from ciiv.attacks import assume_rows
from ciiv.evaluate.engine import derive_seed
from ciiv.evaluate.records import Batches, examples_digest, model_digest
from ciiv.models import SmoothedClassifier
from ciiv.plotting import pyplot, save_png
from ciiv.versions import software_versions

from .core import ABSTAIN, _check, _device, _rows, base_classifier, certify
from .stats import clopper_pearson

__all__ = [
    "DEFAULT_EXAMPLES",
    "PLOT",
    "RADIUS_STEP",
    "SCHEMA",
    "CertifyResult",
    "certified_at",
    "certify_examples",
    "certify_run",
    "plot_certified_accuracy",
]

logger = logging.getLogger(__name__)

SCHEMA = "ciiv.certify/1"
DEFAULT_EXAMPLES = 500
RADIUS_STEP = 0.25  # the summary's radii: 0, 0.25, 0.5, ... (Cohen et al.'s tables)
PLOT = "certified_accuracy.png"
NOISE = "clip(x + sigma * N(0, I), 0, 1), as in training"
RULE = (
    "certified accuracy at r = fraction of the examples whose certified class is the label with "
    "radius >= r (an abstention is never correct); each certificate holds with probability >= "
    "1 - alpha; intervals are 95 % Clopper-Pearson over examples"
)

ProgressFn = Callable[[str, dict[str, Any]], None]
"""``progress(event, info)``: "start" {total, done}; "batch" {done, total, certified, seen}
(certified = correct and not abstained so far)."""


@dataclass(repr=False)
class CertifyResult:
    """What :func:`certify_examples` returns: ``summary`` (the content of summary.json), ``rows``
    (of examples.jsonl, in example order) and ``out_dir``."""

    summary: dict[str, Any]
    rows: list[dict]
    out_dir: Path | None

    def __repr__(self) -> str:
        curve = ", ".join(
            f"{p['radius']:g}: {p['accuracy']:.3f}" for p in self.summary["certified_accuracy"]
        )
        return f"CertifyResult(sigma={self.summary['sigma']}, n={self.summary['n']}, {curve})"


def certify_examples(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    examples_per_batch: int = 1,
    seed: int = 0,
    out_dir: str | Path | None = None,
    indices: list[int] | None = None,
    overwrite: bool = False,
    run_info: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> CertifyResult:
    """:func:`~ciiv.certify.certify` on (x, y), batch by batch, with rows and a summary.

    Args:
        model, sigma, n0, n, alpha, batch_size: as in :func:`~ciiv.certify.certify`.
        x: [N, C, H, W] in [0, 1]; y: [N] integer labels. Batches are moved to the model.
        examples_per_batch: examples per batch, the unit of resumption (1: the ``time`` of a row
            is that example's own, as in Cohen et al.'s logs; more: the batch's time shared).
        seed: batch b is certified with ``derive_seed(seed, "certify", b)``.
        out_dir: where the files go (see the module docstring); None keeps everything in memory.
            Under torch.distributed the batches are split across the ranks (as in
            :class:`ciiv.evaluate.records.Batches`); every rank gets the summary and the rows.
        indices: per example, its index in the source split (default 0..N-1).
        overwrite: delete earlier results in ``out_dir`` instead of resuming.
        run_info: stored as ``summary["run"]``.
        progress: optional callback, see :data:`ProgressFn`.

    Raises:
        ValueError: bad settings or inputs, or an ``out_dir`` holding other settings.
    """
    started = time.perf_counter()
    counts = {"n0": n0, "n": n, "batch_size": batch_size, "examples_per_batch": examples_per_batch}
    _check(x, sigma, alpha, **counts)  # before anything is written
    n0, n, seed = int(n0), int(n), int(seed)  # NumPy integers too, for the files
    check_labels(y, x.shape[0])
    total = x.shape[0]
    indices = list(range(total)) if indices is None else [int(i) for i in indices]
    if len(indices) != total:
        raise ValueError(f"indices has {len(indices)} entries for {total} examples")
    base = base_classifier(model)
    settings = {
        "schema": SCHEMA,
        "sigma": float(sigma),
        **{key: int(value) for key, value in counts.items()},
        "alpha": float(alpha),
        "seed": int(seed),
        "noise": NOISE,
        "base": f"{type(base).__module__}.{type(base).__qualname__}",
        "n_examples": total,
        "examples_digest": examples_digest(x, y, indices),
        "model_digest": model_digest(base),
    }
    out = None if out_dir is None else Path(out_dir)
    ctx, extra = distributed.current(), (PLOT,)
    batches = Batches(
        out, settings, "a certification", total, examples_per_batch, ctx, overwrite, extra
    )
    if batches.done:
        logger.info("resuming: %d of %d batches done (in %s)", batches.done, batches.total, out)
    device = _device(base, x.device)

    def compute(b: int, lo: int, hi: int) -> tuple[list[dict], dict]:
        batch_seed = derive_seed(seed, "certify", b)
        t0 = time.perf_counter()
        result = certify(model, x[lo:hi].to(device), sigma, n0, n, alpha, batch_size, batch_seed)
        elapsed, size = time.perf_counter() - t0, hi - lo
        prediction, radius = result.prediction.tolist(), result.radius.tolist()
        count, p_lower = result.count.tolist(), result.p_lower.tolist()
        labels = y[lo:hi].tolist()
        rows = [
            {
                "index": indices[lo + i],
                "position": lo + i,
                "batch": b,
                "label": labels[i],
                "prediction": prediction[i],
                "radius": radius[i],
                "correct": prediction[i] == labels[i],
                "count": count[i],
                "n": n,
                "p_lower": p_lower[i],
                "time": elapsed / size,
            }
            for i in range(size)
        ]
        record = {
            "batch": b,
            "size": size,
            "seed": batch_seed,
            "forward_passes": size * (n0 + n),
            "elapsed_s": elapsed,
            "device": str(result.radius.device),
        }
        return rows, record

    def on_batch(b: int) -> None:
        seen = list(batches.seen())
        info = {"certified": sum(row["correct"] for row in seen), "seen": len(seen)}
        progress("batch", {"done": batches.done, "total": batches.total, **info})

    def summarise(rows: list[dict], recs: list[dict]) -> dict[str, Any]:
        total = len(rows)
        correct_radii = sorted(r["radius"] for r in rows if r["correct"])
        largest = max((r["radius"] for r in rows), default=0.0)
        curve = []
        for radius in [k * RADIUS_STEP for k in range(int(largest // RADIUS_STEP) + 1)]:
            accuracy, ci = certified_at(correct_radii, total, radius)
            curve.append({"radius": radius, "accuracy": accuracy, "ci95": ci})
        smoothed = isinstance(model, SmoothedClassifier)
        summary = {
            **{k: v for k, v in settings.items() if k not in ("examples_digest", "n_examples")},
            "n_examples": total,
            "rule": RULE,
            "certified_accuracy": curve,
            "radius_step": RADIUS_STEP,
            # At r = 0, every correct example counts: a certified radius is > 0.
            "accuracy": curve[0]["accuracy"],
            "accuracy_ci95": curve[0]["ci95"],
            "abstain_rate": sum(r["prediction"] == ABSTAIN for r in rows) / total,
            "largest_radius": largest,
            "correct_radii": correct_radii,
            "forward_passes": sum(rec["forward_passes"] for rec in recs),
            "model": {
                "class": f"{type(model).__module__}.{type(model).__qualname__}",
                "smoothed": smoothed,
                "trained_sigma": model.sigma if smoothed else None,
            },
            "run": dict(run_info) if run_info else None,
            "examples_digest": settings["examples_digest"],
            "versions": software_versions(device),
            "elapsed_s": sum(rec["elapsed_s"] for rec in recs),
            "wall_s_this_session": time.perf_counter() - started,
        }
        if out is not None:
            summary["plot"] = PLOT
            plot_certified_accuracy([summary], out / PLOT)
        return summary

    if progress:
        progress("start", {"total": batches.total, "done": batches.done})
    # The spread test once, not per batch: every batch's certify() finds the verdict known.
    with assume_rows(base, _rows(base, x[:8].to(device), seed)):
        batches.run(compute, on_batch if progress else None)
    summary, rows = batches.finish(summarise)
    return CertifyResult(summary, rows, out)


def certified_at(
    correct_radii: Sequence[float], total: int, radius: float
) -> tuple[float, list[float]]:
    """Certified accuracy at L2 ``radius``: the share of the ``total`` examples certified correct
    with a radius >= ``radius``, and its 95 % Clopper-Pearson interval ``[low, high]``."""
    k = sum(r >= radius for r in correct_radii)
    low, high = clopper_pearson(k, total, 0.95)
    return k / total, [float(low), float(high)]


def plot_certified_accuracy(summaries: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Certified accuracy (%) against the L2 radius, one step curve per summary (from its
    ``correct_radii``), as a PNG at ``path``."""
    fig, ax = pyplot().subplots(figsize=(5.5, 3.8))
    right = max((max(s["correct_radii"], default=0.0) for s in summaries), default=0.0)
    right = max(right * 1.05, RADIUS_STEP)
    for s in summaries:
        radii = np.asarray(s["correct_radii"], dtype=np.float64)
        # Accuracy at r counts radii >= r, so it is constant on (r_i, r_{i+1}]: a "pre" step.
        xs = np.concatenate([[0.0], radii, [right]])
        ys = [100 * (radii >= r).sum() / s["n_examples"] for r in xs]
        run = s.get("run") or {}
        name = f"{run.get('method', 'model')} ({Path(run.get('run_dir', '.')).name})"
        ax.step(xs, ys, where="pre", label=f"{name} sigma={s['sigma']:g} n={s['n']}")
    ax.set_xlabel("L2 radius (pixels in [0, 1])")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_xlim(0, right)
    ax.set_ylim(-2, 102)
    ax.set_title("certified L2 accuracy of the smoothed classifier")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_png(fig, path)


def certify_run(
    run_dir: str | Path,
    *,
    sigma: float | None = None,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    n_examples: int = DEFAULT_EXAMPLES,
    batch_size: int = 1000,
    examples_per_batch: int = 1,
    seed: int = 0,
    out_dir: str | Path | None = None,
    checkpoint: str = "best",
    device: str | torch.device | None = "auto",
    data_dir: str | Path | None = None,
    test_split: str | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> CertifyResult:
    """Certify a run of ``ciiv train`` on the examples ``ciiv eval`` would evaluate.

    An ``rs`` run is certified with its own sigma unless ``sigma`` is given; any other run needs
    ``sigma`` (its model becomes the base classifier of a new smoothed classifier, not the model
    the run deploys). The examples: ``evaluation_examples`` (:mod:`ciiv.evaluate.selection`).
    Results go to ``RUN_DIR/certify/sigma<S>-n<N>/`` unless ``out_dir`` is given; see
    :func:`certify_examples`.

    Raises:
        ValueError: a run that is not ``rs`` without ``sigma``, bad settings.
        CheckpointError, DatasetNotFoundError: the run or its data cannot be loaded.
    """
    from ciiv.evaluate.selection import describe_run, evaluation_examples
    from ciiv.train import load_data, load_run

    loaded = load_run(run_dir, checkpoint, device=device)
    model = loaded.model
    trained = model.sigma if isinstance(model, SmoothedClassifier) else None
    if sigma is None:
        if trained is None:
            raise ValueError(
                f"{run_dir} is a {loaded.method!r} run, not randomized smoothing (rs); pass "
                "--sigma (sigma=...) to certify its model as the base classifier of a smoothed "
                "classifier"
            )
        sigma = trained
    elif trained is not None and sigma != trained:
        logger.warning(
            "certifying with sigma %g, but the run was trained and is deployed with sigma %g",
            sigma,
            trained,
        )
    splits = load_data(loaded.config.data, data_dir=data_dir)
    split, index, x, y = evaluation_examples(splits, loaded.dataset, test_split, n_examples, seed)
    if out_dir is None:
        suffix = "" if split == next(iter(splits.test)) else f"-{split}"  # a non-default split
        out_dir = Path(run_dir) / "certify" / f"sigma{sigma:g}-n{n}{suffix}"
    run_info = {
        **describe_run(loaded, split, index, len(splits.test[split]), seed),
        # Whether the certified smoothed classifier is the one the run deploys (and `ciiv eval`
        # attacks): only then can certified and empirical accuracies be compared.
        "deployed": trained is not None and sigma == trained,
    }
    return certify_examples(
        model,
        x,
        y,
        sigma=sigma,
        n0=n0,
        n=n,
        alpha=alpha,
        batch_size=batch_size,
        examples_per_batch=examples_per_batch,
        seed=seed,
        out_dir=out_dir,
        indices=index.tolist(),
        overwrite=overwrite,
        run_info=run_info,
        progress=progress,
    )
