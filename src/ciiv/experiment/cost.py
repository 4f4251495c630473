"""What a cell will cost, before it runs (``ciiv experiment --dry-run``).

Counted in backbone image-passes (one image through the backbone, forward, or forward and
backward when training or attacking): a CiiV model's L views count L times. Evaluation figures
are upper bounds: they assume every attack runs on every example, while the worst-case chain
attacks only the points still standing.
"""

from __future__ import annotations

from typing import Any

from ciiv.evaluate.settings import DEFAULT_DRAWS
from ciiv.evaluate.suites import DEFAULT_EOT, ModelTraits, get_suite, resolve_suite
from ciiv.train.methods import get_method

from .grid import Cell, Grid
from .runner import cell_evaluations

__all__ = ["cell_cost"]


def cell_cost(grid: Grid, cell: Cell, train_size: int | None) -> dict[str, Any]:
    """``{"train": image-passes or None (unknown data size), "eval": image-passes, "evals": N}``.

    ``train_size``: examples in the training split (after ``data.max_train``), None if unknown.
    """
    config = cell.config
    kind = get_method(config.method.name).model_kind
    views = config.model.num_views if kind == "ciiv" else 1
    pgd = getattr(config.method.options, "pgd", None)  # methods that craft PGD examples
    per_image = views * (1 + (pgd.steps * pgd.eot if pgd is not None else 0))
    train = None if train_size is None else config.epochs * train_size * per_image
    traits = ModelTraits(stochastic=kind in ("ciiv", "smoothed"), views=kind == "ciiv")
    draws = (grid.eval.draws or DEFAULT_DRAWS) if traits.stochastic else 1
    n = grid.eval.n_examples
    total, evals = 0, 0
    for suite, protocol, eps, _ in cell_evaluations(grid, traits.views):
        attacks, _, _ = resolve_suite(
            get_suite(suite),
            protocol=protocol,
            traits=traits,
            dataset=config.data.dataset,
            eps=eps,
            eot=grid.eval.eot or DEFAULT_EOT,
        )
        queries = sum(a.queries_per_example() for a in attacks)
        predictions = draws * (1 + len(attacks))
        attack_views = 1 if protocol == "paper" else views
        total += n * (queries * attack_views + predictions * views)
        evals += 1
    return {"train": train, "eval": total, "evals": evals}
