"""Attack registry: names resolve to classes, never through if/elif chains."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from torch import nn

from ciiv._checks import check_choice
from ciiv._mapping import check_keys
from ciiv.deps import check_available

from .base import Attack

__all__ = [
    "attack_class",
    "check_attack_arguments",
    "check_attack_dependencies",
    "create_attack",
    "list_attacks",
    "register_attack",
]

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
    check_choice("attack", name, list_attacks())
    return _ATTACKS[name]


def check_attack_dependencies(names: Iterable[str]) -> None:
    """Before a long run: ValueError for an unknown attack name, and
    :class:`~ciiv.deps.MissingDependency` (naming the extra to install) for an attack whose
    optional package (its class's ``requires``) is not installed. Nothing is imported."""
    for name in dict.fromkeys(names):
        check_available(attack_class(name).requires, needed_by=f"attack {name!r}")


def create_attack(name: str, model: nn.Module, **hyper: Any) -> Attack:
    """Build the attack ``name`` against ``model`` with hyper-parameters in natural units; a
    ValueError listing the valid ones for unknown ones (:func:`check_attack_arguments`)."""
    check_attack_arguments(name, hyper)  # the name too
    return _ATTACKS[name](model, **hyper)


def check_attack_arguments(name: str, hyper: Iterable[str]) -> None:
    """ValueError for an unknown attack ``name`` or hyper-parameter names it does not take (the
    message lists the valid ones); values are checked by the attack's constructor, and attacks
    that forward extra keywords to another attack ("transfer") validate them there."""
    params = inspect.signature(attack_class(name).__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = [p for p in params if p not in ("self", "model")]
        check_keys(hyper, valid, "hyper-parameter", owner=f"attack {name!r}")
