"""The one training loop: ``fit(config, out_dir)`` trains any method on any dataset.

Data stay on the device as uint8 tensors; batches are index gathers, augmented on the device. The
data order of an epoch is seeded by (seed, epoch) and every other draw comes from torch's global
generators, whose states the checkpoint saves: a run stopped after epoch k or step s and resumed
continues as if it had not stopped (bit-exact on the CPU with ``deterministic: true``).
SIGINT/SIGTERM finish the current step, save ``checkpoints/last.pt`` and raise
:class:`TrainingInterrupted` (docs/training.md). Under torchrun ``batch_size`` is the global batch
and rank 0 writes the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ciiv._io import write_jsonl_atomic
from ciiv.attacks.base import inputs_checked_once
from ciiv.attacks.threat import check_eps
from ciiv.data import ImageTensors, batches_per_epoch, iterate_batches, random_crop_flip, to_float
from ciiv.distributed import DistContext, init_distributed
from ciiv.evaluate.engine import seeded
from ciiv.formatting import format_rate
from ciiv.models import Backbone, build_model, predict
from ciiv.models.registry import check_model_dependencies

from .checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from .methods import Objective, StepContext, StepOutput, create_method
from .optim import build_optimizer, build_scheduler
from .run import (
    check_resumable,
    checkpoint_path,
    load_data,
    prepare_run_dir,
    resolve_device,
    saved_config,
)

__all__ = ["FitResult", "ProgressEvent", "TrainingInterrupted", "fit", "resume"]

logger = logging.getLogger(__name__)

# The run's parts whose state dicts a checkpoint holds, under these keys.
_STATEFUL = ("model", "optimizer", "scheduler", "scaler")


@dataclass
class ProgressEvent:
    """What a progress callback receives.

    Attributes:
        kind: "epoch_start"; "step" after every optimiser step; "validate" before the first and
            after every validation batch; "epoch_end" after the epoch's checkpoint and metrics.
        epoch: 0-based; ``epochs``: the run's total.
        step, steps: optimiser steps done in the epoch (for "epoch_start": before a mid-epoch
            resume) and per epoch; for "validate", validation batches done and their total.
        metrics: "step": the running ``images_per_s``, and every ``progress_every`` steps and at
            the epoch's end the running ``loss`` and ``acc`` (a device sync); "epoch_end": the
            epoch's metrics record.
    """

    kind: Literal["epoch_start", "step", "validate", "epoch_end"]
    epoch: int
    epochs: int
    step: int = 0
    steps: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class FitResult:
    """A finished run: the last epoch's model in eval mode and the metrics history;
    ``best_epoch`` / ``best_val_accuracy`` describe ``checkpoints/best.pt`` (None without a
    validation split)."""

    run_dir: Path
    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_val_accuracy: float | None


class TrainingInterrupted(KeyboardInterrupt):
    """``fit`` stopped on SIGINT or SIGTERM after saving ``checkpoints/last.pt``; a
    KeyboardInterrupt, so code that does not catch it stops as on Ctrl-C.

    Attributes:
        signal_name: "SIGINT" or "SIGTERM"; ``exit_code``: 128 + its number (130, 143), as a
            shell reports a process the signal ended.
        run_dir: the run; ``ciiv train --resume RUN_DIR`` (or :func:`resume`) continues it.
        epochs_done, step: the checkpoint is ``step`` optimiser steps into the epoch after
            ``epochs_done`` finished epochs (step 0: at that epoch end).
    """

    def __init__(self, signum: int, run_dir: Path, epochs_done: int, step: int) -> None:
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        self.run_dir, self.epochs_done, self.step = run_dir, epochs_done, step
        where = (
            f"at step {step} of epoch {epochs_done + 1}" if step else f"after epoch {epochs_done}"
        )
        super().__init__(
            f"stopped by {self.signal_name} {where}; saved {checkpoint_path(run_dir, 'last')}. "
            f"Continue with: ciiv train --resume {run_dir}"
        )


class _StopRequest:
    """SIGINT/SIGTERM handler: the first asks for a checkpoint and stop after this step, a second
    stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        logger.warning(
            "%s: finishing this step and saving a checkpoint (send it again to stop at once)",
            signal.Signals(signum).name,
        )

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle the signals during the block (only the main thread may install handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)


