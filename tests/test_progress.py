"""The CLI's progress display: plain lines at a bounded rate off a terminal, ETAs, rich bars on one,
and the adapters of the library's progress callbacks. A fake clock: nothing sleeps."""

import io
import re
from datetime import datetime

import pytest
from rich.console import Console

from ciiv.commands._progress import (
    EvalProgress,
    ProgressDisplay,
    TrainProgress,
    progress_interval,
)
from ciiv.formatting import format_duration, format_rate
from ciiv.train import ProgressEvent

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def plain(interval: float = 10.0, title: str = "job"):
    """A display off a terminal writing into a buffer, with a fake clock."""
    out, clock = io.StringIO(), Clock()
    console = Console(file=out, force_terminal=False)
    display = ProgressDisplay(
        console,
        title,
        interval=interval,
        clock=clock,
        now=lambda: datetime(2026, 11, 29, 17, 40, 3),
    )
    return display, out, clock


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_durations_and_rates_read_well():
    assert [format_duration(s) for s in (0, 9.9, 59, 60, 190, 3599, 3600, 7500, 90000)] == [
        "0s", "9s", "59s", "1m00s", "3m10s", "59m59s", "1h00m", "2h05m", "1d01h",
    ]  # fmt: skip
    assert format_duration(-3) == "0s" and format_duration(float("inf")) == "?"
    # Three significant digits and no exponent: a slow backbone's 0.42 images/s is not "0".
    assert [format_rate(v) for v in (12345.6, 512.4, 99.94, 12.34, 1.234, 0.4213, 0.0421, 0)] == [
        "12346", "512", "99.9", "12.3", "1.23", "0.421", "0.0421", "0",
    ]  # fmt: skip


def test_plain_lines_come_at_once_then_at_most_every_interval_and_at_phase_changes():
    display, out, clock = plain(interval=10)
    with display:
        display.start("work", "batches", 100)
        assert len(lines(out)) == 1  # the first line at once
        for step in range(1, 40):  # 39 updates within 9.75 s: no line
            clock.t += 0.25
            display.update("work", completed=step)
        assert len(lines(out)) == 1
        clock.t += 0.25  # 10 s after the first line
        display.update("work", completed=40)
        assert len(lines(out)) == 2 and "batches 40/100" in lines(out)[-1]
        clock.t += 1
        display.update("work", completed=41)
        assert len(lines(out)) == 2
        display.start("sub", "attack pgd-10", 3, parent="work")  # a new phase: at once
        assert len(lines(out)) == 3 and "attack pgd-10 0/3" in lines(out)[-1]
        clock.t += 1
        display.update("work", completed=42)
    # The state changed after the last line: the display prints it when it closes.
    assert len(lines(out)) == 4 and "batches 42/100" in lines(out)[-1]
    assert all(LINE.match(line) and "  job  " in line for line in lines(out))


def test_a_long_run_prints_about_one_line_per_interval():
    display, out, clock = plain(interval=10)
    with display:
        display.start("work", "steps", 10_000)
        for step in range(1, 10_001):  # 1000 s of work, one update every 0.1 s
            clock.t += 0.1
            display.update("work", completed=step)
    count = len(lines(out))
    assert 100 <= count <= 102  # the first, one per 10 s, the last
    assert lines(out)[-1].endswith("steps 10000/10000")


def test_eta_counts_the_running_child_and_a_resumed_start():
    display, out, clock = plain()
    display.start("batches", "batches", 4, completed=1)  # resumed: one batch done before
    display.start("steps", "step", 10, parent="batches")
    assert display.eta("batches") is None  # no progress since the start yet
    clock.t += 30
    display.update("steps", completed=5)
    # 1 + 5/10 of 4 batches done; 0.5 batch in 30 s since the start at 1/4: 2.5 batches left.
    assert display.fraction("batches") == pytest.approx(1.5 / 4)
    assert display.eta("batches") == pytest.approx(150)
    assert display.eta("steps") == pytest.approx(30)
    assert display.line().endswith("batches 1/4  step 5/10  ETA 2m30s")
    display.remove("batches")  # children go with their parent
    assert "steps" not in display and display.fraction("steps") is None


def test_an_unknown_total_has_a_count_and_no_eta():
    display, _, clock = plain()
    display.start("checks", "checks", None)
    clock.t += 5
    display.update("checks", completed=3)
    assert display.fraction("checks") is None and display.eta("checks") is None
    assert display.line().endswith("job  checks 3")


def test_a_disabled_display_prints_nothing():
    out = io.StringIO()
    display = ProgressDisplay(Console(file=out, force_terminal=False), "x", enabled=False)
    with display:
        display.start("a", "a", 3)
        display.update("a", completed=3, phase=True)
    assert out.getvalue() == "" and "a" not in display


