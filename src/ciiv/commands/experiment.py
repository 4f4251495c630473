"""``ciiv experiment``: run a study grid (runs x seeds; train, audit, evaluate) and tabulate it.

    ciiv experiment mnist-cpu --out studies/mnist --data-dir ../shared/data
    ciiv experiment my-grid.yaml --out studies/x --dry-run      # cells and their cost
    ciiv experiment my-grid.yaml --out studies/x --cell 3       # one cell (SLURM arrays...)
    ciiv experiment my-grid.yaml --out studies/x --report-only  # results.md from the files

Running the same command again skips complete cells and resumes the rest. With --cell, write the
results with --report-only once every cell is done.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ciiv.commands._progress import EvalProgress, ProgressDisplay, TrainProgress, show_audit

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "grid", metavar="GRID", nargs="?", help="a grid YAML file or a built-in grid (--list)"
    )
    parser.add_argument("--out", metavar="DIR", help="the study directory (resumed if it exists)")
    parser.add_argument(
        "--data-dir",
        metavar="PATH",
        help="where the datasets' files are, for every run (data.data_dir)",
    )
    parser.add_argument(
        "--device",
        metavar="auto|cpu|cuda",
        help="where every cell trains and is evaluated: auto takes a GPU when there is one",
    )
    parser.add_argument(
        "--cell",
        type=int,
        action="append",
        metavar="I",
        help="run only cell I (repeatable); see --dry-run for the numbers",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        metavar="M",
        help="most images per model call in attacks; lower it when memory runs out",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the cells and their cost, run nothing"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write results.md/json and plots from the cells' files, run nothing",
    )
    parser.add_argument("--list", action="store_true", help="list the built-in grids")


def _human(count: int | None) -> str:
    if count is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def _dry_run(console: Console, grid, out: Path, overrides: dict) -> None:
    from ciiv.data import DatasetNotFoundError
    from ciiv.experiment import cell_cost, cell_dir
    from ciiv.experiment.runner import cell_record_path
    from ciiv.train import load_data

    sizes: dict[str, int | None] = {}  # training examples per data config
    cells = grid.cells(overrides)
    table = Table(title=f"grid {grid.name}: {escape(grid.description.strip()[:200])}")
    table.add_column("cell")
    table.add_column("name", no_wrap=True, min_width=max(len(c.name) for c in cells))
    for column in ("method", "epochs", "train passes", "evals", "eval passes", "state"):
        table.add_column(column, justify="right" if "passes" in column else "left")
    totals = [0, 0]
    for cell in cells:
        key = repr(cell.config.data)
        if key not in sizes:
            try:
                sizes[key] = len(load_data(cell.config.data).train)
            except (DatasetNotFoundError, ValueError, OSError):
                sizes[key] = None
        cost = cell_cost(grid, cell, sizes[key])
        totals[0] += cost["train"] or 0
        totals[1] += cost["eval"]
        record = cell_record_path(out, cell)
        state = "started" if cell_dir(out, cell).exists() else "new"
        if record.is_file():
            state = json.loads(record.read_text()).get("status", "?")
        table.add_row(
            str(cell.index), cell.name, cell.config.method.name, str(cell.config.epochs),
            _human(cost["train"]), str(cost["evals"]), _human(cost["eval"]), state,
        )  # fmt: skip
    console.print(table)
    console.print(
        f"total: {_human(totals[0])} training and at most {_human(totals[1])} attack "
        "backbone image-passes (a CiiV model's views each count; evaluation is an upper bound: "
        "the worst-case chain attacks only the points still standing)"
    )


def _feedback(display: ProgressDisplay):
    """Progress of the running cell: training, the audit's checks, then each evaluation."""
    train = TrainProgress(display)

    def callback(phase: str, info: dict) -> None:
        if phase == "train":
            train(info["event"])
        elif phase == "eval":
            EvalProgress(display, info["label"])(info["event"], info["info"])
        elif phase == "audit":
            show_audit(display, info)

    return callback


def _outcome_table(outcomes) -> Table:
    table = Table(title="cells")
    for column in ("cell", "name", "status", "s", "error"):
        table.add_column(column)
    style = {"complete": "green", "skipped": "dim", "failed": "bold red"}
    for o in outcomes:
        table.add_row(
            str(o.cell.index), o.cell.name, f"[{style[o.status]}]{o.status}[/]",
            f"{o.elapsed_s:.0f}", escape(o.error or ""),
        )  # fmt: skip
    return table


def run(args: argparse.Namespace) -> int:
    from ciiv.distributed import is_main_process
    from ciiv.experiment import list_grids, load_grid, run_grid, write_results

    console = Console(stderr=True)
    if args.list:
        for name in list_grids():
            grid = load_grid(name)
            Console().print(f"[bold]{name}[/]: {escape(grid.description.strip().splitlines()[0])}")
        return 0
    main_process = is_main_process()
    try:
        if not args.grid or not args.out:
            raise ValueError("GRID and --out DIR are required (see ciiv experiment --help)")
        grid = load_grid(args.grid)
        out = Path(args.out)
        given = (("data.data_dir", args.data_dir), ("device", args.device))
        overrides = {key: value for key, value in given if value}
        if args.dry_run:
            _dry_run(Console(), grid, out, overrides)
            return 0
        outcomes = []
        if not args.report_only:
            start = time.perf_counter()
            total = len(args.cell) if args.cell else len(grid.cells(overrides))
            started = itertools.count(1)

            def on_cell(cell, status: str) -> None:
                if status == "start":
                    console.rule(
                        f"[{next(started)}/{total}] cell {cell.index}: {cell.name} "
                        f"({cell.config.method.name}), {time.perf_counter() - start:.0f}s elapsed"
                    )
                elif status == "failed":
                    console.print(f"[bold red]cell {cell.name} failed[/]; going on")

            title = f"experiment {grid.name}"
            with ProgressDisplay(console, title, enabled=main_process) as display:
                outcomes = run_grid(
                    grid,
                    out,
                    cells=args.cell,
                    overrides=overrides,
                    max_batch=args.max_batch,
                    progress=_feedback(display) if main_process else None,
                    on_cell=on_cell if main_process else None,
                )
            if main_process:
                console.print(_outcome_table(outcomes))
                console.print(f"grid wall time {time.perf_counter() - start:.0f}s")
        if main_process and (args.report_only or not args.cell):
            written = write_results(grid, out)
            console.print("wrote " + ", ".join(escape(str(p)) for p in written[:2]) + " and plots")
    except KeyboardInterrupt as exc:
        code = getattr(exc, "exit_code", 130)
        console.print(
            f"[bold yellow]stopped[/]: run the same command again to resume the grid "
            f"(ciiv experiment {escape(str(args.grid))} --out {escape(str(args.out))})"
        )
        return code
    return 1 if any(o.status == "failed" for o in outcomes) else 0
