"""Attack registry: names resolve to classes, never through if/elif chains."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from ciiv._mapping import check_keys

from .base import Attack

__all__ = ["attack_class", "create_attack", "list_attacks", "register_attack"]

_ATTACKS: dict[str, type[Attack]] = {}

A = TypeVar("A", bound=type[Attack])


def register_attack(name: str) -> Callable[[A], A]:
    """Class decorator: register an Attack subclass under ``name`` (also sets ``cls.name``)."""

    def decorator(cls: A) -> A:
        if name in _ATTACKS:
            raise ValueError(f"attack {name!r} is already registered ({_ATTACKS[name].__name__})")
        cls.name = name
        _ATTACKS[name] = cls
        return cls

    return decorator


def list_attacks() -> list[str]:
    """Registered attack names, sorted."""
    return sorted(_ATTACKS)


def attack_class(name: str) -> type[Attack]:
    """The class registered as ``name``; ValueError listing the valid names otherwise."""
    if name not in _ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(list_attacks())}")
    return _ATTACKS[name]


def create_attack(name: str, model: nn.Module, **hyper: Any) -> Attack:
    """Build the attack ``name`` against ``model`` with hyper-parameters in natural units.

    Unknown hyper-parameters raise a ValueError listing the valid ones (attacks that forward extra
    keywords to another attack, like "transfer", validate them there).
    """
    cls = attack_class(name)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = [p for p in params if p not in ("self", "model")]
        check_keys(hyper, valid, "hyper-parameter", owner=f"attack {name!r}")
    return cls(model, **hyper)