def test_the_interval_comes_from_the_environment(monkeypatch, caplog):
    monkeypatch.delenv("CIIV_PROGRESS_INTERVAL", raising=False)
    assert progress_interval() == 10
    monkeypatch.setenv("CIIV_PROGRESS_INTERVAL", "2.5")
    assert progress_interval() == 2.5
    monkeypatch.setenv("CIIV_PROGRESS_INTERVAL", "soon")
    assert progress_interval() == 10 and "not a number of seconds" in caplog.text


def test_on_a_terminal_the_bars_show_count_elapsed_and_eta():
    out, clock = io.StringIO(), Clock()
    console = Console(file=out, force_terminal=True, width=160)
    with ProgressDisplay(console, "job", clock=clock) as display:
        assert display.live
        display.start("work", "batches", 8, completed=2)
        clock.t += 60
        display.update("work", completed=4, stats="robust so far 3/4")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    # 2 batches in 60 s since the start, 4 left: ETA 2 min.
    assert "batches" in text and "4/8" in text and "robust so far 3/4" in text
    assert "ETA 2m00s" in text


def test_the_training_adapter_follows_every_step_and_the_validation():
    display, out, clock = plain(interval=1000)
    train = TrainProgress(display)
    with display:
        train(ProgressEvent("epoch_start", 0, 2, 0, 4))
        for step in range(1, 5):
            clock.t += 1
            metrics = {"images_per_s": 0.42}
            if step % 2 == 0:
                metrics.update(loss=1.5, acc=0.25)
            train(ProgressEvent("step", 0, 2, step, 4, metrics))
            assert display.completed("epoch") == step  # every step, not every few
        assert "loss 1.5000  acc 0.250  0.420 img/s" in display.line()
        train(ProgressEvent("validate", 0, 2, 0, 3))
        train(ProgressEvent("validate", 0, 2, 2, 3))
        assert display.completed("validation") == 2
        # One epoch of two is done in 4 s: the run's ETA is 4 s more.
        assert display.line().endswith("validation 2/3  ETA 4s")
        train(ProgressEvent("epoch_end", 0, 2, 4, 4, {"val_acc": 0.75}))
        assert "validation" not in display and display.completed("run") == 1
        assert "epochs 1/2  val acc 0.7500" in lines(out)[-1]  # an epoch's end is a phase
        train(ProgressEvent("epoch_start", 1, 2, 0, 4))
        assert "epoch 2/2 0/4" in lines(out)[-1]
        train(ProgressEvent("epoch_end", 1, 2, 4, 4, {"val_acc": 0.8}))
        assert "run" not in display and "epoch" not in display  # the run is over
        # A second fit() in the same display (the demo) starts its own run bar, and the bars of
        # what ran in between (an evaluation) go.
        display.start("eval", "ciiv / iid batches", 1, completed=1)
        train(ProgressEvent("epoch_start", 0, 3, 0, 5))
        assert display.completed("run") == 0 and "epochs 0/3" in display.line()
        assert "eval" not in display


def test_the_evaluation_adapter_shows_batches_attacks_and_steps():
    display, out, clock = plain(interval=10)
    progress = EvalProgress(display, "quick/full")
    with display:
        progress("start", {"total": 8, "done": 0})
        progress("attack", {"batch": 0, "name": "fgsm", "index": 0, "attacks": 2})
        progress("attack", {"batch": 0, "name": "pgd-10", "index": 1, "attacks": 2})
        for step in range(1, 41):
            clock.t += 0.5
            progress("step", {"batch": 0, "name": "pgd-10", "step": step, "steps": 40})
        progress("batch", {"batch": 0, "done": 1, "total": 8, "robust": 50, "seen": 128})
        progress("attack", {"batch": 1, "name": "fgsm", "index": 0, "attacks": 2})
        progress("attack", {"batch": 1, "name": "pgd-10", "index": 1, "attacks": 2})
        clock.t += 1
        progress("step", {"batch": 1, "name": "pgd-10", "step": 12, "steps": 40})
        assert "step" in display and display.completed("step") == 12
        progress("audit", {"check": "randomness", "status": None, "done": 0, "total": 9})
        progress("plan", {"anything": 1})  # an event it does not know is ignored
        assert "eval" in display and "audit" in display
    text = lines(out)
    # Attacks and batches are phases (a line each); steps come at most every 10 s.
    assert sum("step " in line for line in text) <= 3
    # 10 s after the phase line, 1.5 of 2 attacks of 1 of 8 batches are done: 96.7 s to go.
    assert "job  quick/full batches 0/8  attack pgd-10 1/2  step 20/40  ETA 1m36s" in text[3]
    assert "quick/full batches 1/8  robust so far 50/128" in text[-1]
    assert "audit checks 0/9  randomness" in text[-1]
    # The next evaluation in the same display (the demo, a grid) replaces every bar.
    with display:
        EvalProgress(display, "quick/paper")("start", {"total": 8, "done": 0})
    assert display.line().endswith("job  quick/paper batches 0/8")
