"""Running the cells of a grid: train, audit, evaluate; skip what is done, resume what is not.

Each cell is a training run directory ``DIR/cells/<run>-s<seed>/`` (with ``eval/`` and
``audit/``) beside its record ``DIR/cells/<run>-s<seed>.json`` (spec, status, phase times, error);
docs/experiments.md shows the layout. Every phase writes its files as it goes, so running the
grid again after a kill resumes it; a cell whose spec changed since it ran is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ciiv.attacks import check_attack_dependencies
from ciiv.distributed import is_main_process
from ciiv.evaluate.records import read_json, write_json_atomic
from ciiv.evaluate.selection import describe_run, eval_dir_name, evaluation_examples
from ciiv.evaluate.suites import format_eps, get_suite
from ciiv.models.registry import check_model_dependencies
from ciiv.train.config import config_to_dict

from .grid import Cell, Grid

__all__ = [
    "CELLS",
    "CellOutcome",
    "GridChangedError",
    "cell_dir",
    "cell_evaluations",
    "cell_record_path",
    "run_cell",
    "run_grid",
]

logger = logging.getLogger(__name__)

CELLS = "cells"

Progress = Callable[[str, dict[str, Any]], None]
"""``progress(phase, info)``: "train" (a ciiv.train ProgressEvent under ``event``), "eval"
(``label`` and an evaluation progress ``event``/``info``), "audit" ({check, status, done, total}
before (status None) and after each check of the cell's audit)."""


class GridChangedError(ValueError):
    """A cell's directory holds results of a different spec than the grid asks for now."""


@dataclass
class CellOutcome:
    """What happened to one cell: "complete" (ran now), "skipped" (complete before) or "failed"."""

    cell: Cell
    status: str
    elapsed_s: float = 0.0
    error: str | None = None


def cell_dir(out: str | Path, cell: Cell) -> Path:
    """The cell's training run directory, ``DIR/cells/<name>``."""
    return Path(out) / CELLS / cell.name


def cell_record_path(out: str | Path, cell: Cell) -> Path:
    return Path(out) / CELLS / f"{cell.name}.json"


def _cell_spec(grid: Grid, cell: Cell) -> dict[str, Any]:
    """Everything a cell's results depend on (not where it runs): its config, evaluation, audit."""
    config = config_to_dict(cell.config)
    config.pop("device", None)
    config["data"].pop("data_dir", None)
    return {
        "run": cell.run,
        "seed": cell.seed,
        "config": config,
        "eval": dataclasses.asdict(grid.eval),
        "audit": grid.audit,
        "audit_settings": grid.audit_settings,
    }


def cell_evaluations(grid: Grid, views: bool) -> list[tuple[str, str, float | None, str]]:
    """``(suite, protocol, eps, directory name)`` of each evaluation of a cell (a suite file's
    directory is named after the suite's ``name``). A model without views runs the paper protocol
    exactly as the full one, so it is evaluated once (full)."""
    protocols = [p for p in grid.eval.protocols if views or p == "full"] or ["full"]
    return [
        (
            suite,
            protocol,
            eps,
            eval_dir_name(get_suite(suite).name, protocol, None, eps and format_eps(eps)),
        )
        for suite in grid.eval.suites
        for protocol in protocols
        for eps in grid.eval.budgets()
    ]


def _check_spec(path: Path, spec: dict[str, Any], cell: Cell) -> dict[str, Any] | None:
    """The cell's earlier record, after making sure it was made with ``spec``."""
    if not path.is_file():
        return None
    record = read_json(path)
    if yaml.safe_dump(record.get("spec")) != yaml.safe_dump(spec):
        raise GridChangedError(
            f"cell {cell.name}: {path.parent / cell.name} holds results of a different spec "
            f"(see {path}); the grid changed since it ran. Use another --out, or delete that "
            "cell's directory and record to run it again"
        )
    return record


def run_cell(
    grid: Grid,
    cell: Cell,
    out: str | Path,
    *,
    max_batch: int | None = None,
    progress: Progress | None = None,
) -> CellOutcome:
    """Train, audit and evaluate one cell, skipping what its files say is done. Raises
    GridChangedError when the cell ran before with another spec, and whatever training or
    evaluation raises (the caller records the cell as failed)."""
    start = time.perf_counter()
    spec = _cell_spec(grid, cell)
    record_path = cell_record_path(out, cell)
    earlier = _check_spec(record_path, spec, cell)
    if earlier is not None and earlier.get("status") == "complete":
        return CellOutcome(cell, "skipped")
    # Phase times add up over the sessions that worked on the cell (a resumed cell keeps them).
    phases = dict((earlier or {}).get("phases_s") or {})
    record = {"spec": spec, "status": "running", "phases_s": phases, "error": None}
    _write_record(record_path, record)
    run_dir = cell_dir(out, cell)
    try:
        with _timed(phases, "train"):
            _train(cell, run_dir, progress)
        with _timed(phases, "load"):
            model, x, y, index, views, info = _load(cell, run_dir, grid)
        audit = None
        if grid.audit != "none":
            with _timed(phases, "audit"):
                audit = _audit(grid, model, x, y, run_dir, info, progress)
        with _timed(phases, "eval"):
            _evaluate(grid, model, x, y, index, views, run_dir, info, audit, max_batch, progress)
    except Exception as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        _write_record(record_path, record)
        raise
    record["status"] = "complete"
    _write_record(record_path, record)
    return CellOutcome(cell, "complete", time.perf_counter() - start)


def _write_record(path: Path, record: dict[str, Any]) -> None:
    if is_main_process():  # the other ranks of a torchrun job run the cell too
        write_json_atomic(path, record)


@contextlib.contextmanager
def _timed(times: dict[str, float], name: str) -> Iterator[None]:
    """Adds the block's wall time (seconds) to ``times[name]``, even when it fails."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0


def _train(cell: Cell, run_dir: Path, progress: Progress | None) -> None:
    """Fit the cell's run; resume it if a checkpoint is there; nothing if it is finished."""
    from ciiv.train import fit, load_checkpoint, resume
    from ciiv.train.run import checkpoint_path

    callback = None if progress is None else (lambda event: progress("train", {"event": event}))
    last = checkpoint_path(run_dir, "last")
    if not last.is_file():
        fit(cell.config, run_dir, progress=callback)
    elif int(load_checkpoint(last)["epoch"]) >= cell.config.epochs:
        logger.info("%s: training already done", cell.name)
    else:
        resume(run_dir, {"device": cell.config.device}, progress=callback)


def _load(cell: Cell, run_dir: Path, grid: Grid):
    """The best checkpoint's model (on the cell's device), the evaluated examples and what the
    reports need."""
    from ciiv.distributed import init_distributed
    from ciiv.evaluate.api import detect_traits
    from ciiv.train import load_data, load_run
    from ciiv.train.run import resolve_device

    # Under torchrun, fit() closes its process group; the evaluation splits batches again.
    device = cell.config.device
    dist = init_distributed(use_cuda=resolve_device(device).type == "cuda")
    loaded = load_run(run_dir, "best", device=resolve_device(device, dist.local_rank))
    splits = load_data(loaded.config.data)
    split, index, x, y = evaluation_examples(
        splits, loaded.dataset, None, grid.eval.n_examples, grid.eval.seed
    )
    views = detect_traits(loaded.model, x[:8].to(next(loaded.model.parameters()).device)).views
    info = {
        **describe_run(loaded, split, index, len(splits.test[split]), grid.eval.seed),
        "grid_run": cell.run,
        "grid_seed": cell.seed,
    }
    return loaded.model, x, y, index, views, info


def _audit(grid, model, x, y, run_dir: Path, info, progress) -> dict[str, Any]:
    """The cell's audit (``run_dir/audit/audit.json``), run once and then read back."""
    from ciiv.evaluate.audit import audit, check_events, list_checks

    path = run_dir / "audit" / "audit.json"
    if path.is_file():
        return read_json(path)
    checks = list_checks()
    # The first suite's norm at the grid's largest eps (the suite's budget when it sweeps none).
    suite = get_suite(grid.eval.suites[0])
    eps = max(grid.eval.eps) if grid.eval.eps else suite.eps_for(info["dataset"])
    n = grid.eval.audit_examples
    device = next(model.parameters()).device
    result = audit(
        model,
        x[:n].to(device),
        y[:n].to(device),
        eps=eps,
        norm=suite.norm,
        quick=grid.audit == "quick",
        seed=grid.eval.seed,
        checks=checks,
        progress=check_events(lambda e: progress("audit", e), checks) if progress else None,
        **grid.audit_settings,
    )
    if is_main_process():
        result.write_json(path)
    return result.to_dict()


def _evaluate(grid, model, x, y, index, views, run_dir: Path, info, audit, max_batch, progress):
    """The cell's evaluations into ``run_dir/eval/`` (one whose summary exists is skipped, one
    half done resumes)."""
    from ciiv.evaluate import evaluate_robustness

    for suite, protocol, eps, name in cell_evaluations(grid, views):
        out_dir = run_dir / "eval" / name
        if (out_dir / "summary.json").is_file():
            continue
        label = f"{suite}/{protocol}" + ("" if eps is None else f" eps {format_eps(eps)}")

        def callback(event: str, detail: dict[str, Any], label: str = label) -> None:
            progress("eval", {"label": label, "event": event, "info": detail})

        evaluate_robustness(
            model,
            x,
            y,
            suite=suite,
            protocol=protocol,
            eps=eps,
            eot=grid.eval.eot,
            draws=grid.eval.draws,
            seed=grid.eval.seed,
            batch_size=grid.eval.batch_size,
            out_dir=out_dir,
            dataset=info["dataset"],
            indices=index.tolist(),
            max_batch=max_batch,
            audit=audit if audit is not None else False,
            run_info=info,
            progress=callback if progress else None,
        )


def run_grid(
    grid: Grid,
    out: str | Path,
    *,
    cells: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
    max_batch: int | None = None,
    progress: Progress | None = None,
    on_cell: Callable[[Cell, str], None] | None = None,
) -> list[CellOutcome]:
    """Run the grid's cells (all, or those at ``cells``) into ``out``, one after the other.

    A failed cell is recorded and logged, and the next one runs. ``on_cell(cell, "start")`` and
    ``on_cell(cell, outcome.status)`` report each cell. Signals and Ctrl-C stop the grid (the
    cell's files stay; running the same grid again resumes).
    """
    out = Path(out)
    chosen = grid.cells(overrides)
    if cells is not None:
        bad = [i for i in cells if not 0 <= i < len(chosen)]
        if bad:
            raise ValueError(
                f"--cell {bad[0]} is not a cell of grid {grid.name!r}: it has cells 0.."
                f"{len(chosen) - 1} (see --dry-run)"
            )
        chosen = [chosen[i] for i in cells]
    # A missing optional package (timm, pyautoattack) stops the grid before it writes anything,
    # not after hours of training.
    for cell in chosen:
        check_model_dependencies(cell.config.model.backbone)
    for suite in grid.eval.suites:
        check_attack_dependencies(entry.attack for entry in get_suite(suite).expanded())
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        (out / "grid.yaml").write_text(yaml.safe_dump(grid.to_dict(), sort_keys=False))
    outcomes = []
    for cell in chosen:
        if on_cell:
            on_cell(cell, "start")
        try:
            outcome = run_cell(grid, cell, out, max_batch=max_batch, progress=progress)
        except Exception as exc:  # recorded in the cell's file; the grid goes on
            logger.error("cell %s failed: %s", cell.name, exc, exc_info=logger.isEnabledFor(10))
            outcome = CellOutcome(cell, "failed", error=f"{type(exc).__name__}: {exc}")
        outcomes.append(outcome)
        if on_cell:
            on_cell(cell, outcome.status)
    return outcomes
