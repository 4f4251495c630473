"""The training-method contract and its registry.

A method is an objective: ``objective(model, x, y, ctx) -> StepOutput``. The training loop is
the same for every method; what differs is the loss (and any adversarial or noisy inputs it
builds) and the kind of model it trains (``model_kind``: plain, CiiV or smoothed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn

from ciiv.models.build import ModelKind
from ciiv.models.registry import unknown_name_message

if TYPE_CHECKING:
    from ciiv.train.config import MethodConfig

__all__ = [
    "Objective",
    "StepContext",
    "StepOutput",
    "create_method",
    "get_method",
    "list_methods",
    "register_method",
]


@dataclass(frozen=True)
class StepContext:
    """Where the loop is: ``epoch`` is 0-based, ``step`` counts optimiser steps from 0."""

    epoch: int
    step: int


@dataclass
class StepOutput:
    """What one objective call returns.

    Attributes:
        loss: scalar tensor to minimise.
        logits: [B, classes] predictions used for the training accuracy (detached by the loop).
        targets: labels [B] the accuracy is counted against (None: the batch's labels). Mixup
            methods use the label with the larger mixing weight.
        metrics: extra scalar tensors averaged over the epoch (e.g. ``ce``, ``reg``).
    """

    loss: Tensor
    logits: Tensor
    targets: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Objective(ABC):
    """One training method. Subclasses set ``model_kind`` and build themselves from the config."""

    model_kind: ClassVar[ModelKind] = "plain"

    @classmethod
    @abstractmethod
    def from_config(cls, config: MethodConfig) -> Objective:
        """The objective with the settings in ``config`` (the only place it reads the config)."""

    @abstractmethod
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        """Loss on pixels x [B, C, H, W] in [0, 1] with labels y [B]; ``model`` is in train mode."""

    def epoch_values(self, epoch: int) -> dict[str, float]:
        """Scheduled hyper-parameters in force during ``epoch`` (logged once per epoch)."""
        return {}


_METHODS: dict[str, type[Objective]] = {}


def register_method(name: str) -> Callable[[type[Objective]], type[Objective]]:
    """Class decorator registering an :class:`Objective` subclass as training method ``name``."""

    def decorator(cls: type[Objective]) -> type[Objective]:
        if name in _METHODS:
            raise ValueError(f"training method {name!r} is already registered")
        _METHODS[name] = cls
        return cls

    return decorator


def list_methods() -> list[str]:
    """Registered training-method names, sorted."""
    return sorted(_METHODS)


def get_method(name: str) -> type[Objective]:
    """The objective class registered as ``name`` (ValueError listing the valid names)."""
    if name not in _METHODS:
        raise ValueError(unknown_name_message("training method", name, list(_METHODS)))
    return _METHODS[name]


def create_method(config: MethodConfig) -> Objective:
    """The objective named ``config.name``, built from ``config``."""
    return get_method(config.name).from_config(config)
