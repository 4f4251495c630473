"""The README's Python snippets run as written (so the first thing a user copies works)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)


def test_readme_has_python_snippets():
    assert len(BLOCKS) >= 2  # the model snippet and the attack / evaluation snippet


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_snippet_runs(code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # snippets may write files (eval/my-model/...)
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    if "evaluate_robustness" in code:
        assert (tmp_path / "eval" / "my-model" / "summary.json").is_file()
        assert "EvaluationResult(suite='quick'" in capsys.readouterr().out
