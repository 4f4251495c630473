"""Pieces the commands share: progress bars and their callbacks, and logging through a live bar."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = [
    "add_run_arguments",
    "EvalBar",
    "TrainBar",
    "logging_through",
    "progress_bar",
]


def progress_bar(console: Console, **options: Any) -> Progress:
    """A rich progress display: description, bar, n/total, live stats, elapsed time."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=console, **options)


class TrainBar:
    """Progress callback of ``fit``: one bar per epoch with live loss, accuracy and throughput."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None

    def __call__(self, event) -> None:
        if event.kind == "epoch_start":
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(
                f"epoch {event.epoch + 1}/{event.epochs}",
                total=event.steps,
                completed=event.step,  # > 0 when a run resumes mid-epoch
                stats="",
            )
        elif event.kind == "step":
            m = event.metrics
            stats = f"loss {m['loss']:.4f}  acc {m['acc']:.3f}  {m['images_per_s']:.0f} img/s"
            self.progress.update(self.task, completed=event.step, stats=stats)
        elif event.kind == "epoch_end":
            self.progress.update(self.task, completed=event.steps)


class EvalBar:
    """Progress callback of ``evaluate_robustness``: one bar over the batches of this rank."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress, self.label, self.task = progress, label, None

    def __call__(self, event: str, info: dict) -> None:
        if event == "start":
            self.task = self.progress.add_task(
                self.label, total=info["total"], completed=info["done"], stats=""
            )
        elif event == "attack":
            self.progress.update(self.task, stats=f"batch {info['batch']}: {info['name']}")
        elif event == "batch":
            stats = f"robust so far {info['robust']}/{info['seen']}"
            self.progress.update(self.task, completed=info["done"], stats=stats)
        elif event == "audit":
            self.progress.update(self.task, stats="audit")


@contextlib.contextmanager
def logging_through(console: Console) -> Iterator[None]:
    """Send log records through ``console`` while a progress bar is live (no torn lines)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = RichHandler(console=console, show_path=False, log_time_format="%H:%M:%S")
    handler.setLevel(min((h.level for h in saved), default=logging.INFO))
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved


def add_run_arguments(parser: argparse.ArgumentParser, n_examples: int) -> None:
    """The options of the commands that load a trained run and pick test examples from it
    (``ciiv eval``, ``audit``, ``certify``): which checkpoint, which data, which examples, where."""
    parser.add_argument(
        "--n-examples",
        type=int,
        default=n_examples,
        metavar="N",
        help=f"first N of a seeded permutation of the test split, the same in every command "
        f"(default {n_examples}; 0 = all)",
    )
    parser.add_argument(
        "--test-split", metavar="NAME", help="test split (default: the dataset's first)"
    )
    parser.add_argument(
        "--checkpoint", choices=("best", "last"), default="best", help="checkpoint (default best)"
    )
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda", help="device")
    parser.add_argument("--data-dir", metavar="PATH", help="dataset files (default: the run's)")
