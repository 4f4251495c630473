"""`ciiv eval --model` / `ciiv audit --model`: a user's model file, end to end through the CLI."""

import json
import textwrap

import pytest
import torch

from ciiv.cli import main
from ciiv.evaluate.records import read_jsonl
from ciiv.evaluate.selection import select_examples

pytestmark = pytest.mark.usefixtures("one_thread")

# A randomized defense as a user writes it: it drops a random 10 % of the pixels, with one mask
# per call (shared by the batch), and declares nothing.
DEFENSE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Defense(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, num_classes))

        def forward(self, x):
            keep = (torch.rand(1, 1, *x.shape[-2:], device=x.device) > 0.1).to(x.dtype)
            return self.net(x * keep)


    def build(num_classes):
        return Defense(num_classes)
    """
)
SHAPES = ["--dataset", "shapes", "--dataset-option", "n_train=40", "--dataset-option",
          "n_test=30", "--dataset-option", "image_size=16"]  # fmt: skip


@pytest.fixture
def user_files(tmp_path):
    (tmp_path / "defense.py").write_text(DEFENSE)
    for name, seed in (("w.pt", 0), ("other.pt", 1)):
        torch.manual_seed(seed)
        net = torch.nn.Linear(3 * 16 * 16, 4)  # shapes has 4 classes by default
        torch.save({"state_dict": {f"net.1.{k}": v for k, v in net.state_dict().items()}},
                   tmp_path / name)  # fmt: skip
    return tmp_path


def _eval(files, *extra, weights="w.pt"):
    return ["eval", "--model", f"{files}/defense.py:build", "--weights", str(files / weights),
            *SHAPES, "--out", str(files / "mine"), "--suite", "quick", "--n-examples", "10",
            "--batch-size", "5", "--eot", "2", "--draws", "2", "--device", "cpu", "--no-audit",
            *extra]  # fmt: skip


def test_eval_a_user_model_file_writes_a_run_like_directory_and_resumes(user_files, capsys, caplog):
    import hashlib

    assert main(_eval(user_files, "--protocol", "both")) == 0
    assert "runs the full protocol only" in caplog.text
    out = user_files / "mine" / "eval" / "quick-full"
    summary = json.loads((out / "summary.json").read_text())
    assert not (user_files / "mine" / "eval" / "quick-paper").exists()
    digest = hashlib.sha256((user_files / "w.pt").read_bytes()).hexdigest()
    model = {"spec": f"{user_files}/defense.py:build", "weights_sha256": digest, "normalize": None}
    assert summary["run"]["model"] == model
    assert json.loads((out / "config.json").read_text())["model"] == model
    assert summary["run"]["dataset"] == "shapes" and summary["dataset"] == "shapes"
    assert summary["model"]["stochastic"] is True  # found by two forward passes
    assert summary["draws"] == 2 and summary["n_examples"] == 10
    rows = read_jsonl(out / "examples.jsonl")
    assert [r["index"] for r in rows] == select_examples(30, 10, 0).tolist()
    # The same command resumes: nothing is recomputed.
    batches = (out / "batches.jsonl").read_text()
    assert main(_eval(user_files)) == 0
    assert (out / "batches.jsonl").read_text() == batches
    # Other weights into the same directory are refused; --overwrite starts afresh.
    capsys.readouterr()
    assert main(_eval(user_files, weights="other.pt")) == 2
    assert "different settings (model, model_digest)" in " ".join(capsys.readouterr().err.split())
    assert main(_eval(user_files, "--overwrite", weights="other.pt")) == 0
    other = hashlib.sha256((user_files / "other.pt").read_bytes()).hexdigest()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["model"]["weights_sha256"] == other


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--protocol", "paper"], "--protocol paper attacks a CiiV model's centre view"),
        ({"--weights": "missing.pt"}, "missing.pt does not exist"),
        ({"--dataset": "nope"}, "unknown dataset 'nope'"),
        ({"--model": "{files}/defense.py:absent"}, "has no attribute 'absent'"),
        ({"--dataset-option": "image_size=24"}, "failed on images of shape (2, 3, 24, 24)"),
        (["RUN_DIR"], "give RUN_DIR or --model SPEC"),
    ],
)
def test_eval_model_errors_exit_2_with_one_line(user_files, capsys, change, message):
    args = _eval(user_files)
    if isinstance(change, dict):
        for flag, value in change.items():
            args[len(args) - args[::-1].index(flag)] = value.format(files=user_files)
    else:
        args += [str(user_files)] if change == ["RUN_DIR"] else change
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err


def test_eval_model_needs_a_dataset_and_an_out_dir(user_files, capsys):
    for flag in ("--dataset", "--out"):
        args = _eval(user_files)
        at = args.index(flag)
        del args[at : at + 2]
        assert main(args) == 2
        assert f"--model needs {flag}" in capsys.readouterr().err


def test_audit_a_user_model_writes_into_its_directory(user_files):
    args = ["audit", "--model", f"{user_files}/defense.py:build", "--weights",
            str(user_files / "w.pt"), *SHAPES, "--out", str(user_files / "mine"), "--n-examples",
            "8", "--device", "cpu", "--quick", "--checks", "randomness",
            "output_sanity"]  # fmt: skip
    code = main(args)
    audit = json.loads((user_files / "mine" / "audit" / "audit.json").read_text())
    assert [c["name"] for c in audit["checks"]] == ["randomness", "output_sanity"]
    assert audit["stochastic"] is True and audit["n_examples"] == 8
    # What was audited: the spec and the weights' digest, as in an evaluation's summary.
    assert audit["run"]["model"]["spec"].endswith("defense.py:build")
    assert len(audit["run"]["model"]["weights_sha256"]) == 64
    assert code == (0 if audit["passed"] else 1)


def test_report_card_of_a_user_model(user_files, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from ciiv.card import CARD_SCHEMA

    assert main(_eval(user_files)) == 0
    (tmp_path / "card.yaml").write_text("name: Pixel dropout\nauthors: A. User\nreported: 61.5\n")
    out = tmp_path / "report"
    args = ["report", str(user_files / "mine"), "--out", str(out), "--card", "--card-info",
            str(tmp_path / "card.yaml")]  # fmt: skip
    assert main(args) == 0
    (card_file,) = sorted((out / "cards").glob("*.json"))
    card = json.loads(card_file.read_text())
    jsonschema.validate(card, CARD_SCHEMA)
    summary = json.loads((user_files / "mine/eval/quick-full/summary.json").read_text())
    assert card["name"] == "Pixel dropout" and card["reported"] == "61.5"
    assert card["clean_acc"] == f"{100 * summary['clean_accuracy']:.2f}"
    assert card["robust_acc"] == f"{100 * summary['robust_accuracy']:.2f}"
    assert card["ciiv"]["run"]["model"]["spec"].endswith("defense.py:build")
    assert card["architecture"] == "Defense" and "unreliable" not in card  # no audit ran
    assert card_file.with_suffix(".md").read_text().startswith("# Pixel dropout")
