"""Pieces the commands share: option tables, the options of the commands that evaluate a run,
and what ``ciiv eval`` and ``ciiv audit`` attack: a trained run, or a user's own ``--model``
(built by :func:`ciiv.models.external.load_user_model`, on the test split of a registered
dataset; ``--out DIR`` plays the part of a run directory: evaluations go to
``DIR/eval/<suite>-<protocol>/``, the audit to ``DIR/audit/audit.json``; examples in the
commands' docs). Progress display: :mod:`ciiv.commands._progress`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported when a command runs, not when its options are parsed
    from torch import Tensor, nn

__all__ = [
    "Target",
    "add_options",
    "add_run_arguments",
    "add_target_arguments",
    "load_target",
    "user_protocols",
]

logger = logging.getLogger(__name__)


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


def add_target_arguments(
    parser: argparse.ArgumentParser, n_examples: int, *, resumable: bool = True
) -> None:
    """RUN_DIR and :func:`add_run_arguments`, or the options that name a user's model and its
    test data instead of RUN_DIR."""
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", nargs="?", help="a run written by ciiv train (or --model)"
    )
    add_run_arguments(parser, n_examples, resumable=resumable)
    group = parser.add_argument_group("a user's own model (instead of RUN_DIR)")
    group.add_argument(
        "--model",
        metavar="SPEC",
        help="module:factory, path/to/file.py:factory, timm:<name> or tv:<name>; the model maps "
        "pixels in [0, 1] to logits (a factory gets num_classes=K when it accepts it)",
    )
    group.add_argument(
        "--weights", metavar="FILE", help="state dict to load (torch.load, weights_only=True)"
    )
    group.add_argument("--dataset", metavar="NAME", help="dataset whose test split is used")
    group.add_argument(
        "--dataset-option",
        dest="dataset_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dataset option, e.g. image_size=64 (imagefolder), n_test=500 (shapes)",
    )
    group.add_argument(
        "--normalize",
        choices=("dataset", "none"),
        help="timm:/tv: models: normalise with the dataset's mean/std or not at all (default: "
        "the library's convention, timm's pretrained_cfg, ImageNet's for torchvision)",
    )


@dataclass
class Target:
    """What ``ciiv eval`` and ``ciiv audit`` attack: ``model`` (eval mode, on the device), the
    ``dataset`` name and its ``splits``, the examples (``index`` in test ``split``; ``x`` [N, C, H,
    W] in [0, 1] and ``y`` [N] on the CPU), ``run`` (``summary["run"]``: the run, or the user's
    model with its spec, weights digest and normalisation, which ``config.json`` keeps so that a
    resumed evaluation refuses other weights; and the selection) and ``root`` (where results go:
    RUN_DIR, or a user's model's ``--out DIR``)."""

    model: nn.Module
    dataset: str
    splits: Any
    split: str
    index: Tensor
    x: Tensor
    y: Tensor
    run: dict[str, Any]
    root: Path


def load_target(args: argparse.Namespace, command: str, device) -> Target:
    """RUN_DIR (``args.checkpoint`` of it) or ``args.model``, on ``device``, and the first
    ``args.n_examples`` of the seeded permutation of its test split (a user's model is probed on
    two). ValueError for neither or both of RUN_DIR and --model or a bad option; CheckpointError,
    DatasetNotFoundError for a missing run or dataset files."""
    from ciiv.evaluate.selection import describe_run, describe_selection, evaluation_examples
    from ciiv.models.external import probe_model
    from ciiv.train import load_data, load_run

    if bool(args.run_dir) == bool(args.model):
        raise ValueError(f"give RUN_DIR or --model SPEC (see ciiv {command} --help)")
    if args.model:
        model, splits, run = _load_user_model(args, device)
        dataset = args.dataset
    else:
        loaded = load_run(args.run_dir, args.checkpoint, device=device)
        model, dataset = loaded.model, loaded.dataset
        splits = load_data(loaded.config.data, data_dir=args.data_dir)
    split, index, x, y = evaluation_examples(
        splits, dataset, args.test_split, args.n_examples, args.seed
    )
    size = len(splits.test[split])
    if args.model:
        probe_model(model, x[:2].to(device))
        run = {**run, **describe_selection(split, index, size, args.seed)}
    else:
        run = describe_run(loaded, split, index, size, args.seed)
    root = Path(args.out if args.model else args.run_dir)
    return Target(model, dataset, splits, split, index, x, y, run, root)


def _load_user_model(args: argparse.Namespace, device) -> tuple[nn.Module, Any, dict[str, Any]]:
    """``args.model`` (with ``args.weights``) for ``args.dataset``'s images, on ``device``; the
    dataset's splits; and ``summary["run"]`` of the model (``--out`` stands for the run dir)."""
    from ciiv.data import list_datasets, load_splits
    from ciiv.models.external import describe_user_model, load_user_model
    from ciiv.train.config import parse_overrides

    if not args.dataset:
        raise ValueError(f"--model needs --dataset NAME; valid: {', '.join(list_datasets())}")
    if not args.out:
        raise ValueError("--model needs --out DIR (results go to DIR/eval/..., DIR/audit/...)")
    options = dict(parse_overrides(args.dataset_options))
    splits = load_splits(args.dataset, args.data_dir, **options)
    info = splits.info
    normalization = {
        None: None,
        "dataset": (info.mean, info.std),
        "none": ((0.0,) * info.in_channels, (1.0,) * info.in_channels),
    }[args.normalize]
    # `module:factory` resolves against the working directory, as with `python -m`.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    model = load_user_model(
        args.model,
        args.weights,
        info.num_classes,
        in_channels=info.in_channels,
        normalization=normalization,
    )
    run = {
        "run_dir": str(args.out),
        "method": "user model",
        "model": {**describe_user_model(args.model, args.weights), "normalize": args.normalize},
        "weights": args.weights,
        "dataset": args.dataset,
    }
    return model.to(device), splits, run


def user_protocols(model: nn.Module, x: Tensor, requested: str) -> tuple[str, ...]:
    """The protocols to run for ``--protocol requested`` on a user's model: the paper protocol
    attacks a CiiV model's centre view, so a model without views is refused ``paper`` and gets
    ``full`` only for ``both`` (with a warning); x: a few images, on the model's device."""
    from ciiv.evaluate import detect_traits

    if requested == "full" or detect_traits(model, x).views:
        return ("full", "paper") if requested == "both" else (requested,)
    if requested == "paper":
        raise ValueError(
            "--protocol paper attacks a CiiV model's centre view; this model has no views "
            "(ciiv.models.MultiView: num_views, forward_views, combine, bpda): use --protocol full"
        )
    logger.warning("the model has no views, so --protocol both runs the full protocol only")
    return ("full",)
