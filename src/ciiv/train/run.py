"""The run directory (config.yaml, metrics.jsonl, checkpoints/last.pt and best.pt; the layout
is in docs/training.md): preparing it for a new or resumed run, what may change on resuming, and
loading a trained model back from it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ciiv.data import DatasetInfo, Splits, load_splits, stratified_subset
from ciiv.distributed import DistContext
from ciiv.models import build_model

from .checkpoint import CheckpointError, load_checkpoint, remove_temporaries
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
    "RESUMABLE_KEYS",
    "LoadedRun",
    "RunDirError",
    "RunDirExistsError",
    "check_resumable",
    "checkpoint_path",
    "load_data",
    "load_run",
    "prepare_run_dir",
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
    """The config a run was started with, as a dict: from ``checkpoints/last.pt``, else from
    ``config.yaml``; CheckpointError if neither exists or the one read is corrupt."""
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


# Config keys that may change when a run is resumed: they do not change what is computed (or, for
# epochs, only extend it; a cosine or one-cycle schedule is then stretched from that point on).
RESUMABLE_KEYS: tuple[str, ...] = (
    "epochs",
    "device",
    "eval_batch_size",
    "compile",
    "checkpoint_every",
    "data.data_dir",
)

# What a run directory holds before its first checkpoint: a new run may start afresh there.
_UNSTARTED_RUN = frozenset({"config.yaml", "metrics.jsonl", "checkpoints"})


def check_resumable(saved: TrainConfig, config: TrainConfig) -> None:
    """A :class:`ConfigError` listing the changes unless ``config`` differs from the ``saved``
    one only in :data:`RESUMABLE_KEYS`."""
    old, new = _flatten(config_to_dict(saved)), _flatten(config_to_dict(config))
    changed = [k for k in old if old[k] != new.get(k) and k not in RESUMABLE_KEYS]
    if changed:
        diffs = ", ".join(f"{k} ({old[k]!r} -> {new.get(k)!r})" for k in changed)
        raise ConfigError(
            f"cannot resume with a different config: {diffs}; only {', '.join(RESUMABLE_KEYS)} "
            "may change. Start a new run with another --out instead"
        )


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "options" and key != "backbone_kwargs":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _unstarted(run_dir: Path) -> bool:
    """Whether a new run may use ``run_dir``: it does not exist, is empty, or holds only what a
    run stopped before its first checkpoint leaves (config.yaml, metrics.jsonl, no .pt file)."""
    if not run_dir.exists():
        return True
    if not run_dir.is_dir() or not {p.name for p in run_dir.iterdir()} <= _UNSTARTED_RUN:
        return False
    checkpoints = run_dir / "checkpoints"
    return not checkpoints.exists() or not any(checkpoints.glob("*.pt"))


def prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool, dist: DistContext) -> bool:
    """Check and create ``run_dir`` (a new run may use one without a checkpoint); True when it
    holds ``checkpoints/last.pt`` to resume from. Leftovers of an interrupted save are removed."""
    last = checkpoint_path(run_dir, "last")
    restoring = resume and last.is_file()
    # Every rank checks before rank 0 creates anything, so all ranks agree on the outcome.
    if resume and not restoring:
        check_resumable(config_from_dict(saved_config(run_dir)), config)
        logger.info("%s has no checkpoint yet: starting it afresh from its config", run_dir)
    elif not resume and not _unstarted(run_dir):
        raise RunDirExistsError(
            f"run directory {run_dir} already exists and is not empty (it holds a checkpoint or "
            f"files of its own); pick another --out, or continue that run with --resume {run_dir}"
        )
    dist.barrier()
    if dist.is_main:
        try:
            last.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(
                f"cannot create the run directory {run_dir} ({exc.strerror or exc}); choose an "
                "--out in a folder you can write to"
            ) from None
        for path in remove_temporaries(last.parent):
            logger.info("removed %s, left by an interrupted save", path)
        if not restoring:
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    return restoring


def resolve_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """ "auto"/None -> CUDA (device ``local_rank``) when available, else the CPU; ValueError if
    CUDA was requested but is not available."""
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
    """The train / val / test splits a run was (or will be) trained on, in CPU memory (``max_train``
    and ``max_val`` applied; the test splits are never shrunk). ``data_dir`` overrides
    ``config.data_dir`` (e.g. to evaluate on another machine)."""
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
    """A trained model (eval mode; ``ciiv.models.predict(model, x)`` applies the method's
    inference rule), what it was trained on (``dataset_info`` as seen at training time), and which
    ``checkpoint`` ("best" or "last"), written after ``epoch`` epochs."""

    model: nn.Module
    config: TrainConfig
    method: str
    dataset: str
    dataset_info: DatasetInfo
    run_dir: Path
    checkpoint: str
    epoch: int


def load_run(
    run_dir: str | Path,
    checkpoint: Literal["best", "last"] = "best",
    device: str | torch.device | None = None,
) -> LoadedRun:
    """Rebuild the model of a run from ``RUN_DIR/checkpoints/<checkpoint>.pt`` ("best": highest
    validation accuracy, or "last") on ``device`` (None or "auto": CUDA when available). Needs no
    dataset files: the checkpoint carries the config and the dataset metadata.

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
    # Stored as a plain dict (safe loading); tuples come back as lists.
    stored = state["dataset_info"].items()
    info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored})
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
