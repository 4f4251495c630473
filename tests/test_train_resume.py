"""Interrupted runs: stop signals, mid-epoch checkpoints, and every leftover a crash can leave."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from ciiv.data import DatasetNotFoundError
from ciiv.train import (
    ConfigError,
    ProgressEvent,
    RunDirError,
    TrainingInterrupted,
    fit,
    load_checkpoint,
    load_config,
    load_run,
    resume,
)
from ciiv.train.methods import option_names
from test_train_loop import tiny as tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")

TIMING_KEYS = ("images_per_s", "epoch_time_s")


def tiny(method: str = "ciiv", **overrides):
    """test_train_loop's tiny run (5 steps per epoch of a few milliseconds), deterministic, with
    a learning rate and w_reg that change after the first epoch."""
    schedule = {"optim.milestones": [1], "deterministic": True}
    if "w_reg_milestones" in option_names(method):
        schedule["method.w_reg_milestones"] = [1]
    return tiny_run(method, **{**schedule, **overrides})


def records(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run the interrupted ones must equal."""
    run = tmp_path_factory.mktemp("whole") / "run"
    return fit(tiny(), run), run


def at(epoch: int, step: int, action):
    """A progress callback that calls ``action()`` after optimiser step ``step`` of ``epoch``."""

    def callback(event: ProgressEvent) -> None:
        if event.kind == "step" and (event.epoch, event.step) == (epoch, step):
            action()

    return callback


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_the_step_and_resume_is_bit_exact(tmp_path, whole, signum, code):
    run = tmp_path / "run"
    before = signal.getsignal(signum)
    send = at(0, 2, lambda: os.kill(os.getpid(), signum))
    with pytest.raises(TrainingInterrupted) as stopped:
        fit(tiny(), run, progress=send, progress_every=1)
    assert signal.getsignal(signum) is before  # the loop's handlers are gone again
    assert stopped.value.exit_code == code and (stopped.value.epochs_done, stopped.value.step) == (
        0,
        2,
    )
    assert f"ciiv train --resume {run}" in str(stopped.value)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step"]) == (0, 2)
    assert not (run / "metrics.jsonl").exists()  # no epoch finished
    resumed = resume(run)
    assert same_weights(resumed.model, whole[0].model)
    assert records(run) == records(whole[1])


def test_checkpoint_every_bounds_what_a_crash_loses(tmp_path, whole):
    run = tmp_path / "run"

    def crash():  # like kill -9: no handler runs, nothing more is saved
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        fit(tiny(checkpoint_every=3), run, progress=at(1, 3, crash), progress_every=1)
    # Saved after global steps 3 and 6 (epoch 1, step 1); step 9 was not reached.
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step"]) == (1, 1)
    assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == 1
    resumed = resume(run)
    assert same_weights(resumed.model, whole[0].model)
    assert records(run) == records(whole[1])


def test_resume_restores_a_missing_best_checkpoint(tmp_path):
    run = tmp_path / "run"
    fit(tiny("vanilla", epochs=1), run)
    best = run / "checkpoints" / "best.pt"
    best.unlink()  # killed after last.pt was replaced, before best.pt was written
    resume(run)
    assert load_checkpoint(best)["epoch"] == 1
    assert load_run(run, "best").epoch == 1


def test_a_run_without_a_checkpoint_can_be_resumed_or_rerun(tmp_path):
    def stop():
        raise KeyboardInterrupt

    config = tiny("vanilla", epochs=1)
    for run in (tmp_path / "a", tmp_path / "b"):
        with pytest.raises(KeyboardInterrupt):
            fit(config, run, progress=at(0, 1, stop), progress_every=1)
        assert not list((run / "checkpoints").iterdir()) and (run / "config.yaml").is_file()
    assert len(resume(tmp_path / "a").history) == 1  # from its config.yaml
    assert len(fit(config, tmp_path / "b").history) == 1  # the same command again
    # A run stopped by a data error before anything else is written is run again as well.
    broken = tiny("vanilla", **{"data.dataset": "imagefolder", "data.options": {}})
    for _ in range(2):
        with pytest.raises(DatasetNotFoundError):
            fit(broken, tmp_path / "c")
    with pytest.raises(DatasetNotFoundError):
        resume(tmp_path / "c")


def test_resume_removes_stale_temporaries_and_keeps_epochs_done(tmp_path):
    run = tmp_path / "run"
    fit(tiny("vanilla", epochs=2), run)
    stale = [run / "checkpoints" / ".last.pt.x1y2.tmp", run / "checkpoints" / ".best.pt.z3.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    with pytest.raises(ConfigError, match="epochs: 1 is below the 2 epochs .* already trained"):
        resume(run, {"epochs": 1})
    assert load_config(run / "config.yaml").epochs == 2
    resume(run)
    assert not any(path.exists() for path in stale)


def test_an_out_that_cannot_be_created_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    for out in (tmp_path / "file" / "run", "/proc/ciiv-run"):
        with pytest.raises(RunDirError, match="cannot create the run directory"):
            fit(tiny("vanilla", epochs=1), out)
