"""docs/results.md and docs/performance.md: every number comes from committed files that a
project command wrote."""

import json
from pathlib import Path

from ciiv.experiment import render_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"
STUDY = DOCS / "results" / "mnist-cpu"


def test_study_markdown_is_regenerated_identically_from_its_results_json():
    results = json.loads((STUDY / "results.json").read_text(encoding="utf-8"))
    assert render_markdown(results) == (STUDY / "results.md").read_text(encoding="utf-8")
    for plot in results["plots"]:
        assert (STUDY / plot).stat().st_size > 0


def test_results_page_quotes_the_generated_tables_unchanged():
    page = (DOCS / "results.md").read_text(encoding="utf-8")
    generated = (STUDY / "results.md").read_text(encoding="utf-8")
    table_lines = [line for line in generated.splitlines() if line.startswith("| ")]
    assert table_lines and all(line in page for line in table_lines)


def test_the_default_audit_figures_of_performance_md_come_from_its_files():
    docs = Path(__file__).resolve().parents[1] / "docs"
    text = (docs / "performance.md").read_text()
    files = docs / "performance" / "default-audit"
    audited = json.loads((files / "with-audit.json").read_text())
    bare = json.loads((files / "no-audit.json").read_text())
    audit = audited["audit"]
    seconds = ", ".join(str(c["elapsed_s"]) for c in audit["checks"])
    row = (
        f"| default | {audited['forward_passes']} | {audit['forward_passes']} "
        f"({audit['default']['forward_pass_bound']}) | {audit['elapsed_s']} ({seconds}) | "
        f"{audited['elapsed_s']:.1f} |"
    )
    assert row in text
    assert f"| `--no-audit` | {bare['forward_passes']} | – | – | {bare['elapsed_s']:.1f} |" in text
    share = round(100 * audit["forward_passes"] / audited["forward_passes"])
    added = round(audited["elapsed_s"] - bare["elapsed_s"])
    assert f"it used {share} % of the suite's passes and added {added} seconds" in text
    assert audit["default"]["forward_pass_bound"] <= audited["forward_passes"]


def test_the_cpu_throughput_table_of_performance_md_comes_from_its_files():
    text = (DOCS / "performance.md").read_text()
    labels = {
        ("train", "batched"): "training, batched views",
        ("train", "naive"): "training, naive (9 passes)",
        ("inference", "batched"): "inference, batched views",
        ("inference", "naive"): "inference, naive",
    }
    columns = []
    for name in ("before", "after"):
        lines = (DOCS / "performance" / f"cpu-throughput-{name}.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        assert {row["device"] for row in rows} == {"cpu (2 threads)"}
        by_label: dict[str, list[str]] = {}
        for row in rows:
            if row["phase"].startswith("attack: "):
                attack = row["phase"].removeprefix("attack: ").replace(" EOT", ", EOT")
                label, digits = f"{attack}, batch {row['batch_size']}", 3
            else:
                label, digits = labels[(row["phase"], row["path"])], 2
            by_label.setdefault(label, []).append(f"{row['images_per_s']:.{digits}f}")
        columns.append(by_label)
    before, after = columns
    assert before.keys() == after.keys() and len(before) == 5
    for label in before:
        assert f"| {label} | {', '.join(before[label])} | {', '.join(after[label])} |" in text


def _check(cell: str, name: str) -> dict:
    audit = json.loads((STUDY / "cells" / cell / "audit" / "audit.json").read_text())
    return next(c for c in audit["checks"] if c["name"] == name)


def test_the_audit_figures_of_results_md_come_from_the_cells_audit_files():
    page = " ".join((DOCS / "results.md").read_text(encoding="utf-8").split())
    ciiv = _check("ciiv-s0", "randomness")["numbers"]["exact"]["cosine_by_eot"]["16"]
    assert f"{ciiv:.2f}" == "0.00" and "a cosine of 0.00" in page
    vanishing = _check("ciiv_at-s0", "gradient_health")["detail"]
    assert "vanishes on 94% of the points" in vanishing and "94 % of the points" in page
    assert _check("rs-s0", "randomness")["numbers"]["exact"]["eot_needed"] == 4 and "E >= 4" in page
    versions = json.loads((STUDY / "cells" / "ciiv-s0" / "audit" / "audit.json").read_text())
    versions = versions["versions"]
    quoted = f"torch {versions['torch'].split('+')[0]}, Python {versions['python']}"
    assert quoted in page
