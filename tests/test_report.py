"""`ciiv report`: summaries -> markdown / JSON tables and sweep plots; reads summaries only."""

import json

import pytest
import torch
from torch import nn

from ciiv.cli import main
from ciiv.evaluate import evaluate_robustness
from ciiv.models import CiiVClassifier, create_model
from ciiv.report import (
    _bar_figure,
    accuracy_bars,
    chance_accuracy,
    load_summaries,
    report_json,
    report_markdown,
    sweep_curves,
    write_report,
)
from ciiv.sampling import RetinotopicSampler

SWEEP_SUITE = {
    "name": "mini-sweep",
    "norm": "Linf",
    "budget": {"default": "4/255"},
    "entries": [
        {"name": "fgsm", "attack": "fgsm", "eot": "protocol"},
        {"sweep": "fgsm", "base": {"name": "fgsm", "attack": "fgsm"},
         "eps": ["2/255", "8/255", "32/255"]},
        {"sweep": "pgd", "base": {"name": "pgd", "attack": "pgd"}, "steps": [1, 3]},
    ],
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def eval_dirs(tmp_path_factory):
    """Summaries of a linear model (full) and a tiny CiiV model (full + paper)."""
    root = tmp_path_factory.mktemp("evals")
    torch.manual_seed(0)
    x = torch.rand(24, 3, 8, 8)
    y = torch.randint(0, 3, (24,))
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 3))
    ciiv = CiiVClassifier(
        create_model("small_cnn", num_classes=3, in_channels=3, width=4),
        RetinotopicSampler(8, num_views=2, samples_per_view=1),
        [0.5] * 3,
        [0.25] * 3,
    ).eval()
    dirs = []
    for name, model, protocol in (("linear", linear, "full"), ("ciiv-full", ciiv, "full"),
                                  ("ciiv-paper", ciiv, "paper")):  # fmt: skip
        evaluate_robustness(model, x, y, suite=SWEEP_SUITE, protocol=protocol, eot=2, draws=2,
                            batch_size=12, out_dir=root / name)  # fmt: skip
        dirs.append(root / name)
    return dirs


def test_markdown_table_has_every_method_protocol_and_attack(eval_dirs, tmp_path):
    summaries = load_summaries(eval_dirs)
    text = report_markdown(summaries)
    assert "## mini-sweep (Linf eps 4/255)" in text
    header = next(line for line in text.splitlines() if line.startswith("| dataset"))
    assert header.startswith("| dataset | run | method | protocol |")
    for column in ("clean", "fgsm", "worst case", "fgsm@eps=32/255", "pgd@steps=3"):
        assert f" {column} |" in header
    body = [line for line in text.splitlines() if line.startswith("| ") and "method" not in line]
    assert len(body) == 3
    assert sum("| paper |" in line for line in body) == 1
    # No dataset recorded (a user's own evaluation): the column says so; the run is the folder.
    assert [line.split(" | ")[:2] for line in body][0] == ["| unspecified", "linear"]
    # E is what the attacks used: EOT 2 on the random model under the full protocol, one draw
    # under the paper's (whatever E was asked for) and on the deterministic model.
    assert [line.split(" | ")[4] for line in body] == ["1", "2", "1"]
    ciiv_full = json.loads((eval_dirs[1] / "summary.json").read_text())
    assert f"**{100 * ciiv_full['robust_accuracy']:.1f}**" in text


def test_sweep_curves_and_plots(eval_dirs, tmp_path):
    curves = sweep_curves(load_summaries(eval_dirs))
    axes = {(c["family"], c["axis"]) for c in curves}
    assert axes == {("fgsm", "eps"), ("pgd", "steps")}
    eps_curve = next(c for c in curves if c["axis"] == "eps")
    assert len(eps_curve["lines"]) == 3
    assert eps_curve["lines"][0]["x"] == pytest.approx([2 / 255, 8 / 255, 32 / 255])
    # Curves come from the recorded ``sweep`` data, not from the attack names.
    renamed = []
    for s in load_summaries(eval_dirs):
        attacks = {n.replace("@", "-at-"): d for n, d in s["attacks"].items()}
        attacks["fgsm@eps=1/255"] = {**attacks["fgsm"], "sweep": None}  # a name alone is no sweep
        renamed.append({**s, "attacks": attacks})
    assert sweep_curves(renamed) == curves
    written = write_report(eval_dirs, tmp_path / "out", "both")
    names = sorted(p.name for p in written)
    assert "report.md" in names and "report.json" in names
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) == 3  # the accuracy bars and the two sweeps
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert all(f"]({p.name})" in (tmp_path / "out" / "report.md").read_text() for p in pngs)


