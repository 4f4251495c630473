"""`ciiv report`: summaries -> markdown / JSON tables and sweep plots; reads summaries only."""

import json

import pytest
import torch
from torch import nn

from ciiv.cli import main
from ciiv.evaluate import evaluate_robustness
from ciiv.models import CiiVClassifier, create_model
from ciiv.report import load_summaries, report_json, report_markdown, sweep_curves, write_report
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
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    for column in ("clean", "fgsm", "worst case", "fgsm@eps=32/255", "pgd@steps=3"):
        assert f" {column} |" in header
    body = [line for line in text.splitlines() if line.startswith("| ") and "method" not in line]
    assert len(body) == 3
    assert sum("| paper |" in line for line in body) == 1
    # E is what the attacks used: EOT 2 on the random model under the full protocol, one draw
    # under the paper's (whatever E was asked for) and on the deterministic model.
    assert [line.split(" | ")[2] for line in body] == ["1", "2", "1"]
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
    assert len(pngs) == 2
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
