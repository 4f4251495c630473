"""docs/results.md: every number comes from the committed results.json of the study it reports."""

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
