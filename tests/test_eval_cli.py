"""`ciiv eval` on a run directory: files, example selection, resume, both protocols, audit hook."""

import json
import re
import sys

import pytest
import yaml

from ciiv.cli import main
from ciiv.evaluate.records import read_jsonl
from ciiv.evaluate.selection import eval_dir_name, select_examples

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from ciiv.train import fit, load_config

    config = load_config(
        None,
        {
            "data.dataset": "shapes",
            "data.options": {"n_train": 160, "n_test": 48, "image_size": 16},
            "method.name": "ciiv",
            "model.backbone": "small_cnn",
            "model.backbone_kwargs": {"width": 8},
            "model.num_views": 3,
            "model.samples_per_view": 1,
            "epochs": 1,
            "batch_size": 32,
            "device": "cpu",
        },
    )
    path = tmp_path_factory.mktemp("runs") / "ciiv"
    fit(config, path)
    return path


def _args(run_dir, *extra):
    return ["eval", str(run_dir), "--suite", "quick", "--n-examples", "12", "--batch-size", "5",
            "--eot", "2", "--draws", "2", "--device", "cpu", "--no-audit", *extra]  # fmt: skip


def test_eval_writes_rows_and_summary_for_both_protocols_and_resumes(run_dir):
    assert main(_args(run_dir, "--protocol", "both")) == 0
    for protocol in ("full", "paper"):
        out = run_dir / "eval" / f"quick-{protocol}"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["protocol"] == protocol and summary["n_examples"] == 12
        assert summary["run"]["method"] == "ciiv" and summary["run"]["test_split"] == "iid"
        # The EOT the attacks used: E under the full protocol, 1 under the paper's (issue 11.6).
        assert summary["eot"] == (2 if protocol == "full" else 1) and summary["draws"] == 2
        assert summary["eot_requested"] == 2
        assert set(summary["eot_by_attack"].values()) == {summary["eot"]}
        assert "audit" not in summary
        rows = read_jsonl(out / "examples.jsonl")
        assert [r["index"] for r in rows] == select_examples(48, 12, 0).tolist()
        assert all(len(r["clean"]["preds"]) == 2 for r in rows)
    # Running again resumes: every batch is found done, nothing is recomputed.
    batches = (run_dir / "eval" / "quick-full" / "batches.jsonl").read_text()
    assert main(_args(run_dir)) == 0
    assert (run_dir / "eval" / "quick-full" / "batches.jsonl").read_text() == batches
    # Other settings into the same directory are refused with a hint.
    assert main(_args(run_dir, "--seed", "3")) == 2


def test_eval_stores_the_audit_and_names_directories(run_dir, monkeypatch, capsys):
    import ciiv.evaluate.audit as audit_module

    calls = []

    class Fake:
        def to_dict(self):
            return {"passed": True, "counts": {"pass": 1}}

    def fake_audit(model, x, y, eps, norm, quick, seed, checks, **options):
        calls.append((x.shape[0], eps, norm, quick, tuple(checks)))
        return Fake()

    monkeypatch.setattr(audit_module, "audit", fake_audit)
    out = run_dir / "custom"
    args = _args(run_dir, "--out", str(out), "--test-split", "shifted", "--eps", "4/255")
    args.remove("--no-audit")
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    default = summary["audit"].pop("default")
    assert summary["audit"] == {"passed": True, "counts": {"pass": 1}}
    # The default audit of a random model: randomness and gradient health, sized to the suite.
    n = default["examples"]
    assert calls == [(n, pytest.approx(4 / 255), "Linf", True, ("randomness", "gradient_health"))]
    assert 2 <= n <= 12 and default["suite_forward_passes"] == summary["forward_passes"]
    # The cost was announced before the batches, the time estimate after the first one.
    err = " ".join(capsys.readouterr().err.split())
    assert "plan: 12 examples; suite <=" in err and "default audit (randomness" in err
    assert "first batch" in err and "left for the suite" in err
    assert summary["threat_model"]["eps_label"] == "4/255"
    assert summary["run"]["test_split"] == "shifted"
    assert eval_dir_name("quick", "full", "shifted", "4/255") == "quick-full-shifted-eps4_255"


def test_eval_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing"), "--device", "cpu"]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["eval", "--list"]) == 0


