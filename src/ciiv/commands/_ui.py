"""Pieces the commands share: option tables, the options of the commands that evaluate a run.

Progress display: :mod:`ciiv.commands._progress`.
"""

from __future__ import annotations

import argparse

__all__ = ["add_options", "add_run_arguments"]


def add_options(parser: argparse.ArgumentParser, rows) -> None:
    """Options from rows (flag or tuple of flags, default, metavar, help): each takes a value of
    its default's type and says its default."""
    for flags, default, metavar, text in rows:
        parser.add_argument(
            *((flags,) if isinstance(flags, str) else flags),
            type=type(default),
            default=default,
            metavar=metavar,
            help=f"{text} (default {default})",
        )


def add_run_arguments(
    parser: argparse.ArgumentParser, n_examples: int, *, resumable: bool = True
) -> None:
    """The options of the commands that load a trained run and pick test examples from it
    (``ciiv eval``, ``audit``, ``certify``): which checkpoint, which data, which examples, where,
    the seed, and (``resumable``: the results are saved as they come) ``--overwrite``."""
    parser.add_argument(
        "--n-examples",
        type=int,
        default=n_examples,
        metavar="N",
        help=f"first N of a seeded permutation of the test split, the same in every command "
        f"(default {n_examples}; 0 = all)",
    )
    parser.add_argument(
        "--test-split",
        metavar="NAME",
        help="the test split to take examples from, e.g. shifted for shapes (default: the "
        "dataset's first)",
    )
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="which weights of the run: best (highest validation accuracy) or last (default best)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        metavar="auto|cpu|cuda",
        help="where the model runs: auto takes a GPU when there is one (default auto)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="PATH",
        help="where the dataset's files are (default: where the run was trained from)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the example choice and of every random draw (default 0)",
    )
    if resumable:
        parser.add_argument(
            "--overwrite", action="store_true", help="discard earlier results instead of resuming"
        )
