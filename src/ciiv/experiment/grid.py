"""A grid: training runs x seeds, each trained, evaluated and audited the same way.

A grid is a YAML file (or the name of one shipped in ``ciiv/grids``) with ``runs`` (a preset plus
overrides each), ``seeds``, ``eval``, ``audit`` and optional ``set``, ``audit_settings`` and
``description``; docs/experiments.md ("The grid") shows every key. Keys are checked strictly; a
bad grid fails before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ciiv.evaluate.checks.settings import audit_settings
from ciiv.evaluate.protocols import PROTOCOLS
from ciiv.evaluate.suites import format_eps, get_suite
from ciiv.train.config import (
    ConfigError,
    TrainConfig,
    build_dataclass,
    find_yaml,
    load_config,
    read_yaml,
    shipped_yaml,
)

__all__ = [
    "Cell",
    "EvalSpec",
    "Grid",
    "RunSpec",
    "list_grids",
    "load_grid",
]


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid: a preset (or YAML file) plus dotted-key overrides."""

    name: str
    config: str | None = None
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalSpec:
    """How every cell is evaluated (docs/experiments.md lists the keys).

    ``suites`` are built-in names or suite YAML files (paths relative to the working directory);
    ``eps`` empty = each suite's budget for the dataset; ``n_examples`` = the first N of a
    permutation of the test split seeded with ``seed`` (the same examples for every cell);
    ``eot``/``draws`` None = the evaluation's defaults; ``batch_size`` is the unit of resumption;
    the audit runs on the first ``audit_examples`` of the evaluated examples.
    """

    suites: list[str] = field(default_factory=lambda: ["quick"])
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    eps: list[float] = field(default_factory=list)
    n_examples: int = 500
    eot: int | None = None
    draws: int | None = None
    seed: int = 0
    batch_size: int = 128
    audit_examples: int = 100

    def budgets(self) -> list[float | None]:
        """The eps values to evaluate, ascending; [None] = the suite's own budget."""
        return sorted(self.eps) if self.eps else [None]


@dataclass(frozen=True)
class Cell:
    """One (run, seed) of a grid, trained in ``DIR/cells/<name>``: ``index`` is its position
    (``--cell I``), ``name`` is ``<run>-s<seed>``, ``config`` the run's config with the seed set."""

    index: int
    name: str
    run: str
    seed: int
    config: TrainConfig


@dataclass(frozen=True)
class Grid:
    """A parsed, validated grid (see the module docstring)."""

    name: str
    runs: list[RunSpec]
    seeds: list[int] = field(default_factory=lambda: [0])
    eval: EvalSpec = field(default_factory=EvalSpec)
    audit: Literal["quick", "full", "none"] = "quick"
    audit_settings: dict[str, Any] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def cells(self, overrides: dict[str, Any] | None = None) -> list[Cell]:
        """Every run x every seed, runs outer. ``overrides`` (dotted keys, e.g. a data_dir) are
        applied to every run last."""
        cells = []
        for run in self.runs:
            for seed in self.seeds:
                values = {**self.set, **run.set, **(overrides or {}), "seed": seed}
                try:
                    config = load_config(run.config, values)
                except ConfigError as exc:
                    raise ConfigError(f"grid {self.name!r}, run {run.name!r}: {exc}") from None
                cells.append(Cell(len(cells), f"{run.name}-s{seed}", run.name, seed, config))
        return cells

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def list_grids() -> list[str]:
    """Names of the grids shipped in ``ciiv/grids``."""
    return shipped_yaml("grids")


def load_grid(source: str | Path | dict[str, Any]) -> Grid:
    """Parse and validate a grid from a YAML path, a built-in name or a mapping. Every run's
    config is resolved here, so a bad key, method or preset anywhere in the grid raises a
    ConfigError (naming it) before anything runs."""
    if isinstance(source, dict):
        values, name = dict(source), str(source.get("name", "grid"))
    else:
        path = find_yaml(source, "grids", "built-in grid")
        values = read_yaml(path, "grid", " with runs, seeds and eval")
        name = path.name.removesuffix(".yaml")
    values.setdefault("name", name)
    if not values.get("runs"):
        raise ConfigError(f"grid {name!r}: `runs` must list at least one training run")
    runs = values.get("runs")
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ConfigError(f"grid {name!r}: `runs` must be a list of mappings (name, config, set)")
    grid = build_dataclass(Grid, values)
    _validate(grid)
    return grid


def _validate(grid: Grid) -> None:
    def problem(message: str) -> ConfigError:
        return ConfigError(f"grid {grid.name!r}: {message}")

    names = [run.name for run in grid.runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise problem(f"run names must be unique: {', '.join(duplicates)}")
    bad = [n for n in names if not n or any(c in n for c in "/\\ ")]
    if bad:
        raise problem(f"run names need no spaces or slashes: {bad}")
    if not grid.seeds or len(set(grid.seeds)) != len(grid.seeds) or min(grid.seeds) < 0:
        raise problem(f"seeds must be distinct ints >= 0: {grid.seeds}")
    spec = grid.eval
    for suite in spec.suites:
        try:
            get_suite(suite)
        except ValueError as exc:
            raise problem(f"eval.suites: {exc}") from None
    if not spec.suites:
        raise problem("eval.suites must name at least one suite")
    if not spec.protocols or not set(spec.protocols) <= set(PROTOCOLS):
        raise problem(f"eval.protocols must be among {', '.join(PROTOCOLS)}: {spec.protocols}")
    for eps in spec.eps:
        if eps <= 0:
            raise problem(f"eval.eps must be > 0, got {format_eps(eps)}")
    for key in ("n_examples", "batch_size", "audit_examples"):
        if getattr(spec, key) < 1:
            raise problem(f"eval.{key} must be >= 1")
    for key in ("eot", "draws"):
        if getattr(spec, key) is not None and getattr(spec, key) < 1:
            raise problem(f"eval.{key} must be >= 1 or null")
    try:
        audit_settings(1.0, quick=grid.audit == "quick", **grid.audit_settings)
    except ValueError as exc:
        raise problem(f"audit_settings: {exc}") from None
    grid.cells()  # resolves (and so validates) every run's config
