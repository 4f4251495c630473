"""Pieces the commands share: progress bars and their callbacks, logging through a live bar, and
the choice of the evaluated test examples (``ciiv eval`` and ``ciiv audit`` pick the same ones)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = [
    "EvalBar",
    "TrainBar",
    "evaluation_examples",
    "logging_through",
    "progress_bar",
    "select_examples",
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
                f"epoch {event.epoch + 1}/{event.epochs}", total=event.steps, stats=""
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


def select_examples(num: int, n_examples: int, seed: int):
    """Indices of the evaluated examples: the first ``n_examples`` of a permutation of range(num)
    seeded with ``seed`` (all of them for 0 or more than num), as an int64 tensor."""
    import torch

    perm = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    return perm if n_examples <= 0 else perm[:n_examples]


def evaluation_examples(splits, dataset: str, split: str | None, n_examples: int, seed: int):
    """``(split name, indices, images in [0,1], labels)`` of the evaluated examples of a test split
    (None: the dataset's first), chosen by :func:`select_examples`."""
    split = split or next(iter(splits.test))
    if split not in splits.test:
        raise ValueError(
            f"unknown test split {split!r} of {dataset}; valid: {', '.join(splits.test)}"
        )
    data = splits.test[split]
    index = select_examples(len(data), n_examples, seed)
    return split, index, data.images[index].float() / 255, data.labels[index]