@dataclass
class _EpochProgress:
    """How far this process is into an epoch (a mid-epoch checkpoint carries it)."""

    lr: float  # the learning rate at the epoch's start (its metrics record)
    step: int = 0  # optimiser steps done in the epoch
    seen: int = 0  # examples this process trained on
    sums: dict[str, Tensor] = field(default_factory=dict)  # sums over them (loss x batch, ...)
    elapsed_s: float = 0.0  # training seconds so far (for images/s)

    def add(self, out: StepOutput, y: Tensor) -> None:
        """Count one step on labels y [B]: its loss, correct count and method metrics (times B)
        are summed on the device (no sync)."""
        batch = y.shape[0]
        targets = y if out.targets is None else out.targets
        values = {
            "loss": out.loss.detach().float() * batch,
            "correct": (out.logits.detach().argmax(1) == targets).sum().float(),
            **{k: v.float() * batch for k, v in out.metrics.items()},
        }
        for key, value in values.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.seen += batch
        self.step += 1


class _Step(nn.Module):
    """model + objective as one module, so DDP sees each step as one forward call (its gradient
    hooks and buffer broadcasts are tied to ``forward``, and objectives call other entry points
    such as CiiV's ``forward_views``)."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        return self.objective(self.model, x, y, ctx)


def _epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the data order of ``epoch``: a function of (seed, epoch) only."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global generator is the shared one)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms for the duration of the run (the previous settings restored)."""
    previous = torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    if enabled and device.type == "cuda":
        # cuBLAS needs this before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.backends.cudnn.benchmark = benchmark


def resolve_amp(amp: str, device: torch.device) -> str:
    """The autocast setting a run uses: "auto" is "bf16" on CUDA (tensor cores, no scaler) and
    "none" elsewhere (bf16 convolutions are slower than float32 on most CPUs)."""
    if amp == "auto":
        return "bf16" if device.type == "cuda" else "none"
    return amp


def _compile_backbones(model: nn.Module) -> None:
    # Compile the backbone's entry points in place: the state-dict keys stay the same, and CiiV's
    # forward_views (which calls forward_features/forward_head directly) is covered too.
    for module in model.modules():
        if isinstance(module, Backbone):
            module.forward_features = torch.compile(module.forward_features)
            module.forward_head = torch.compile(module.forward_head)


def _place(split: ImageTensors, device: torch.device) -> ImageTensors:
    """The split on ``device`` when it takes under a quarter of the free accelerator memory
    (batches are then index gathers on the device), else in pinned CPU memory (each uint8 batch
    is copied over as it is drawn)."""
    if device.type != "cuda":
        return split
    free, _ = torch.cuda.mem_get_info(device)
    if split.images.nbytes < free // 4:
        return split.to(device)
    logger.info("keeping %d images in CPU memory (too large for the device)", len(split))
    return ImageTensors(split.images.pin_memory(), split.labels.to(device))


def resume(
    run_dir: str | Path,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    progress: ProgressCallback | None = None,
    progress_every: int = 10,
) -> FitResult:
    """Continue the run in ``run_dir`` from ``checkpoints/last.pt`` with its saved config (or
    from its config.yaml if it has no checkpoint yet). ``overrides`` (as for
    :func:`ciiv.train.load_config`) may change only ``RESUMABLE_KEYS``, e.g. ``{"epochs": 200}``.
    """
    config = load_config(saved_config(run_dir), overrides)
    return fit(config, run_dir, resume=True, progress=progress, progress_every=progress_every)


def fit(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    progress_every: int = 10,
) -> FitResult:
    """Train ``config.method.name`` on ``config.data.dataset``, writing the run to ``out_dir``.

    Args:
        config: the resolved config (see :func:`ciiv.train.load_config`).
        out_dir: the run directory: new, empty or without a checkpoint unless ``resume``.
        resume: continue from its ``checkpoints/last.pt``; ``config`` may differ from the saved
            one only in ``RESUMABLE_KEYS``.
        progress: called with a :class:`ProgressEvent` on rank 0 (never on other ranks).
        progress_every: steps between the running loss and accuracy of "step" events (each
            costs one device sync); under DDP also between the ranks' checks for a stop signal.

    Raises:
        TrainingInterrupted: SIGINT or SIGTERM arrived; ``last.pt`` holds the step it stopped at.
        MissingDependency: the backbone's optional package is missing (before any write).
        ConfigError, RunDirError, CheckpointError, DatasetNotFoundError, ValueError.
    """
    config = config_from_dict(config_to_dict(config))  # validates a hand-built config too
    check_model_dependencies(config.model.backbone)  # before the run directory is written
    run_dir = Path(out_dir)
    dist = init_distributed(use_cuda=resolve_device(config.device).type == "cuda")
    device = resolve_device(config.device, dist.local_rank)
    if config.amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp: 'fp16' needs a CUDA device; use amp=bf16 or amp=none on the CPU")
    try:
        with _determinism(config.deterministic, device):
            return _Trainer(config, run_dir, dist, device, progress, progress_every).run(resume)
    finally:
        dist.shutdown()


