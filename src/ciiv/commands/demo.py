"""``ciiv demo``: train vanilla and CiiV on the built-in shapes data, attack both, report.

ciiv demo --out demo-out               # about 4 minutes on a 2-core CPU
ciiv demo --out demo-small --epochs 2 --n-train 1000 --n-test 50   # a quick look
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from ciiv.commands._progress import EvalProgress, ProgressDisplay, TrainProgress
from ciiv.commands._ui import add_options

__all__ = ["add_arguments", "run"]


OPTIONS = (  # flag, default, metavar, help
    ("--out", "demo-out", "DIR", "a new directory for the runs, report.md and accuracy.png"),
    ("--epochs", 6, "N", "training epochs of each model"),
    ("--n-train", 4000, "N", "training images of shapes"),
    ("--n-test", 100, "N", "test images attacked per split, iid and shifted"),
    ("--eps", "8/255", "EPS", "Linf budget of the attacks"),
    ("--device", "auto", "auto|cpu|cuda", "where to run: auto takes a GPU when there is one"),
    ("--seed", 0, "SEED", "seed of the data, training and attacks"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, OPTIONS)
    parser.add_argument(
        "--eot",
        type=int,
        metavar="E",
        help="random forward passes averaged into each attack gradient (default: ciiv eval's)",
    )


def run(args: argparse.Namespace) -> int:
    from ciiv.demo import DemoSettings, run_demo, table_rows

    console = Console(stderr=True)
    names = ("epochs", "n_train", "n_test", "eps", "eot", "seed", "device")  # as the options
    settings = DemoSettings(**{name: getattr(args, name) for name in names})
    with ProgressDisplay(console, "demo", transient=True) as display:
        results = run_demo(
            args.out,
            settings,
            train_progress=TrainProgress(display),
            eval_progress=lambda label: EvalProgress(display, label),
        )
    header, rows = table_rows(results)
    table = Table(title="ciiv demo: accuracy (%) on shapes, full protocol")
    for name in header:
        table.add_column(name, justify="left" if name == "method" else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    console.print(f"report: {args.out}/report.md, plot: {args.out}/accuracy.png")
    return 0
