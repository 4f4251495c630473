"""The run directory, and loading a trained model back from it.

Layout of ``RUN_DIR``::

    config.yaml              the resolved config (human-readable; checkpoints carry their own copy)
    metrics.jsonl            one JSON object per finished epoch
    checkpoints/last.pt      full training state after the latest epoch, or mid-epoch after a
                             stop signal or ``checkpoint_every`` steps (for --resume)
    checkpoints/best.pt      the same, for the epoch with the best validation accuracy
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ciiv.data import DatasetInfo, Splits, load_splits, stratified_subset
from ciiv.models import build_model

from .checkpoint import CheckpointError, load_checkpoint
from .config import (
    ConfigError,
    DataConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)
from .methods import get_method

__all__ = [
    "CHECKPOINTS",
    "LoadedRun",
    "RunDirError",
    "RunDirExistsError",
    "checkpoint_path",
    "load_data",
    "load_run",
    "resolve_device",
    "saved_config",
]

logger = logging.getLogger(__name__)

CHECKPOINTS: tuple[str, ...] = ("best", "last")


class RunDirError(OSError):
    """The run directory cannot be used (it cannot be created, or it holds another run)."""


class RunDirExistsError(RunDirError, FileExistsError):
    """A new run was asked to write into a directory that already holds files."""


def checkpoint_path(run_dir: str | Path, checkpoint: str = "last") -> Path:
    """``RUN_DIR/checkpoints/<checkpoint>.pt`` for checkpoint "best" or "last"."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"unknown checkpoint {checkpoint!r}; valid: {', '.join(CHECKPOINTS)}")
    return Path(run_dir) / "checkpoints" / f"{checkpoint}.pt"


def saved_config(run_dir: str | Path) -> dict:
    """The config a run was started with, as a dict: from ``checkpoints/last.pt``, else (a run
    stopped before its first checkpoint) from ``config.yaml``.

    Raises:
        CheckpointError: neither exists (not a run directory), or the one read is corrupt.
    """
    last = checkpoint_path(run_dir, "last")
    if last.is_file():
        return load_checkpoint(last)["config"]
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise CheckpointError(
            f"cannot resume {run_dir}: it has no {last} and no {saved} (was it written by ciiv "
            "train?)"
        )
    try:
        return config_to_dict(load_config(saved))
    except ConfigError as exc:
        raise CheckpointError(f"cannot resume {run_dir}: {exc}") from exc


def resolve_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """ "auto"/None -> CUDA (device ``local_rank``) when available, else the CPU.

    Raises:
        ValueError: CUDA was requested but is not available.
    """
    name = "auto" if device is None else str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but CUDA is not available; use cpu or auto"
            )
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device(name)


def load_data(config: DataConfig, data_dir: str | Path | None = None) -> Splits:
    """The train / val / test splits a run was (or will be) trained on, in CPU memory.

    ``data_dir`` overrides ``config.data_dir`` (e.g. to evaluate on another machine).
    ``config.max_train`` / ``max_val`` shrink the training and validation splits (stratified,
    seeded with ``config.seed``); the test splits are never shrunk here.
    """
    splits = load_splits(
        config.dataset,
        data_dir=config.data_dir if data_dir is None else data_dir,
        val_fraction=config.val_fraction,
        seed=config.seed,
        download=config.download,
        **config.options,
    )
    if config.max_train is None and config.max_val is None:
        return splits
    train = stratified_subset(splits.train, config.max_train or len(splits.train), config.seed)
    val = stratified_subset(splits.val, config.max_val or len(splits.val), config.seed)
    logger.info("data.max_train/max_val: training on %d, validating on %d", len(train), len(val))
    return dataclasses.replace(splits, train=train, val=val)


@dataclass
class LoadedRun:
    """A trained model and what it was trained on.

    Attributes:
        model: in eval mode, on the requested device; ``ciiv.models.predict(model, x)`` applies
            the method's inference rule (CiiV: z-weighted mean over views, RS: majority vote).
        config: the resolved training config.
        method: training method name.
        dataset: dataset name.
        dataset_info: the dataset's metadata as seen at training time.
        run_dir: the run directory.
        checkpoint: "best" or "last".
        epoch: number of epochs trained when the checkpoint was written.
    """

    model: nn.Module
    config: TrainConfig
    method: str
    dataset: str
    dataset_info: DatasetInfo
    run_dir: Path
    checkpoint: str
    epoch: int


def _dataset_info(values: dict) -> DatasetInfo:
    # Stored as a plain dict (safe loading); tuples may come back as lists.
    return DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def load_run(
    run_dir: str | Path,
    checkpoint: Literal["best", "last"] = "best",
    device: str | torch.device | None = None,
) -> LoadedRun:
    """Rebuild the model of a run from ``RUN_DIR/checkpoints/<checkpoint>.pt``.

    Needs no dataset files: the checkpoint carries the config and the dataset metadata.

    Args:
        run_dir: a directory written by ``ciiv train`` / :func:`ciiv.train.fit`.
        checkpoint: "best" (highest validation accuracy) or "last".
        device: where to put the model; None or "auto" = CUDA when available, else CPU.

    Raises:
        CheckpointError: missing, corrupt or foreign checkpoint.
    """
    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(path)
    if state.get("step"):
        logger.warning(
            "%s was written in the middle of epoch %d (after step %d): the model is not one of "
            "an epoch's end; resume the run to finish it",
            path,
            state["epoch"] + 1,
            state["step"],
        )
    try:
        config = config_from_dict(state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: the stored config is invalid here: {exc}") from exc
    if "dataset_info" not in state:
        raise CheckpointError(f"{path} is incomplete: missing dataset_info")
    info = _dataset_info(state["dataset_info"])
    model = build_model(config.model, info, get_method(config.method.name).model_kind)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit the model its config builds: {exc}"
        ) from exc
    model = model.to(resolve_device(device)).eval()
    return LoadedRun(
        model=model,
        config=config,
        method=config.method.name,
        dataset=config.data.dataset,
        dataset_info=info,
        run_dir=Path(run_dir),
        checkpoint=checkpoint,
        epoch=int(state["epoch"]),
    )


def dataset_info_dict(info: DatasetInfo) -> dict:
    """The metadata as a plain dict, for checkpoints."""
    return dataclasses.asdict(info)
