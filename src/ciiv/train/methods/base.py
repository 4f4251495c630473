"""The training-method contract and its registry.

A method is an objective, ``objective(model, x, y, ctx) -> StepOutput``, with the kind of model it
trains (``model_kind``: plain, CiiV or smoothed) and its settings: a frozen ``Options`` dataclass
validated in its ``__post_init__``. The config's ``method`` section is ``{name: <method>,
**options}`` (:class:`MethodConfig`), so adding a method is one file.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from ciiv._checks import check_bounds
from ciiv._mapping import ConfigError, build_dataclass
from ciiv.models.build import ModelKind
from ciiv.models.registry import unknown_name_message

__all__ = [
    "MethodConfig",
    "NoOptions",
    "Objective",
    "StepContext",
    "StepOutput",
    "check_bounds",
    "create_method",
    "get_method",
    "list_methods",
    "option_names",
    "register_method",
    "switch_method",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepContext:
    """Where the loop is: ``epoch`` is 0-based, ``step`` counts optimiser steps from 0."""

    epoch: int
    step: int


@dataclass
class StepOutput:
    """What one objective call returns: the scalar ``loss``; ``logits`` [B, classes] and the
    ``targets`` [B] (None: the batch's labels; mixup: the label with the larger weight) of the
    training accuracy; extra scalar ``metrics`` averaged over the epoch (``ce``, ``reg``, ...)."""

    loss: Tensor
    logits: Tensor
    targets: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that has none."""


class Objective(ABC):
    """One training method. Subclasses set ``model_kind`` and, if they have settings, ``Options``
    (a frozen dataclass whose defaults are the published ones)."""

    model_kind: ClassVar[ModelKind] = "plain"
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None) -> None:
        self.options = self.Options() if options is None else options

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
    """The objective named ``config.name``, with ``config.options``."""
    return get_method(config.name)(config.options)


# Option names of configs saved before each method owned its options (one flat `method` mapping
# with every method's knobs): old name -> the owning method's name for it.
_RENAMED = {
    "trades_beta": "beta",
    "mixup_alpha": "alpha",
    "bpfc_step": "step",
    "bpfc_noise": "noise",
    "bpfc_weight": "weight",
    "bpfc_factor": "factor",
    "bpfc_milestones": "milestones",
}


def option_names(name: str) -> list[str]:
    """The option names of training method ``name`` (ValueError for an unknown method)."""
    return [f.name for f in dataclasses.fields(get_method(name).Options)]


def switch_method(values: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The raw ``method`` mapping after choosing method ``name`` (``--method``, ``method.name=``):
    the options ``name`` also takes are kept (an option name means the same in every method), the
    others dropped; the old option names of a mapping saved before methods owned their options
    are renamed."""
    values = dict(values)
    if set(_RENAMED) <= set(values):
        values = {_RENAMED.get(key, key): value for key, value in values.items()}
    try:
        valid = option_names(name)
    except ValueError:  # unknown: MethodConfig.from_mapping reports it with the valid names
        return {**values, "name": name}
    kept = {key: value for key, value in values.items() if key in valid}
    dropped = sorted(set(values) - set(kept) - {"name"})
    if dropped:
        logger.debug("method %s does not take %s: dropped", name, ", ".join(dropped))
    return {"name": name, **kept}


@dataclass
class MethodConfig:
    """The training method: a name from :func:`list_methods` and that method's ``Options``, read
    and written as one mapping, ``{name: trades, beta: 6.0, pgd: {...}}``."""

    name: str = "ciiv"
    options: Any = None  # get_method(name).Options(); None: its defaults

    def __post_init__(self) -> None:
        options_type = get_method(self.name).Options
        if self.options is None:
            self.options = options_type()
        elif not isinstance(self.options, options_type):
            raise ConfigError(
                f"method {self.name!r} takes {options_type.__qualname__}, "
                f"got {type(self.options).__qualname__}"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], prefix: str = "method.") -> MethodConfig:
        """Parse ``{name, **options}`` strictly: the options are those of method ``name``."""
        name = values.get("name", cls.name)
        if not isinstance(name, str) or name not in _METHODS:
            raise ConfigError(
                f"{prefix}name: unknown method {name!r}; valid: {', '.join(list_methods())}"
            )
        if set(_RENAMED) <= set(values):  # a config saved before methods owned their options
            values = switch_method(values, name)
        options = {key: value for key, value in values.items() if key != "name"}
        for old, new in _RENAMED.items():
            if old in options and new in option_names(name):
                raise ConfigError(f"{prefix}{old} is now {prefix}{new}")
        owner = f"method {name!r}"
        return cls(name, build_dataclass(get_method(name).Options, options, prefix, owner=owner))

    def to_dict(self) -> dict[str, Any]:
        """``{name, **options}`` in plain YAML/JSON types."""
        return {"name": self.name, **dataclasses.asdict(self.options)}
