"""``benchmarks/gpu_check.py --small``: the GPU check's CPU smoke run, so the script never rots."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_small_gpu_check_runs_every_item_and_writes_its_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIIV_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look it up
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--small", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    items = report["items"]
    assert list(items) == ["pytest", "throughput", "real_run", "bf16_attack"]
    assert {name: item["status"] for name, item in items.items()} == dict.fromkeys(items, "ok")
    assert all("wall_s" in item for item in items.values())
    rows = items["throughput"]["rows"]
    names = [row["name"] for row in rows]
    assert names[:3] == ["vanilla train bf16+cl", "ciiv train fp32", "ciiv train bf16+cl"]
    assert all(row["images_per_s"] > 0 for row in rows)
    assert "compile_s" in rows[3] and "batched_over_naive_fp32" in items["throughput"]["derived"]
    run = items["real_run"]
    assert set(run["phases"]) == {"data_s", "train_s", "eval_full_s", "eval_paper_s"}
    assert {"full", "paper"} <= set(run["eval"]) and len(run["epochs"]) == 1
    assert 0 <= run["eval"]["full"]["robust_accuracy"] <= run["eval"]["full"]["clean_accuracy"]
    bf16 = items["bf16_attack"]
    assert {"fp32", "bf16", "agree_within_noise"} <= set(bf16)
    assert "real_run" in capsys.readouterr().out  # the table
