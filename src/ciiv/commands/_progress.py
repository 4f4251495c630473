"""The progress display of every command: rich bars on a terminal, plain lines everywhere else
(docs/evaluation.md, "Progress"): the first line at once, then at most one every
``CIIV_PROGRESS_INTERVAL`` seconds (default 10) while work goes on, one at every phase change (a
new epoch, attack, check) and a last one at the end.

Bars form a tree: a child bar counts the parts of one unit of its parent (the steps of the attack
now running on the batch now running), so a parent's fraction done includes its running child's,
and its ETA exists before its first unit completes. ETA = time since the bar started x work left /
work done since then.

The adapters (:class:`TrainProgress`, :class:`EvalProgress`, :class:`CertifyProgress`,
:func:`audit_progress`) turn the library's progress callbacks into bars.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ciiv.formatting import format_duration, format_rate

__all__ = [
    "DEFAULT_INTERVAL",
    "INTERVAL_ENV",
    "CertifyProgress",
    "EvalProgress",
    "ProgressDisplay",
    "TrainProgress",
    "audit_progress",
    "progress_interval",
    "show_audit",
]

logger = logging.getLogger(__name__)

INTERVAL_ENV = "CIIV_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 10.0


def progress_interval() -> float:
    """Seconds between plain progress lines: ``$CIIV_PROGRESS_INTERVAL`` or 10."""
    raw = os.environ.get(INTERVAL_ENV, str(DEFAULT_INTERVAL))
    with contextlib.suppress(ValueError):
        if math.isfinite(float(raw)) and float(raw) >= 0:
            return float(raw)
    logger.warning("%s=%r is not a number of seconds >= 0; using 10", INTERVAL_ENV, raw)
    return DEFAULT_INTERVAL


@dataclass
class _Bar:
    description: str
    total: float | None
    completed: float
    parent: str | None
    started: float  # clock time of start()
    start_fraction: float = 0.0  # fraction done at start() (a resumed run's earlier work)
    stats: str = ""
    task: TaskID | None = None


class ProgressDisplay:
    """Bars keyed by name, drawn by rich on a terminal and printed as lines elsewhere.

    Args:
        console: where the display goes (the commands use stderr).
        title: the first words of every plain line (e.g. ``"eval runs/a"``).
        enabled: False shows nothing (the other processes of a torchrun job).
        interval: seconds between plain lines (None: :func:`progress_interval`).
        transient: remove the rich bars when the display closes.
        clock: monotonic seconds (tests pass a fake one); now: wall-clock time of the lines.

    Use it as a context manager; while it is open on a terminal, log records go through it.
    """

    def __init__(
        self,
        console: Console,
        title: str = "",
        *,
        enabled: bool = True,
        interval: float | None = None,
        transient: bool = False,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.console, self.title, self.enabled = console, title, enabled
        self.live = console.is_terminal  # rich bars, else plain lines
        self.interval = progress_interval() if interval is None else float(interval)
        self.clock, self.now = clock, now
        self._bars: dict[str, _Bar] = {}
        self._last_line: float | None = None
        self._pending = False
        self._stack = contextlib.ExitStack()
        self._rich: Progress | None = None
        if enabled and self.live:
            self._rich = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                TextColumn("{task.fields[count]}", markup=False),
                TextColumn("{task.fields[stats]}", markup=False),
                TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}", markup=False),
                console=console,
                transient=transient,
            )

    def __enter__(self) -> ProgressDisplay:
        if self._rich is not None:
            self._stack.enter_context(self._rich)
            # Log records go through the live display (no torn lines) until it closes.
            root = logging.getLogger()
            handler = RichHandler(console=self.console, show_path=False, log_time_format="%H:%M:%S")
            handler.setLevel(min((h.level for h in root.handlers), default=logging.INFO))
            self._stack.callback(setattr, root, "handlers", root.handlers[:])
            root.handlers = [handler]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pending:  # the state changed since the last line: print the line still owed
            self._emit(self.clock())
        self._stack.close()

    # -- bars ----------------------------------------------------------------------------------

    def __contains__(self, key: str) -> bool:
        return key in self._bars

    def start(
        self,
        key: str,
        description: str,
        total: float | None = None,
        *,
        completed: float = 0,
        parent: str | None = None,
        phase: bool = True,
        quiet: bool = False,
    ) -> None:
        """(Re)start bar ``key`` (its children go): ``total`` units (None: unknown), of which
        ``completed`` are already done; ``parent``: the bar one unit of which this bar splits.
        ``phase``: a new phase, printed at once as a plain line; ``quiet``: print nothing now
        (the next change prints this one with it)."""
        if not self.enabled:
            return
        self.remove(key)
        parent = parent if parent in self._bars else None
        bar = _Bar(description, total, float(completed), parent, self.clock())
        self._bars[key] = bar
        bar.start_fraction = self.fraction(key) or 0.0
        if self._rich is not None:  # drawn by _changed below
            bar.task = self._rich.add_task("", total=total, count="", stats="", eta="")
        if quiet and self._rich is None:
            self._pending = True
        else:
            self._changed(key, phase)

    def update(
        self,
        key: str,
        *,
        completed: float | None = None,
        stats: str | None = None,
        phase: bool = False,
    ) -> None:
        """Change bar ``key`` (a missing bar is ignored); ``phase`` prints a line at once."""
        bar = self._bars.get(key)
        if bar is None:
            return
        if completed is not None:
            bar.completed = float(completed)
        if stats is not None:
            bar.stats = stats
        self._changed(key, phase)

    def remove(self, key: str) -> None:
        """Remove bar ``key`` and its children."""
        if key not in self._bars:
            return
        for child in self._children(key):
            self.remove(child)
        bar = self._bars.pop(key)
        if bar.task is not None:  # a rich task
            self._rich.remove_task(bar.task)

    def clear(self) -> None:
        """Remove every bar (a new phase of the command: the last one's bars are done)."""
        for key in self._children(None):
            self.remove(key)

    def completed(self, key: str) -> float | None:
        """Units done of bar ``key`` (None if there is no such bar)."""
        bar = self._bars.get(key)
        return None if bar is None else bar.completed

    def fraction(self, key: str) -> float | None:
        """Fraction done of bar ``key`` in [0, 1], counting its running child's fraction of the
        current unit; None when the total is unknown."""
        bar = self._bars.get(key)
        if bar is None or not bar.total:
            return None
        children = self._children(key)
        part = (self.fraction(children[-1]) or 0.0) if children else 0.0
        return min(1.0, max(0.0, (bar.completed + part) / bar.total))

    def eta(self, key: str) -> float | None:
        """Seconds left for bar ``key`` at the pace since it started; None before any progress."""
        bar, done = self._bars.get(key), self.fraction(key)
        if bar is None or done is None:
            return None
        elapsed, progress = self.clock() - bar.started, done - bar.start_fraction
        if progress <= 0 or elapsed <= 0:
            return 0.0 if done >= 1 else None
        return elapsed * (1.0 - done) / progress

    def line(self) -> str:
        """The plain progress line of the current state."""
        parts = [self.now().strftime("%Y-%m-%d %H:%M:%S"), self.title]
        for key in self._ordered():
            bar = self._bars[key]
            parts += [f"{bar.description} {self._count(bar)}".strip(), bar.stats]
        running = [k for k in self._children(None) if (self.fraction(k) or 0.0) < 1.0]
        eta = self.eta(running[0]) if running else None
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        return "  ".join(part for part in parts if part)  # empty title or stats left out

    # -- internals -----------------------------------------------------------------------------

    def _ancestors(self, key: str) -> list[str]:
        out, parent = [], self._bars[key].parent
        while parent is not None:  # a bar's parent outlives it (remove() takes children first)
            out.append(parent)
            parent = self._bars[parent].parent
        return out

    def _children(self, key: str | None) -> list[str]:
        """The bars under ``key`` (None: the roots), in the order they started."""
        return [k for k, bar in self._bars.items() if bar.parent == key]

    def _ordered(self, parent: str | None = None) -> list[str]:
        """Keys depth first: each root, then its children, in the order they started."""
        return [k for child in self._children(parent) for k in (child, *self._ordered(child))]

    @staticmethod
    def _count(bar: _Bar) -> str:
        return f"{int(bar.completed)}" + ("" if bar.total is None else f"/{int(bar.total)}")

    def _changed(self, key: str, phase: bool) -> None:
        if self._rich is not None:
            for k in [key, *self._ancestors(key)]:  # a child's progress moves its ancestors too
                self._draw(k)
            return
        now = self.clock()
        if phase or self._last_line is None or now - self._last_line >= self.interval:
            self._emit(now)
        else:
            self._pending = True

    def _draw(self, key: str) -> None:
        bar = self._bars[key]
        done, eta = self.fraction(key), self.eta(key)
        self._rich.update(
            bar.task,
            description="  " * len(self._ancestors(key)) + bar.description,
            completed=bar.completed if done is None else done * bar.total,
            count=self._count(bar),
            stats=bar.stats,
            eta="" if eta is None else f"ETA {format_duration(eta)}",
        )

    def _emit(self, now: float) -> None:
        self._last_line, self._pending = now, False
        if self._bars:
            print(self.line(), file=self.console.file, flush=True)


class TrainProgress:
    """``ciiv.train`` progress callback: the run's epochs, the running epoch's steps (with the
    running loss, accuracy and images/s) and the validation's batches."""

    def __init__(self, display: ProgressDisplay) -> None:
        self.display = display
        self.running = ""  # the last running loss and accuracy (they come every few steps)

    def __call__(self, event) -> None:
        d = self.display
        if event.kind == "epoch_start":
            done = d.completed("run")
            if done is None or event.epoch < done:  # a new fit() (the demo trains two models)
                d.clear()
                d.start("run", "epochs", event.epochs, completed=event.epoch, quiet=True)
            self.running = ""
            d.start(
                "epoch",
                f"epoch {event.epoch + 1}/{event.epochs}",
                event.steps,
                completed=event.step,  # > 0 when a run resumes mid-epoch
                parent="run",
            )
        elif event.kind == "step":
            m = event.metrics
            if "loss" in m:
                self.running = f"loss {m['loss']:.4f}  acc {m['acc']:.3f}"
            rate = f"{format_rate(m['images_per_s'])} img/s" if "images_per_s" in m else ""
            stats = "  ".join(s for s in (self.running, rate) if s)
            d.update("epoch", completed=event.step, stats=stats)
        elif event.kind == "validate":
            if event.step == 0 or "validation" not in d:
                d.start("validation", "validation", event.steps, completed=event.step)
            else:
                d.update("validation", completed=event.step)
        elif event.kind == "epoch_end":
            d.remove("validation")
            d.update("epoch", completed=event.steps)
            val = event.metrics.get("val_acc")
            stats = "" if val is None else f"val acc {val:.4f}"
            d.update("run", completed=event.epoch + 1, stats=stats, phase=True)
            if event.epoch + 1 >= event.epochs:
                d.remove("run")


def show_audit(display: ProgressDisplay, info: dict[str, Any]) -> None:
    """An audit event {check, status, done, total}: a bar over the checks."""
    check, status = info.get("check"), info.get("status")
    if "audit" not in display:
        display.start(
            "audit", "audit checks", info.get("total"), completed=info.get("done", 0), quiet=True
        )
    stats = "" if check is None else (check if status is None else f"{check}: {status}")
    display.update("audit", completed=info.get("done"), stats=stats, phase=status is None)


class EvalProgress:
    """``evaluate_robustness`` progress callback: a bar over the batches, one over the attacks of
    the running batch, one over the running attack's steps; then one over the audit's checks."""

    def __init__(self, display: ProgressDisplay, label: str) -> None:
        self.display, self.label = display, label

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        d = self.display
        if event == "start":  # a new evaluation: the bars of what ran before are done
            d.clear()
            d.start("eval", f"{self.label} batches", info["total"], completed=info["done"])
        elif event == "attack":
            d.start(
                "attack",
                f"attack {info['name']}",
                info.get("attacks"),
                completed=info.get("index", 0),
                parent="eval",
            )
        elif event == "step":
            if info["step"] <= 1 or "step" not in d:
                d.start(
                    "step", "step", info["steps"], completed=info["step"], parent="attack",
                    phase=False,
                )  # fmt: skip
            else:
                d.update("step", completed=info["step"])
        elif event == "batch":
            d.remove("attack")
            stats = f"robust so far {info['robust']}/{info['seen']}"
            d.update("eval", completed=info["done"], stats=stats, phase=True)
        elif event == "audit":
            show_audit(d, info)


def audit_progress(display: ProgressDisplay, checks: Sequence[str]) -> Callable:
    """``ciiv.evaluate.audit.audit`` progress callback for a run of ``checks``: a bar over them."""
    from ciiv.evaluate.audit import check_events

    display.remove("audit")
    return check_events(lambda info: show_audit(display, info), checks)


class CertifyProgress:
    """``certify_examples`` progress callback: a bar over the batches of examples."""

    def __init__(self, display: ProgressDisplay) -> None:
        self.display = display

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "start":
            self.display.start("certify", "certify batches", info["total"], completed=info["done"])
        elif event == "batch":
            stats = f"certified so far {info['certified']}/{info['seen']}"
            self.display.update("certify", completed=info["done"], stats=stats)
