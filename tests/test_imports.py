"""The package's import structure: every module imports on its own, and no module-level import
cycle exists between ciiv's modules (a cycle works or fails depending on which module a user
imports first: a partially initialised module)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its ``__init__.py``)."""
    found = {}
    for path in sorted((SRC / "ciiv").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_statements(body: list[ast.stmt]):
    """The import statements that run when the module is imported: those at module level, also
    inside if/try/with blocks and class bodies, but not inside functions (run later) nor under
    ``if TYPE_CHECKING:`` (never run)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from import_statements(node.orelse)
        else:
            for name in ("body", "orelse", "finalbody", "handlers"):
                block = getattr(node, name, None)
                if isinstance(block, list):
                    yield from import_statements(block)


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ciiv modules that importing ``name`` imports directly: ``from pkg import x`` is an edge
    to the module ``pkg.x`` when it is one, else to ``pkg`` (its ``__init__``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in import_statements(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:
            edges.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source)
    return {edge for edge in edges if edge in modules and edge != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" afterwards
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = "open"
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = "done"
                stack.pop()
            elif state.get(child) == "open":
                return path[path.index(child) :] + [child]
            elif child not in state:
                state[child] = "open"
                path.append(child)
                stack.append(iter(sorted(graph[child])))
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": set(), "c": {"c2"}, "c2": {"c"}}) == ["c", "c2", "c"]


def test_no_import_cycle_between_ciiv_modules():
    modules = module_files()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert graph["ciiv.train.config"] >= {"ciiv.train.methods", "ciiv._mapping"}  # resolved
    assert graph["ciiv.models"] >= {"ciiv.models.registry", "ciiv.models.backbones"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# Imports each module in a child forked from a process that holds only third-party packages, so
# each import starts with no ciiv module loaded (as `python -c "import ciiv.x"` does) without
# paying torch's import ~100 times.
_IMPORT_EACH = textwrap.dedent(
    """
    import importlib, json, os, sys, traceback
    import matplotlib, numpy, rich.console, torch, torchvision, yaml  # noqa: F401
    failures = {}
    for name in json.loads(sys.argv[1]):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                importlib.import_module(name)
                os._exit(0)
            except BaseException:
                os.write(write, traceback.format_exc().encode())
                os._exit(1)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            message = f.read().decode()
        _, status = os.waitpid(pid, 0)
        if status:
            failures[name] = message or f"exit status {status}"
    print(json.dumps(failures))
    """
)


def test_every_module_imports_on_its_own():
    names = [name for name in module_files() if name != "ciiv.__main__"]  # __main__ runs the CLI
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, json.dumps(names)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, "\n\n".join(f"{name}:\n{message}" for name, message in failures.items())
