"""The demo end to end at a reduced size: both methods trained, attacked and reported."""

import json

import pytest

from ciiv.cli import main
from ciiv.demo import DemoSettings, reading_notes, run_demo, table_rows, write_report

TINY = DemoSettings(epochs=1, n_train=160, n_test=8, eot=2, draws=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    return out, run_demo(out, TINY)


def test_demo_writes_results_report_and_plot(demo):
    out, results = demo
    assert json.loads((out / "results.json").read_text()) == results
    assert results["methods"]["ciiv"]["splits"]["iid"]["audit"]["verdict"] != "not run"
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
        numbers = results["methods"][method]["splits"]["iid"]
        summary = json.loads(open(numbers["summary"]).read())
        assert summary["protocol"] == "full"
        # The plot's error bars are the summary's intervals; `ciiv report` can group the splits.
        assert numbers["robust_accuracy_ci95"] == summary["robust_accuracy_ci95"]
        assert numbers["per_attack_ci95"]["fgsm"] == summary["attacks"]["fgsm"]["ci95"]
        assert (summary["run"]["dataset"], summary["run"]["test_split"]) == ("shapes", "iid")
    assert results["num_classes"] == 4


def test_demo_never_overwrites_earlier_results(demo, capsys):
    out, _ = demo
    before = (out / "report.md").read_text()
    assert main(["demo", "--out", str(out), "--epochs", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "report.md").read_text() == before


def test_demo_settings_are_validated():
    with pytest.raises(ValueError, match="epochs"):
        DemoSettings(epochs=0)


def _results(vanilla_shifted=(0.81, [0.72, 0.88]), ciiv_shifted=(0.39, [0.30, 0.49])) -> dict:
    """A demo's results.json (two methods, both splits) with chosen shifted clean accuracies."""

    def split(clean, worst):
        return {
            "clean_accuracy": clean[0],
            "clean_accuracy_ci95": clean[1],
            "robust_accuracy": worst[0],
            "robust_accuracy_ci95": worst[1],
            "per_attack": {"fgsm": worst[0]},
            "per_attack_ci95": {"fgsm": worst[1]},
            "eot": 1,
        }

    settings = {**vars(DemoSettings()), "methods": ["vanilla", "ciiv"]}
    return {
        "settings": settings,
        "num_classes": 4,
        "methods": {
            "vanilla": {"splits": {"iid": split((0.97, [0.92, 0.99]), (0.71, [0.61, 0.79])),
                                   "shifted": split(vanilla_shifted, (0.05, [0.02, 0.11]))}},
            "ciiv": {"splits": {"iid": split((0.85, [0.77, 0.91]), (0.85, [0.77, 0.91])),
                                "shifted": split(ciiv_shifted, (0.30, [0.21, 0.40]))}},
        },
    }  # fmt: skip


def test_report_says_when_methods_are_indistinguishable_or_at_chance(tmp_path):
    results = _results()
    write_report(results, tmp_path)
    text = (tmp_path / "report.md").read_text()
    notes = reading_notes(results)
    assert all(note in text for note in notes)
    # iid worst case: 61-79 % and 77-91 % overlap; iid clean (92-99 vs 77-91) does not.
    assert "indistinguishable" in notes[0]
    assert "worst-case accuracy on `iid` (vanilla 61–79 %, ciiv 77–91 %)" in notes[0]
    assert "clean accuracy on `iid`" not in notes[0]
    assert "clean accuracy on `shifted`" not in notes[0]
    # shifted: chance = 1/4; ciiv's worst case (21-40 %) contains it, vanilla's (2-11 %) does not.
    assert notes[1].startswith("At chance on `shifted` (1/4 = 25 %")
    assert notes[1].endswith(": ciiv's worst-case accuracy (21–40 %).")
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    # Separated everywhere and above chance: nothing to add.
    separated = _results(ciiv_shifted=(0.60, [0.50, 0.69]))
    for record, low in zip(separated["methods"].values(), (0.3, 0.6), strict=True):
        for numbers in record["splits"].values():
            numbers["robust_accuracy_ci95"] = [low, low + 0.2]
    assert reading_notes(separated) == []


def test_report_names_the_checks_the_default_audit_flagged():
    results = _results()
    assert not any("audit" in note for note in reading_notes(results))  # none ran: nothing said
    splits = results["methods"]["ciiv"]["splits"]
    splits["iid"]["audit"] = {"verdict": "passed", "warned": ["randomness"], "failed": []}
    splits["shifted"]["audit"] = {"verdict": "passed", "warned": ["gradient_health"], "failed": []}
    note = reading_notes(results)[-1]
    assert note.startswith("The default audit flagged ciiv (warned: gradient_health, randomness)")
    splits["shifted"]["audit"] = {"verdict": "failed", "warned": [], "failed": ["gradient_health"]}
    assert "ciiv (failed: gradient_health, randomness)" in reading_notes(results)[-1]
    results["methods"]["vanilla"]["splits"]["iid"]["audit"] = None  # deterministic: not audited
    assert "vanilla" not in reading_notes(results)[-1]
