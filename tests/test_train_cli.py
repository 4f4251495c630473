"""`ciiv train` on the command line: flags, --set, --resume, error messages, and DDP (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import ciiv.commands.train
from ciiv.cli import main
from ciiv.commands._progress import TrainProgress
from ciiv.data import iterate_batches, to_float
from ciiv.models import predict
from ciiv.train import load_checkpoint, load_data, load_run

TINY = [
    "--dataset", "shapes", "--backbone", "small_cnn", "--device", "cpu",
    "--set", "data.options={n_train: 112, n_test: 8, image_size: 16}",
    "--set", "data.val_fraction=0.25",
    "--set", "model.backbone_kwargs.width=8",
    "--set", "model.num_views=3",
    "--set", "model.samples_per_view=2",
    "--set", "batch_size=16",
]  # fmt: skip


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_then_resume_for_more_epochs(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--method", "ciiv", "--epochs", "1", "--out", str(run)]) == 0
    assert "best validation accuracy" in capsys.readouterr().err
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["method"]["name"] == "ciiv" and config["model"]["backbone_kwargs"] == {"width": 8}
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert [r["epoch"] for r in metrics(run)] == [0, 1]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "1"]) == 2  # 2 are done
    assert "epochs: 1 is below the 2 epochs" in " ".join(capsys.readouterr().err.split())
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2


def test_a_missing_backbone_package_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    run = tmp_path / "run"
    args = ["train", *TINY, "--backbone", "timm:resnet18", "--epochs", "1", "--out", str(run)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: backbone 'timm:resnet18' needs the optional package 'timm', which is not "
        'installed: pip install "ciiv[timm]"'
    )
    assert not run.exists()


def test_print_config_applies_preset_flags_and_sets_in_order(capsys):
    args = ["train", "--config", "shapes-fast", "--epochs", "9", "--set", "epochs=4", "--set",
            "optim.lr=1/32", "--method", "trades", "--print-config"]  # fmt: skip
    assert main(args) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert (config["epochs"], config["optim"]["lr"]) == (4, 1 / 32)
    assert config["method"]["name"] == "trades"
    assert config["model"]["backbone"] == "small_cnn"  # from the preset


def test_list_names_presets_and_methods(capsys):
    assert main(["train", "--list"]) == 0
    out = capsys.readouterr().out
    assert "paper-cifar10" in out and "ciiv_mixup" in out and "preact_resnet18" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
        (["--method", "bogus"], "unknown method 'bogus'"),
        (["--dataset", "bogus"], "unknown dataset 'bogus'"),
        (["--backbone", "bogus"], "unknown backbone 'bogus'"),
        (["--set", "epochs=-3"], "epochs: must be >= 1"),
        (["--set", "data.options.rho=7"], "rho"),
        (["--config", "nope"], "neither a file nor a preset"),
        (
            ["--method", "pgd_at", "--set", "method.pgd.eps=5"],
            "method.pgd.eps: Linf eps 5 is out of range; valid: [0, 1]",
        ),
        (
            ["--method", "pgd_at", "--set", "method.pgd.norm=L2", "--set", "method.pgd.eps=30"],
            "L2 eps 30 is out of range; valid: [0, 27.71] (the image diameter sqrt(3*16*16))",
        ),
        (["--set", "checkpoint_every=-1"], "checkpoint_every: must be >= 0"),
    ],
)
def test_errors_exit_2_with_a_message_naming_the_problem(tmp_path, capsys, args, message):
    assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "r"), *args]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "error:" in err and message in err


def test_run_directory_errors(tmp_path, capsys):
    assert main(["train", *TINY]) == 2
    assert "--out RUN_DIR is required" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 2
    assert "already exists" in " ".join(capsys.readouterr().err.split())
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--config", "shapes-fast"]) == 2
    assert (run / "notes.txt").read_text() == "mine"


def test_an_out_that_cannot_be_created_exits_2(tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    for out in (tmp_path / "file" / "run", "/proc/ciiv-run"):
        assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"cannot create the run directory {out}" in err and "Traceback" not in err


def test_ctrl_c_saves_the_step_and_exits_130(tmp_path, capsys, monkeypatch):
    class CtrlC(TrainProgress):
        def __call__(self, event):
            super().__call__(event)
            if event.kind == "step" and event.step == event.steps:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(ciiv.commands.train, "TrainProgress", CtrlC)
    run = tmp_path / "run"
    # The bar hears of epoch 1's last step: the loop finishes the epoch, saves it and stops.
    assert main(["train", *TINY, "--method", "vanilla", "--epochs", "2", "--out", str(run)]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "stopped by SIGINT after epoch 1" in err and f"ciiv train --resume {run}" in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    assert [r["epoch"] for r in metrics(run)] == [0, 1]


def test_sigterm_from_the_cluster_saves_and_exits_143(tmp_path):
    """What SLURM or a preempted cloud machine does: SIGTERM to a training process."""
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "ciiv", "train", *TINY, "--method", "vanilla", "--epochs", "500",
        "--set", "checkpoint_every=1", "--out", str(run),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 90
    while not (run / "checkpoints" / "last.pt").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 90 s"
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=90)
    assert process.returncode == 143, err[-3000:]
    err = " ".join(err.split())
    assert "stopped by SIGTERM" in err and f"ciiv train --resume {run}" in err
    assert "Traceback" not in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["epochs"] == 500


def test_ddp_two_processes_on_the_cpu(tmp_path):
    """torchrun with 2 gloo processes: data sharded, rank 0 writes, metrics reduced over ranks."""
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "ciiv", "train", *TINY, "--method", "vanilla", "--epochs", "1", "--out", str(run),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics(run)
    assert len(rows) == 1
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    # Validation was sharded over the 2 ranks and summed: it equals a one-process evaluation of
    # the saved (deterministic) model on the whole validation split.
    loaded = load_run(run, "last", device="cpu")
    val = load_data(loaded.config.data).val
    correct = sum(
        (predict(loaded.model, to_float(x)) == y).sum().item()
        for x, y in iterate_batches(val.images, val.labels, 64)
    )
    assert rows[0]["val_acc"] == pytest.approx(correct / len(val))
    assert torch.isfinite(torch.tensor(rows[0]["train_loss"]))