class _Trainer:
    """The state of one run: set-up, then ``run``, the epoch loop."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        dist: DistContext,
        device: torch.device,
        progress: ProgressCallback | None,
        progress_every: int,
    ) -> None:
        self.config, self.run_dir, self.dist, self.device = config, run_dir, dist, device
        self.progress = progress if dist.is_main else None
        self.progress_every = max(1, progress_every)
        if config.batch_size % dist.world_size:
            raise ConfigError(
                f"batch_size: {config.batch_size} is not divisible by the {dist.world_size} "
                "processes (it is the global batch, split evenly)"
            )
        self.batch_size = config.batch_size // dist.world_size
        self.channels_last = config.channels_last and device.type == "cuda"
        amp_dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
        self.amp_dtype = amp_dtypes.get(resolve_amp(config.amp, device))
        self.stop = _StopRequest()
        self.resumed: _EpochProgress | None = None  # the epoch a mid-epoch checkpoint left

    def _load_data(self) -> None:
        # Rank 0 fetches first (a download must not race), then the others read its files.
        if not self.dist.is_main:
            self.dist.barrier()
        splits = load_data(self.config.data)
        if self.dist.is_main:
            self.dist.barrier()
        self.info = splits.info
        self.train = _place(splits.train, self.device)
        self.val = _place(splits.val, self.device)
        if len(self.train) < self.config.batch_size:
            raise ConfigError(
                f"batch_size: {self.config.batch_size} is larger than the training split "
                f"({len(self.train)} examples)"
            )
        self.steps_per_epoch = batches_per_epoch(
            len(self.train), self.batch_size, drop_last=True, world_size=self.dist.world_size
        )
        pgd = getattr(self.config.method.options, "pgd", None)
        try:  # an L2 budget needs the image size, known only now
            if pgd is not None:
                check_eps(pgd.norm, pgd.eps, tuple(self.train.images.shape[1:]))
        except ValueError as exc:
            raise ConfigError(f"method.pgd.eps: {exc}") from None

    def _build(self) -> None:
        config = self.config
        self.objective = create_method(config.method)
        self.model = build_model(config.model, self.info, self.objective.model_kind).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if config.compile in (True, "backbone"):
            _compile_backbones(self.model)
        self.optimizer = build_optimizer(
            self.model.parameters(), config.optim, fused=self.device.type == "cuda"
        )
        self.scheduler = build_scheduler(
            self.optimizer, config.optim, config.epochs, self.steps_per_epoch
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")
        self.step_module: nn.Module = _Step(self.model, self.objective)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = DistributedDataParallel(self.step_module, device_ids=ids)
        if config.compile == "step":
            # The whole step and its backward as one graph; all training batches have one shape
            # (drop_last), so it recompiles only when the epoch or a scheduled weight first
            # changes (docs/training.md).
            self.step_module = torch.compile(self.step_module)

    def _restore(self) -> None:
        state = load_checkpoint(checkpoint_path(self.run_dir, "last"), map_location=self.device)
        check_resumable(config_from_dict(state["config"]), self.config)
        try:
            for key in _STATEFUL:
                getattr(self, key).load_state_dict(state[key])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"cannot restore the training state: {exc}") from exc
        self.start_epoch = int(state["epoch"])
        step = int(state.get("step", 0))
        started = self.start_epoch + (step > 0)
        if self.config.epochs < started:
            raise ConfigError(
                f"epochs: {self.config.epochs} is below the {started} epochs {self.run_dir} has "
                f"already {'started' if step else 'trained'}; resume with epochs >= {started}"
            )
        self.best_epoch, self.best_val = state["best_epoch"], state["best_val_accuracy"]
        rng = state["rng"]
        if len(rng) == self.dist.world_size:
            restore_rng_state(rng[self.dist.rank])
        else:
            logger.warning(
                "checkpoint was written by %d processes, resuming with %d: the random streams "
                "are reseeded, so the run continues but not bit-exactly",
                len(rng),
                self.dist.world_size,
            )
            _seed_everything(_epoch_seed(self.config.seed + self.dist.rank, self.start_epoch))
        # The checkpoint's history is the record: metrics.jsonl may hold a line for an epoch
        # that finished after this checkpoint was written (a crash in between).
        self.history = list(state["history"])
        if self.dist.is_main:
            write_jsonl_atomic(self.run_dir / "metrics.jsonl", self.history)
        self._restore_best(state)
        self.resumed = self._resumed_progress(state.get("epoch_progress"))
        where = f"at step {step} of epoch {started}" if step else f"after epoch {self.start_epoch}"
        logger.info("resuming %s %s", self.run_dir, where)

    def _restore_best(self, state: dict[str, Any]) -> None:
        """Rebuild a best.pt missing after a crash from last.pt if that is the best epoch, else
        choose the best epoch anew."""
        path, done = checkpoint_path(self.run_dir, "best"), int(state["epoch"])
        if path.is_file() or done == 0:
            return
        if not state.get("step") and state["best_epoch"] in (None, done - 1):
            if self.dist.is_main:
                save_checkpoint(path, state)
            logger.info("restored the missing %s from last.pt (epoch %d)", path, done)
            return
        logger.warning(
            "%s is missing and cannot be rebuilt; the best epoch is chosen again from the "
            "epochs still to come",
            path,
        )
        self.best_epoch = self.best_val = None

    def _resumed_progress(self, saved: list[dict[str, Any]] | None) -> _EpochProgress | None:
        """This process's share of a mid-epoch checkpoint's epoch (None: an epoch end). Under
        another number of processes rank 0 takes the sums of all, the others start from zero."""
        if not saved:
            return None
        first, rank = saved[0], self.dist.rank
        if len(saved) == self.dist.world_size:
            sums, seen = saved[rank]["sums"], saved[rank]["seen"]
        elif rank == 0:
            sums = {key: sum(s["sums"][key] for s in saved) for key in first["sums"]}
            seen = sum(s["seen"] for s in saved)
        else:
            sums, seen = {key: torch.zeros_like(v) for key, v in first["sums"].items()}, 0
        sums = {key: value.to(self.device) for key, value in sums.items()}
        return _EpochProgress(**{**first, "seen": seen, "sums": sums})

    def run(self, resume: bool) -> FitResult:
        config = self.config
        restoring = prepare_run_dir(self.run_dir, config, resume, self.dist)
        if self.dist.is_main and not restoring:
            # Before the data: a run stopped while loading them can be resumed from its config.
            save_config(config, self.run_dir / "config.yaml")
        # Each rank draws its own noise; rank 0 draws what a single-process run would.
        _seed_everything(config.seed + self.dist.rank)
        self._load_data()
        self._build()
        self.start_epoch, self.best_epoch, self.best_val = 0, None, None
        self.history: list[dict[str, Any]] = []
        if restoring:
            self._restore()
            if self.dist.is_main:
                save_config(config, self.run_dir / "config.yaml")
        if self.dist.is_main:
            logger.info(
                "training %s (%s, %s) on %s for %d epochs, %d steps/epoch, %s, %d process(es)",
                config.method.name,
                type(self.model).__name__,
                config.model.backbone,
                config.data.dataset,
                config.epochs,
                self.steps_per_epoch,
                self.device,
                self.dist.world_size,
            )
        # The loop feeds known-good batches: no per-call pixel check (a device sync) while training.
        with inputs_checked_once(self.model), self.stop.installed():
            for epoch in range(self.start_epoch, config.epochs):
                self._finish_epoch(epoch, *self._train_steps(epoch))
                if epoch + 1 < config.epochs and self._stop_agreed():
                    raise self._interrupted(epoch + 1, 0)
        model = self.model.eval()
        return FitResult(self.run_dir, model, self.history, self.best_epoch, self.best_val)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _batches(self, epoch: int, skip: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's batches on the device, augmented, from batch ``skip`` on."""
        order = torch.Generator().manual_seed(_epoch_seed(self.config.seed, epoch))
        batches = iterate_batches(
            self.train.images,
            self.train.labels,
            self.batch_size,
            shuffle=True,
            generator=order,
            drop_last=True,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        # Skipped batches are index gathers only, with no random draw: a resumed epoch goes on
        # exactly where it stopped.
        for images, labels in itertools.islice(batches, skip, None):
            x = to_float(images, self.device, channels_last=self.channels_last)
            if self.config.data.augment:
                x = random_crop_flip(x, self.info.crop_padding, self.info.hflip)
            yield x, labels.to(self.device, non_blocking=True)

    def _train_steps(self, epoch: int) -> tuple[_EpochProgress, float]:
        """The steps of ``epoch`` from where a mid-epoch checkpoint left it, with their events and
        checkpoints; returns the epoch's progress and its ``time.perf_counter`` start."""
        steps = self.steps_per_epoch
        progress = self.resumed or _EpochProgress(lr=self.optimizer.param_groups[0]["lr"])
        self.resumed = None
        self._notify("epoch_start", epoch, progress.step, steps)
        skip = progress.step
        self.model.train()
        start = time.perf_counter() - progress.elapsed_s
        for i, (x, y) in enumerate(self._batches(epoch, skip), start=skip):
            ctx = StepContext(epoch=epoch, step=epoch * steps + i)
            progress.add(self._train_step(x, y, ctx), y)
            if self.progress:
                seen, elapsed = progress.seen, time.perf_counter() - start
                running = {"images_per_s": seen * self.dist.world_size / elapsed}
                if (i + 1) % self.progress_every == 0 or i + 1 == steps:  # a device sync
                    running["loss"] = progress.sums["loss"].item() / seen
                    running["acc"] = progress.sums["correct"].item() / seen
                self._notify("step", epoch, i + 1, steps, running)
            if i + 1 < steps:  # the epoch's end has a checkpoint of its own
                progress.elapsed_s = time.perf_counter() - start
                self._checkpoint_within(epoch, progress)
        return progress, start

    def _finish_epoch(self, epoch: int, progress: _EpochProgress, start: float) -> None:
        """After the last step of ``epoch``: its metrics summed over the processes, validation,
        the best epoch, the checkpoint and metrics line, the log line and the "epoch_end" event."""
        config, sums = self.config, progress.sums
        totals = self.dist.all_reduce_sum(
            torch.stack([*sums.values(), torch.tensor(float(progress.seen), device=self.device)])
        ).tolist()
        train_time = time.perf_counter() - start
        count = totals[-1]
        means = {key: total / count for key, total in zip(sums, totals, strict=False)}
        if not math.isfinite(means["loss"]):
            raise FloatingPointError(
                f"training diverged in epoch {epoch}: the loss is {means['loss']}; lower "
                "optim.lr, or use amp=none or bf16"
            )
        val_acc = self._validate(epoch)
        record: dict[str, Any] = {
            "epoch": epoch,
            "lr": progress.lr,
            **self.objective.epoch_values(epoch),
            "train_loss": means.pop("loss"),
            "train_acc": means.pop("correct"),
            **{f"train_{k}": v for k, v in means.items()},
            "val_acc": val_acc,
            "images_per_s": count / train_time,
            "epoch_time_s": time.perf_counter() - start,
        }
        improved = val_acc is not None and (self.best_val is None or val_acc > self.best_val)
        if improved:
            self.best_epoch, self.best_val = epoch, val_acc
        self.history.append(record)
        self._save(epoch, best=improved or val_acc is None)
        if self.dist.is_main:
            logger.info(
                "epoch %d/%d: loss %.4f, train acc %.4f, val acc %s, lr %.3g, %s images/s",
                epoch + 1,
                config.epochs,
                record["train_loss"],
                record["train_acc"],
                "n/a" if val_acc is None else f"{val_acc:.4f}",
                progress.lr,
                format_rate(record["images_per_s"]),
            )
        self._notify("epoch_end", epoch, self.steps_per_epoch, self.steps_per_epoch, record)

    def _notify(self, kind: str, epoch: int, *args: Any) -> None:
        """Send ``ProgressEvent(kind, epoch, epochs, *args)`` to the progress callback, if any."""
        if self.progress:
            self.progress(ProgressEvent(kind, epoch, self.config.epochs, *args))

    def _train_step(self, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        """One optimiser step on the batch x [B, C, H, W] in [0, 1], y [B]."""
        with self._autocast():
            out = self.step_module(x, y, ctx)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return out

    def _checkpoint_within(self, epoch: int, progress: _EpochProgress) -> None:
        """Inside ``epoch``, after ``progress.step`` steps: save last.pt there when
        ``checkpoint_every`` steps are up or a stop signal came, and then stop."""
        stop = self._stop_agreed(progress.step)
        every = self.config.checkpoint_every
        if stop or (every and (epoch * self.steps_per_epoch + progress.step) % every == 0):
            self._save(epoch, progress)
        if stop:
            raise self._interrupted(epoch, progress.step)

    def _stop_agreed(self, step: int | None = None) -> bool:
        """Whether a stop signal came. Under DDP every rank must stop at the same step, so the
        ranks agree by a sum (one small sync) every ``progress_every`` steps and at epoch ends."""
        requested = self.stop.signum is not None
        if not self.dist.enabled:
            return requested
        if step is not None and step % self.progress_every:
            return False
        flag = torch.tensor(float(requested), device=self.device)
        return self.dist.all_reduce_sum(flag).item() > 0

    def _interrupted(self, epochs_done: int, step: int) -> TrainingInterrupted:
        # A rank that did not get the signal itself stops as on SIGTERM.
        signum = self.stop.signum or signal.SIGTERM
        return TrainingInterrupted(signum, self.run_dir, epochs_done, step)

    @torch.no_grad()
    def _validate(self, epoch: int) -> float | None:
        """Accuracy on the validation split by the model's own inference rule, or None if empty.
        Random models draw from a fixed seed: every epoch is judged on the same draws, and
        training's random stream is left untouched."""
        if len(self.val) == 0:
            return None
        self.model.eval()
        # Each rank scores every world_size-th example; the counts are summed over the ranks.
        rank, ranks = self.dist.rank, self.dist.world_size
        images, labels = self.val.images[rank::ranks], self.val.labels[rank::ranks]
        correct = torch.zeros((), device=self.device)
        size = self.config.eval_batch_size
        batches = math.ceil(len(labels) / size)
        self._notify("validate", epoch, 0, batches)
        with seeded(self.config.seed + rank, self.device), self._autocast():
            for i, (x, y) in enumerate(iterate_batches(images, labels, size), start=1):
                x = to_float(x, self.device, channels_last=self.channels_last)
                correct += (predict(self.model, x) == y.to(self.device)).sum()
                self._notify("validate", epoch, i, batches)
        count = torch.tensor(float(len(labels)), device=self.device)
        correct_all, count_all = self.dist.all_reduce_sum(torch.stack([correct, count])).tolist()
        return correct_all / count_all

    def _save(self, epoch: int, progress: _EpochProgress | None = None, best: bool = False) -> None:
        """Write checkpoints/last.pt (and best.pt if ``best``) at the end of ``epoch``, or inside
        it when ``progress`` says how far (each rank's running sums are saved with it)."""
        mine = None
        if progress is not None:  # plain values and CPU tensors
            sums = {key: value.detach().cpu() for key, value in progress.sums.items()}
            mine = {**vars(progress), "sums": sums}
        gathered = self.dist.all_gather((capture_rng_state(), mine))
        if not self.dist.is_main:
            return
        state = {
            **{key: getattr(self, key).state_dict() for key in _STATEFUL},
            "epoch": epoch if progress else epoch + 1,  # epochs finished
            "step": progress.step if progress else 0,  # optimiser steps into the next one
            "epoch_progress": None if progress is None else [p for _, p in gathered],
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val,
            "rng": [rng for rng, _ in gathered],
            "config": config_to_dict(self.config),
            "method": self.config.method.name,
            "dataset": self.config.data.dataset,
            "dataset_info": dataclasses.asdict(self.info),
            "history": self.history,
            "world_size": self.dist.world_size,
        }
        if progress is None:
            # The metrics line goes first: if the process dies before the checkpoint is
            # replaced, the resumed run rewrites metrics.jsonl from the checkpoint's history.
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(self.history[-1]) + "\n")
        save_checkpoint(checkpoint_path(self.run_dir, "last"), state)
        if best:
            save_checkpoint(checkpoint_path(self.run_dir, "best"), state)
