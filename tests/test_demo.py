"""The demo end to end at a reduced size: both methods trained, attacked and reported."""

import json

import pytest

from ciiv.cli import main
from ciiv.demo import DemoSettings, run_demo, table_rows

TINY = DemoSettings(epochs=1, n_train=160, n_test=8, eot=2, draws=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    return out, run_demo(out, TINY)


def test_demo_writes_results_report_and_plot(demo):
    out, results = demo
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "accuracy.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    header, rows = table_rows(results)
    assert header[:3] == ["method", "test split", "clean"] and header[-1] == "worst case"
    assert {(r[0], r[1]) for r in rows} == {
        (m, s) for m in ("vanilla", "ciiv") for s in ("iid", "shifted")
    }
    for row in rows:
        assert "| " + " | ".join(row) + " |" in report
        worst, clean = float(row[-1]), float(row[2])
        numbers = [float(v) for v in row[3:-1] if v != "n/a"]
        assert worst <= clean and all(worst <= v for v in numbers)
    # BPDA applies to CiiV only; the vanilla row says so instead of inventing a number.
    bpda = header.index("pgd-10-bpda")
    assert {r[0]: r[bpda] for r in rows if r[1] == "iid"}["vanilla"] == "n/a"
    for method in ("vanilla", "ciiv"):
        assert (out / "runs" / method / "checkpoints" / "best.pt").exists()
        summary = results["methods"][method]["splits"]["iid"]["summary"]
        assert json.loads(open(summary).read())["protocol"] == "full"


def test_demo_never_overwrites_earlier_results(demo, capsys):
    out, _ = demo
    before = (out / "report.md").read_text()
    assert main(["demo", "--out", str(out), "--epochs", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "report.md").read_text() == before


def test_demo_settings_are_validated():
    with pytest.raises(ValueError, match="epochs"):
        DemoSettings(epochs=0)
