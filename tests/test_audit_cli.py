"""``ciiv audit RUN_DIR``: loads a run, picks the test examples like ``ciiv eval``, writes
RUN_DIR/audit/audit.json, prints a table and exits non-zero when a check fails."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

import ciiv.train
from ciiv.cli import main
from ciiv.train import fit, load_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A vanilla run on 16 px shapes that trains in well under a second."""
    values = {
        "data.options": {"n_train": 112, "n_test": 24, "image_size": 16},
        "data.val_fraction": 0.25,
        "data.augment": False,
        "model.backbone": "small_cnn",
        "model.backbone_kwargs": {"width": 8},
        "method.name": "vanilla",
        "batch_size": 16,
        "epochs": 1,
        "device": "cpu",
    }
    path = tmp_path_factory.mktemp("audit") / "run"
    fit(load_config(None, values), path)
    return path


def test_audit_command_writes_json_and_passes(run_dir, capsys):
    args = ["audit", str(run_dir), "--quick", "--n-examples", "12", "--device", "cpu",
            "--eps", "4/255", "--checks", "randomness", "output_sanity"]  # fmt: skip
    assert main(args) == 0
    data = json.loads((run_dir / "audit" / "audit.json").read_text())
    assert data["passed"] is True and data["n_examples"] == 12
    assert data["run"]["run_dir"] == str(run_dir) and data["run"]["checkpoint"] == "best"
    assert [c["name"] for c in data["checks"]] == ["randomness", "output_sanity"]
    assert data["settings"]["quick"] is True
    assert data["settings"]["eps"] == pytest.approx(4 / 255)
    assert all(c["status"] == "pass" for c in data["checks"])
    out = capsys.readouterr()
    assert "randomness" in out.out and "output_sanity" in out.out and "passed" in out.err
    # Off a terminal, progress comes as timestamped lines: one per check as it starts.
    progress = [line for line in out.err.splitlines() if f"audit {run_dir}  audit checks" in line]
    assert "audit checks 0/2  randomness" in progress[0]
    assert "audit checks 1/2  output_sanity" in progress[1]


def test_audit_help_lists_the_check_names(capsys):
    from ciiv.evaluate.audit import list_checks

    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in list_checks():
        assert name in text


class _Quantised(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 8) / 8)


def test_a_failing_check_gives_exit_status_one(run_dir, tmp_path, monkeypatch, capsys):
    load_run = ciiv.train.load_run

    def quantised_run(*args, **kwargs):
        loaded = load_run(*args, **kwargs)
        return dataclasses.replace(loaded, model=_Quantised(loaded.model))

    monkeypatch.setattr(ciiv.train, "load_run", quantised_run)
    out = tmp_path / "a.json"
    args = ["audit", str(run_dir), "--quick", "--n-examples", "8", "--device", "cpu",
            "--checks", "gradient_health", "--out", str(out)]  # fmt: skip
    assert main(args) == 1
    assert json.loads(out.read_text())["checks"][0]["status"] == "fail"
    assert "FAILED" in capsys.readouterr().err


def test_usage_errors_exit_with_two(run_dir, capsys):
    assert main(["audit", str(run_dir), "--checks", "nonsense", "--device", "cpu"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert main(["audit", str(run_dir / "missing"), "--device", "cpu"]) == 2
