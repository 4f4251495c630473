"""`ciiv experiment`: a tiny shapes grid end to end, resumed after a kill, cells, dry run, grid
validation, the honesty invariants and results.md regenerated from results.json."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ciiv.cli import main
from ciiv.experiment import list_grids, load_grid, render_markdown
from ciiv.experiment.results import _flag_eps_rises, _margin, _row

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "description": "a tiny shapes grid for the tests",
    "set": {
        "data.options": {"n_train": 160, "n_test": 40},
        "epochs": 2,
        "batch_size": 32,
        "device": "cpu",
        "deterministic": True,
    },
    "runs": [
        {"name": "vanilla", "config": "shapes-fast", "set": {"method.name": "vanilla"}},
        {"name": "ciiv", "config": "shapes-fast", "set": {"model.num_views": 2}},
    ],
    "seeds": [0],
    "eval": {
        "suites": ["quick"],
        "protocols": ["full", "paper"],
        "eps": ["4/255", "8/255"],
        "n_examples": 8,
        "eot": 1,
        "draws": 2,
        "batch_size": 4,
        "audit_examples": 4,
    },
    "audit": "none",
}


def _write_grid(path: Path, **changes) -> Path:
    grid = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        grid[key] = value
    path.write_text(yaml.safe_dump(grid))
    return path


def _stable(results: dict) -> dict:
    """results.json without wall times (the only thing a resumed run may change)."""
    results = json.loads(json.dumps(results))
    for cell in results["cells"]:
        cell.pop("phases_s")
        for entry in cell["evals"]:
            entry.pop("elapsed_s")
    return results


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    grid = _write_grid(root / "tiny.yaml")
    assert main(["experiment", str(grid), "--out", str(root / "out")]) == 0
    return grid, root / "out"


def test_grid_writes_cells_results_and_plots(uninterrupted):
    _, out = uninterrupted
    results = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in results["cells"]] == ["vanilla-s0", "ciiv-s0"]
    assert all(c["status"] == "complete" for c in results["cells"])
    table = results["tables"][0]
    assert (table["dataset"], table["suite"], table["eps_label"]) == ("shapes", "quick", "4/255")
    rows = {row["run"]: row for row in table["rows"]}
    # A model without views runs the paper protocol exactly as the full one: evaluated once.
    assert rows["vanilla"]["paper"] is None and not rows["vanilla"]["views"]
    assert rows["ciiv"]["paper"] is not None and rows["ciiv"]["views"]
    for row in rows.values():
        assert 0 <= row["full"]["mean"] <= row["clean"]["mean"] <= 1
    ciiv = next(c for c in results["cells"] if c["run"] == "ciiv")
    assert len(ciiv["evals"]) == 4  # 2 protocols x 2 eps
    for entry in ciiv["evals"]:
        assert (out / entry["source"]).is_file()
    for plot in results["plots"]:
        assert (out / plot).stat().st_size > 0
    assert (out / "report" / "report.md").is_file()
    # The run directories are ordinary runs: ciiv eval / report take them as they are.
    assert (out / "cells" / "ciiv-s0" / "checkpoints" / "best.pt").is_file()


def test_results_md_is_regenerated_identically_from_results_json(uninterrupted):
    _, out = uninterrupted
    results = json.loads((out / "results.json").read_text())
    assert render_markdown(results) == (out / "results.md").read_text()


def test_rerun_skips_complete_cells_and_report_only_writes_the_same(uninterrupted, capsys):
    grid, out = uninterrupted
    before = _stable(json.loads((out / "results.json").read_text()))
    assert main(["experiment", str(grid), "--out", str(out)]) == 0
    assert "skipped" in capsys.readouterr().err
    assert main(["experiment", str(grid), "--out", str(out), "--report-only"]) == 0
    assert _stable(json.loads((out / "results.json").read_text())) == before


def test_killed_grid_resumes_to_the_same_results(uninterrupted, tmp_path):
    grid, reference = uninterrupted
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ciiv", "experiment", str(grid), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # Kill it in the middle of the CiiV cell's evaluation (some batches written, not all).
    target = out / "cells" / "ciiv-s0" / "eval"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any(target.glob("*/batches.jsonl")):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # stopped half way, not finished
    assert not (out / "results.json").exists()
    assert main(["experiment", str(grid), "--out", str(out)]) == 0
    resumed = _stable(json.loads((out / "results.json").read_text()))
    expected = _stable(json.loads((reference / "results.json").read_text()))
    assert resumed["tables"] == expected["tables"]
    assert [c["evals"] for c in resumed["cells"]] == [c["evals"] for c in expected["cells"]]


def test_cell_option_runs_one_cell_and_dry_run_runs_nothing(tmp_path, capsys):
    grid = _write_grid(tmp_path / "tiny.yaml")
    out = tmp_path / "out"
    assert main(["experiment", str(grid), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "vanilla-s0" in printed and "ciiv-s0" in printed and "eval" in printed
    assert not out.exists()
    assert main(["experiment", str(grid), "--out", str(out), "--cell", "0"]) == 0
    assert (out / "cells" / "vanilla-s0.json").is_file()
    assert not (out / "cells" / "ciiv-s0").exists()
    assert not (out / "results.json").exists()  # with --cell: --report-only when all are done
    assert main(["experiment", str(grid), "--out", str(out), "--cell", "7"]) == 2
    assert "cells 0..1" in capsys.readouterr().err


def test_changed_grid_is_refused_per_cell_and_failures_do_not_stop_the_grid(tmp_path, capsys):
    grid = _write_grid(tmp_path / "tiny.yaml", runs=TINY["runs"][:1])
    out = tmp_path / "out"
    assert main(["experiment", str(grid), "--out", str(out)]) == 0
    changed = dict(TINY["eval"], n_examples=6)
    runs = [TINY["runs"][0], {"name": "missing", "config": "paper-mnist", "set": {
        "data.data_dir": str(tmp_path / "nowhere"), "data.download": False}}]  # fmt: skip
    grid = _write_grid(tmp_path / "tiny.yaml", runs=runs, eval=changed)
    assert main(["experiment", str(grid), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "different spec" in err and "failed" in err
    results = json.loads((out / "results.json").read_text())
    assert [c["status"] for c in results["cells"]] == ["complete", "failed"]
    assert "missing-s0 failed" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"eval": {"suites": ["nope"]}}, "unknown suite"),
        ({"eval": {"protocols": ["half"]}}, "eval.protocols"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"runs": [{"name": "a", "config": "shapes-fast"}, {"name": "a"}]}, "unique"),
        ({"runs": [{"name": "a", "set": {"optim.lrr": 1}}]}, "optim.lr"),
        ({"audit": "sometimes"}, "audit"),
        ({"evals": {}}, "unknown config key 'evals'"),
    ],
)
def test_bad_grids_fail_before_anything_runs(tmp_path, capsys, change, message):
    grid = _write_grid(tmp_path / "bad.yaml", **change)
    assert main(["experiment", str(grid), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "module, change, message",
    [
        ("timm", {"set": {**TINY["set"], "model.backbone": "timm:resnet18"}},
         "backbone 'timm:resnet18' needs the optional package 'timm'"),
        ("pyautoattack", {"eval": {**TINY["eval"], "suites": ["quick", "standard-linf"]}},
         "attack 'autoattack' needs the optional package 'pyautoattack'"),
    ],
)  # fmt: skip
def test_a_missing_optional_package_stops_the_grid_before_it_writes(
    tmp_path, capsys, monkeypatch, module, change, message
):
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    grid = _write_grid(tmp_path / "grid.yaml", **change)
    assert main(["experiment", str(grid), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "pip install" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_grid_takes_suite_files_and_names_their_directories_after_the_suite(tmp_path):
    from ciiv.experiment.runner import cell_evaluations

    suite = {"name": "mine", "norm": "Linf", "budget": {"default": "8/255"},
             "entries": [{"name": "fgsm", "attack": "fgsm"}]}  # fmt: skip
    path = tmp_path / "suites" / "mine.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(suite))
    grid = load_grid(
        _write_grid(tmp_path / "grid.yaml", eval={**TINY["eval"], "suites": [str(path)]})
    )
    names = [name for _, _, _, name in cell_evaluations(grid, views=False)]
    assert names == ["mine-full-eps4_255", "mine-full-eps8_255"]
    path.write_text("name: mine\n")
    with pytest.raises(ValueError, match=r"eval.suites: suite file .*mine.yaml"):
        load_grid(tmp_path / "grid.yaml")


@pytest.mark.parametrize("name", list_grids())
def test_built_in_grids_resolve(name):
    grid = load_grid(name)
    assert {c.config.method.name for c in grid.cells()} >= {"vanilla", "ciiv"}


def _evaluation(protocol, eps, robust, n=500):
    return {
        "suite": "quick",
        "protocol": protocol,
        "eps": eps,
        "eps_label": str(eps),
        "views": True,
        "n": n,
        "attack_eot": [8],
        "draws": 10,
        "clean": 0.9,
        "clean_ci95": [0.8, 0.95],
        "robust": robust,
        "robust_ci95": [0.0, 1.0],
    }


def _cell(evals):
    return {"name": "ciiv-s0", "run": "ciiv", "seed": 0, "method": "ciiv", "dataset": "mnist",
            "audit": None, "evals": evals}  # fmt: skip


def test_honesty_invariants_flag_only_differences_beyond_noise():
    assert _margin(0.5, 500, 0.5, 500) == pytest.approx(1.96 * (0.5 / 500) ** 0.5 + 1 / 500)
    # Full above paper by 1 point at n = 500: noise. By 20 points: flagged.
    close = _cell([_evaluation("full", 0.1, 0.51), _evaluation("paper", 0.1, 0.50)])
    assert _row("ciiv", [close], "quick", "0.1")["flags"] == []
    far = _cell([_evaluation("full", 0.1, 0.70), _evaluation("paper", 0.1, 0.50)])
    row = _row("ciiv", [far], "quick", "0.1")
    assert len(row["flags"]) == 1 and "weaker than the surrogate" in row["flags"][0]
    assert row["gap"]["mean"] == pytest.approx(-0.2)
    # Robust accuracy rising with eps beyond noise is flagged on the larger eps's row.
    rising = _cell([_evaluation("full", 0.1, 0.30), _evaluation("full", 0.3, 0.60)])
    tables = [
        {"dataset": "mnist", "suite": "quick", "eps_label": label, "rows": [{"run": "ciiv",
         "flags": []}]} for label in ("0.1", "0.3")
    ]  # fmt: skip
    _flag_eps_rises([rising], tables)
    assert tables[0]["rows"][0]["flags"] == []
    assert "rises" in tables[1]["rows"][0]["flags"][0]


def test_certified_section_lists_the_curve_of_each_certified_cell():
    from ciiv.experiment.results import _certified_lines

    curve = [{"radius": 0.0, "accuracy": 0.8, "ci95": [0.5, 0.9]},
             {"radius": 0.25, "accuracy": 0.5, "ci95": [0.2, 0.8]}]  # fmt: skip
    cert = {"sigma": 0.25, "n": 100, "alpha": 0.001, "n_examples": 10, "abstain_rate": 0.1,
            "elapsed_s": 12.3,
            "curve": curve, "source": "cells/rs-s0/certify/x/summary.json"}  # fmt: skip
    lines = _certified_lines(
        [{"name": "rs-s0", "certified": [cert]}, {"name": "v", "certified": []}]
    )
    assert "| rs-s0 | 0.25 | 100 | 0.001 | 10 | 10.0 | 12 | 80.0 | 50.0 |" in lines
    assert _certified_lines([{"name": "v", "certified": []}]) == []
