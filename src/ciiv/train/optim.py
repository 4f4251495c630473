"""Optimisers and learning-rate schedules (registries keyed by the config's names). A schedule is
a function of the fractional epochs done, so a resumed run continues it exactly.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .config import OptimConfig

__all__ = ["SCHEDULES", "build_optimizer", "build_scheduler", "lr_factor"]

# name -> (optimiser class, the config fields it takes besides lr and weight_decay)
_OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], tuple[str, ...]]] = {
    "sgd": (torch.optim.SGD, ("momentum", "nesterov")),
    "adam": (torch.optim.Adam, ("betas",)),
    "adamw": (torch.optim.AdamW, ("betas",)),
}


def build_optimizer(
    params: Iterable[nn.Parameter], config: OptimConfig, *, fused: bool = False
) -> torch.optim.Optimizer:
    """The optimiser named ``config.name`` over ``params`` (weight decay on every parameter);
    ``fused``: the fused implementation (one kernel per step), where this torch's has one."""
    if config.name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimiser {config.name!r}; valid: {', '.join(_OPTIMIZERS)}")
    cls, keys = _OPTIMIZERS[config.name]
    kwargs = {key: getattr(config, key) for key in ("lr", "weight_decay", *keys)}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    if fused and "fused" in inspect.signature(cls).parameters:
        kwargs["fused"] = True
    return cls(params, **kwargs)


def _multistep(t: float, total: float, c: OptimConfig) -> float:
    # "lr x gamma after epoch m": epochs 0..m-1 use the previous rate, epoch m onwards the next.
    return c.gamma ** sum(math.floor(t) >= m for m in c.milestones)


def _cosine(t: float, total: float, c: OptimConfig) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(t / total, 1.0)))


def _onecycle(t: float, total: float, c: OptimConfig) -> float:
    warmup = c.warmup_fraction * total
    start = 1 / 25  # the usual initial lr / peak lr of one-cycle
    if t < warmup:
        return start + (1 - start) * t / warmup
    return 0.5 * (1 + math.cos(math.pi * min((t - warmup) / (total - warmup), 1.0)))


SCHEDULES: dict[str, Callable[[float, float, OptimConfig], float]] = {
    "multistep": _multistep,
    "cosine": _cosine,
    "onecycle": _onecycle,
    "constant": lambda t, total, c: 1.0,
}


def lr_factor(config: OptimConfig, epoch_progress: float, epochs: int) -> float:
    """lr / peak lr after ``epoch_progress`` epochs (fractional) of an ``epochs``-epoch run."""
    if config.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {config.schedule!r}; valid: {', '.join(SCHEDULES)}")
    return SCHEDULES[config.schedule](epoch_progress, float(epochs), config)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, epochs: int, steps_per_epoch: int
) -> LambdaLR:
    """A per-step scheduler following ``config.schedule``; call ``step()`` after each step."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return LambdaLR(optimizer, lambda step: lr_factor(config, step / steps_per_epoch, epochs))