def test_json_report_and_cli(eval_dirs, tmp_path, capsys):
    data = report_json(load_summaries(eval_dirs))
    assert [row["protocol"] for row in data["rows"]] == ["full", "full", "paper"]
    assert [row["attack_eot"] for row in data["rows"]] == [[1], [2], [1]]
    assert all("fgsm" in row["per_attack"] for row in data["rows"])
    out = tmp_path / "cli"
    assert main(["report", *map(str, eval_dirs), "--out", str(out), "--format", "json"]) == 0
    assert json.loads((out / "report.json").read_text())["rows"] == json.loads(
        json.dumps(data["rows"])
    )
    assert not (out / "report.md").exists()
    # A run directory (eval/*/summary.json inside) works too, and nonsense is refused.
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "quick-full").symlink_to(eval_dirs[0])
    assert len(load_summaries([run])) == 1
    assert main(["report", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    # `ciiv report runs/*` with a run not evaluated yet: skipped with a warning, not an error.
    (tmp_path / "unevaluated" / "checkpoints").mkdir(parents=True)
    assert len(load_summaries([run, tmp_path / "unevaluated"])) == 1
    with pytest.raises(ValueError, match="no evaluation summary in any"):
        load_summaries([tmp_path / "unevaluated", tmp_path / "unevaluated"])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not an evaluation summary"):
        load_summaries([tmp_path / "bad.json"])


def test_missing_protocol_of_a_ciiv_run_is_flagged(eval_dirs):
    text = report_markdown(load_summaries(eval_dirs[1:2]))
    assert "no `paper` protocol summary" in text
    assert "no `full`" not in text


# --- bar plots, datasets ----------------------------------------------------------------------


def _as_run(summary_dir, tmp_path, name, **run):
    """A copy of an evaluation as a run directory's eval/, with ``run`` facts in its summary."""
    summary = json.loads((summary_dir / "summary.json").read_text())
    summary["run"] = {"run_dir": str(tmp_path / name), "method": name, **run}
    target = tmp_path / name / "eval" / summary_dir.name
    target.mkdir(parents=True)
    (target / "summary.json").write_text(json.dumps(summary))
    return tmp_path / name


@pytest.fixture(scope="module")
def quick_eval(tmp_path_factory):
    """One quick-suite evaluation (no sweep at all) of a 3-class linear model."""
    out = tmp_path_factory.mktemp("quick") / "quick-full"
    torch.manual_seed(1)
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 3, (16,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 3))
    evaluate_robustness(model, x, y, suite="quick", eps="8/255", out_dir=out)
    return out


def test_single_quick_evaluation_gets_a_bar_plot_with_intervals_and_chance(quick_eval, tmp_path):
    summary = json.loads((quick_eval / "summary.json").read_text())
    assert summary["num_classes"] == 3  # recorded by the evaluation: chance = 1/3
    (bars,) = accuracy_bars(load_summaries([quick_eval]))
    assert bars["chance"] == pytest.approx(1 / 3)
    (panel,) = bars["panels"]  # one protocol, one panel
    assert panel["categories"] == ["clean", "fgsm", "pgd-10", "worst case"]
    (series,) = panel["series"]
    assert series["values"] == [
        summary["clean_accuracy"],
        summary["per_attack"]["fgsm"],
        summary["per_attack"]["pgd-10"],
        summary["robust_accuracy"],
    ]
    assert series["ci95"][0] == summary["clean_accuracy_ci95"]
    assert series["ci95"][2] == summary["attacks"]["pgd-10"]["ci95"]
    assert all(
        low <= v <= high for v, (low, high) in zip(series["values"], series["ci95"], strict=True)
    )
    # `ciiv report runs/*` with one evaluated run and one that is not: a warning, and the plot.
    run = _as_run(quick_eval, tmp_path, "linear", dataset="cifar10")
    (tmp_path / "untrained" / "checkpoints").mkdir(parents=True)
    written = write_report([run, tmp_path / "untrained"], tmp_path / "report")
    (png,) = [p for p in written if p.suffix == ".png"]
    assert png.name.startswith("accuracy-") and png.read_bytes()[:4] == b"\x89PNG"
    assert f"]({png.name})" in (tmp_path / "report" / "report.md").read_text()


def test_both_protocols_are_side_by_side_panels_full_first(eval_dirs):
    (bars,) = accuracy_bars(load_summaries(eval_dirs[::-1]))
    assert [p["title"] for p in bars["panels"]] == ["full protocol", "paper protocol"]
    assert [len(p["series"]) for p in bars["panels"]] == [2, 1]
    # Sweep points have their own line plots; the bars keep the chain and the worst case.
    assert bars["panels"][0]["categories"] == ["clean", "fgsm", "worst case"]


def test_legend_never_covers_the_axes(eval_dirs):
    (bars,) = accuracy_bars(load_summaries(eval_dirs))
    full, paper = bars["panels"]

    def crowded(panel, repeat):  # 3x the runs (a long legend), `repeat` x the categories
        series = [
            {
                "label": f"{s['label']} {i}",
                "values": s["values"] * repeat,
                "ci95": s["ci95"] * repeat,
            }
            for i, s in enumerate(panel["series"] * 3)
        ]
        return {**panel, "categories": panel["categories"] * repeat, "series": series}

    # Side by side, and stacked (too wide side by side).
    for panels in ([crowded(full, 1), crowded(paper, 1)], [crowded(full, 5), crowded(paper, 5)]):
        fig = _bar_figure(panels, title="t", chance=0.5)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (legend,) = fig.legends
        assert "chance (1/2 = 50 %)" in [t.get_text() for t in legend.get_texts()]
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer))
        fig.clf()