def test_eval_list_prints_every_suite_and_attack_name_whole(capsys):
    from ciiv.evaluate import get_suite, list_suites

    assert main(["eval", "--list"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "..." not in out
    words = set(out.replace(",", " ").split())
    for name in list_suites():
        assert name in words
        assert {e.name for e in get_suite(name).expanded()} <= words


def test_off_a_terminal_progress_comes_as_timestamped_lines(run_dir, capsys):
    assert main(_args(run_dir, "--out", str(run_dir / "lines"))) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if f"eval {run_dir}  " in line]
    pattern = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  eval ")
    assert lines and all(pattern.match(line) for line in lines)
    # At once at the start, at every attack of every batch (phases), after every batch.
    assert "quick/full batches 0/3" in lines[0]
    assert sum("attack pgd-10 " in line for line in lines) >= 3
    assert "quick/full batches 3/3  robust so far" in lines[-1]


def test_a_suite_file_runs_and_bad_ones_exit_2_before_anything_is_written(run_dir, tmp_path,
                                                                          capsys):  # fmt: skip
    suite = {
        "name": "mine",
        "description": "FGSM and a 2-step PGD",
        "norm": "Linf",
        "budget": {"default": "4/255"},
        "entries": [
            {"name": "fgsm", "attack": "fgsm"},
            {"name": "pgd-2", "attack": "pgd", "hyper": {"steps": 2}, "step_fraction": 0.5},
        ],
    }
    path = tmp_path / "my_suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    args = _args(run_dir, "--n-examples", "4")
    args[args.index("quick")] = str(path)
    assert main(args) == 0
    summary = json.loads((run_dir / "eval" / "mine-full" / "summary.json").read_text())
    assert summary["suite"] == "mine" and set(summary["per_attack"]) == {"fgsm", "pgd-2"}
    capsys.readouterr()
    for name, text, message in (
        ("missing.yaml", None, "cannot read suite file"),
        (
            "typo.yaml",
            yaml.safe_dump(
                {
                    **suite,
                    "name": "typo",
                    "entries": [{"name": "p", "attack": "pgd", "hyper": {"stepz": 2}}],
                }
            ),
            "stepz",
        ),  # fmt: skip
    ):
        bad = tmp_path / name
        if text is not None:
            bad.write_text(text)
        args[args.index(str(path))] = str(bad)
        assert main(args) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert str(bad) in err and message in err and "Traceback" not in err
        args[args.index(str(bad))] = str(path)
    assert not (run_dir / "eval" / "typo-full").exists()


def test_a_missing_optional_package_is_one_line_before_the_run_starts(run_dir, capsys,
                                                                      monkeypatch):  # fmt: skip
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # as if it were not installed
    args = _args(run_dir)
    args[args.index("quick")] = "standard-linf"
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: attack 'autoattack' needs the optional package 'pyautoattack'")
    assert err.endswith('pip install "ciiv[autoattack]"') and len(err.splitlines()) == 1
    assert not (run_dir / "eval" / "standard-linf-full").exists()


def test_bad_values_exit_2_with_what_is_valid(run_dir, capsys):
    for extra, message in (
        (["--n-examples", "-5"], "n_examples must be >= 0 (0 = all examples), got -5"),
        (["--eps", "2"], "Linf eps 2 is out of range; valid: [0, 1]"),
        (["--out", "/proc/ciiv-eval"], "cannot create the output directory /proc/ciiv-eval"),
    ):
        assert main(_args(run_dir, *extra)) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_torchrun_splits_examples_and_merges_to_the_single_process_rows(run_dir, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    common = ["--n-examples", "20", "--batch-size", "4", "--eot", "2", "--draws", "2",
              "--device", "cpu", "--no-audit", "--suite", "quick"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            "torchrun",
            "--nproc_per_node",
            "2",
            "-m",
            "ciiv",
            "eval",
            str(run_dir),
            *common,
            "--out",
            str(tmp_path / "two"),
        ],  # fmt: skip
        check=True,
        env=env,
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, "-m", "ciiv", "eval", str(run_dir), *common, "--out", str(tmp_path / "1")],
        check=True,
        env=env,
        capture_output=True,
    )
    assert read_jsonl(tmp_path / "two" / "examples.jsonl") == read_jsonl(
        tmp_path / "1" / "examples.jsonl"
    )
    assert not (tmp_path / "two" / "shards").exists()
