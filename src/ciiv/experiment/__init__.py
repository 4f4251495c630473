"""Studies: a grid of training runs x seeds, each trained, audited and evaluated under both
protocols at several budgets, then one results table (``ciiv experiment``).

    grid = load_grid("mnist-cpu")
    run_grid(grid, "studies/mnist")          # resumable; skips complete cells
    write_results(grid, "studies/mnist")     # results.json, results.md, plots, report/
"""

from .cost import cell_cost
from .grid import Cell, EvalSpec, Grid, RunSpec, list_grids, load_grid
from .results import collect, render_markdown, write_results
from .runner import CellOutcome, GridChangedError, cell_dir, run_cell, run_grid

__all__ = [
    "Cell",
    "CellOutcome",
    "EvalSpec",
    "Grid",
    "GridChangedError",
    "RunSpec",
    "cell_cost",
    "cell_dir",
    "collect",
    "list_grids",
    "load_grid",
    "render_markdown",
    "run_cell",
    "run_grid",
    "write_results",
]
