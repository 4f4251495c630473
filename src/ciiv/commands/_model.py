"""``--model``: ``ciiv eval`` and ``ciiv audit`` on a user's own model instead of a run directory.

    ciiv eval --model defense.py:build --weights w.pt --dataset cifar10 --out evals/mine
    ciiv audit --model my_pkg.defense:build --weights w.pt --dataset mnist --out evals/mine
    ciiv eval --model tv:resnet18 --weights resnet18-cifar.pt --dataset cifar10 --out evals/r18

The model is built by :func:`ciiv.models.external.load_user_model`; the examples come from the
test split of a registered dataset. ``--out DIR`` plays the part of a run directory: evaluations
go to ``DIR/eval/<suite>-<protocol>/``, the audit to ``DIR/audit/audit.json``.
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

__all__ = ["UserModel", "add_model_arguments", "load_user_target", "user_protocols", "user_run"]

logger = logging.getLogger(__name__)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that name a user's model and its test data (used instead of RUN_DIR)."""
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
class UserModel:
    """A user's model ready to evaluate, with its data and what identifies it.

    Attributes:
        model: in eval mode, on the requested device.
        dataset: the dataset name.
        splits: the dataset (only its test splits are used).
        identity: spec, weights digest and normalisation (``summary["run"]["model"]``; also in
            ``config.json``, so that a resumed evaluation refuses other weights).
        weights: the weights file as given, or None.
    """

    model: nn.Module
    dataset: str
    splits: Any
    identity: dict[str, Any]
    weights: str | None


def load_user_target(args: argparse.Namespace, device) -> UserModel:
    """Build ``args.model`` (with ``args.weights``) for ``args.dataset``'s images, on ``device``.

    Raises:
        ValueError: a missing --dataset/--out, a bad option, or anything load_user_model refuses.
        DatasetNotFoundError: the dataset's files are missing.
    """
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
    identity = {**describe_user_model(args.model, args.weights), "normalize": args.normalize}
    return UserModel(model.to(device), args.dataset, splits, identity, args.weights)


def user_protocols(model: nn.Module, x: Tensor, requested: str) -> tuple[str, ...]:
    """The protocols to run for ``--protocol requested``: the paper protocol attacks a CiiV
    model's centre view, so a model without views is refused ``paper`` and gets ``full`` only
    for ``both`` (with a warning). Also probes the model on x (see ``probe_model``)."""
    from ciiv.evaluate import detect_traits
    from ciiv.models.external import probe_model

    probe_model(model, x)
    if requested == "full" or detect_traits(model, x).views:
        return ("full", "paper") if requested == "both" else (requested,)
    if requested == "paper":
        raise ValueError(
            "--protocol paper attacks a CiiV model's centre view; this model has no views "
            "(ciiv.models.MultiView: num_views, forward_views, combine, bpda): use --protocol full"
        )
    logger.warning("the model has no views, so --protocol both runs the full protocol only")
    return ("full",)


def user_run(target: UserModel, out: str | Path, selection: dict[str, Any]) -> dict[str, Any]:
    """``summary["run"]`` of a user's model: ``out`` stands for the run directory."""
    return {
        "run_dir": str(out),
        "method": "user model",
        "model": target.identity,
        "weights": target.weights,
        "dataset": target.dataset,
        **selection,
    }