def test_datasets_are_never_mixed_in_one_table(quick_eval, tmp_path, caplog):
    runs = [
        _as_run(quick_eval, tmp_path, "a", dataset="cifar10"),
        _as_run(quick_eval, tmp_path, "b", dataset="mnist"),
        _as_run(quick_eval, tmp_path, "c", dataset="cifar10"),
        _as_run(quick_eval, tmp_path, "d", dataset="shapes", test_split="shifted"),
    ]
    with caplog.at_level("WARNING", logger="ciiv.report"):
        written = write_report(runs, tmp_path / "report", "both")
    assert "several datasets" in caplog.text
    text = (tmp_path / "report" / "report.md").read_text()
    assert "**3 datasets** (`cifar10`, `mnist`, `shapes (shifted)`)" in text
    tables = text.split("\n## ")[1:4]
    assert [t.splitlines()[0] for t in tables] == [
        "cifar10: quick (Linf eps 8/255)",
        "mnist: quick (Linf eps 8/255)",
        "shapes (shifted): quick (Linf eps 8/255)",
    ]
    rows = [[line for line in t.splitlines() if line.startswith("| ") and "| run |" not in line]
            for t in tables]  # fmt: skip
    assert [[r.split(" | ")[:2] for r in t] for t in rows] == [
        [["| cifar10", "a"], ["| cifar10", "c"]],
        [["| mnist", "b"]],
        [["| shapes (shifted)", "d"]],
    ]
    assert sum(p.name.startswith("accuracy-") for p in written) == 3
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [row["dataset"] for row in data["rows"]] == [
        "cifar10",
        "mnist",
        "cifar10",
        "shapes (shifted)",
    ]
    assert [b["dataset"] for b in data["bars"]] == ["cifar10", "mnist", "shapes (shifted)"]


def test_chance_level_of_older_summaries_comes_from_the_dataset(quick_eval):
    (summary,) = load_summaries([quick_eval])
    del summary["num_classes"]
    assert chance_accuracy([summary]) is None  # no dataset recorded: no chance line
    for dataset, chance in (("cifar100", 0.01), ("mnist", 0.1), ("imagefolder", None)):
        summary["run"] = {"dataset": dataset}
        assert chance_accuracy([summary]) == chance
    mixed = [{**summary, "num_classes": 10}, {**summary, "num_classes": 3}]
    assert chance_accuracy(mixed) is None


def test_two_evaluations_of_one_run_get_their_own_rows_bars_and_legend_entries(
    quick_eval, tmp_path
):
    run = _as_run(quick_eval, tmp_path, "a", dataset="cifar10")
    again = tmp_path / "elsewhere" / "rerun"  # the same run evaluated again into another folder
    again.mkdir(parents=True)
    (again / "summary.json").write_text(
        (run / "eval" / quick_eval.name / "summary.json").read_text()
    )
    summaries = load_summaries([run, again])
    labels = [s["_label"] for s in summaries]
    assert len(set(labels)) == 2 and all(label.startswith("a (a) [") for label in labels)
    (bars,) = accuracy_bars(summaries)
    assert [sr["label"] for sr in bars["panels"][0]["series"]] == labels
    fig = _bar_figure(bars["panels"], title="t", chance=bars["chance"])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    assert fig.bbox.contains(*legend.get_window_extent(renderer).p0)
    assert fig.bbox.contains(*legend.get_window_extent(renderer).p1)  # long names still fit
    fig.clf()
