"""Backbone contract and the name -> factory registry.

A backbone maps images to penultimate features phi (SPEC section 3) and has a single linear
head W on top. Native families register a plain name (``create_model("preact_resnet18")``), model
zoos a *prefix* whose factory receives the part after the colon (``create_model("tv:resnet18")``).
The built-in families register themselves when :mod:`ciiv.models` is imported (its last line
imports :mod:`ciiv.models.backbones`), which Python does before this module is used.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from ciiv._checks import positive_int
from ciiv.deps import check_available

__all__ = [
    "Backbone",
    "check_model_dependencies",
    "create_model",
    "list_models",
    "register_model",
    "register_prefix",
    "unknown_name_message",
]


class Backbone(nn.Module):
    """Feature extractor ``features`` (images [N, C, H, W] -> [N, D = num_features], pooling and
    flattening included) followed by one linear ``head`` to ``num_classes`` logits. Subclasses
    may override :meth:`forward_features`; :meth:`forward_head` is always ``head``."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        positive_int("num_features", num_features)
        positive_int("num_classes", num_classes)
        self.num_features = num_features
        self.num_classes = num_classes
        self.features = features
        self.head = nn.Linear(num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] (normalised) -> penultimate features phi [N, D]."""
        return self.features(x)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """Features [N, D] -> logits [N, num_classes]."""
        return self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] -> logits [N, num_classes]."""
        return self.forward_head(self.forward_features(x))


# A name's factory is ``fn(num_classes, in_channels, **kw)``, a prefix's
# ``fn(name, num_classes, in_channels, **kw)``.
Factory = Callable[..., Backbone]
_F = TypeVar("_F", bound=Factory)


@dataclass(frozen=True)
class _Prefix:
    factory: Factory
    names: Callable[[], list[str]]
    hint: str
    requires: tuple[str, ...] = ()


_MODELS: dict[str, Factory] = {}
_PREFIXES: dict[str, _Prefix] = {}


def register_model(name: str) -> Callable[[_F], _F]:
    """Decorator registering ``fn(num_classes, in_channels, **kw) -> Backbone`` under ``name``."""
    if not name or ":" in name:
        raise ValueError(f"model name {name!r} must be non-empty and contain no ':' (prefix mark)")

    def decorator(fn: _F) -> _F:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return decorator


def register_prefix(
    prefix: str, names: Callable[[], list[str]], hint: str, requires: tuple[str, ...] = ()
) -> Callable[[_F], _F]:
    """Decorator registering ``fn(name, num_classes, in_channels, **kw)`` for ``"<prefix>:<name>"``;
    ``names()`` lists the valid names, ``hint`` describes the zoo in error messages, ``requires``
    names its optional packages (:func:`check_model_dependencies`)."""
    if not prefix or ":" in prefix:
        raise ValueError(f"prefix {prefix!r} must be non-empty and contain no ':'")

    def decorator(fn: _F) -> _F:
        if prefix in _PREFIXES:
            raise ValueError(f"prefix {prefix!r} is already registered")
        _PREFIXES[prefix] = _Prefix(factory=fn, names=names, hint=hint, requires=tuple(requires))
        return fn

    return decorator


def list_models(include_prefixes: bool = False) -> list[str]:
    """Sorted native backbone names; with ``include_prefixes`` also every ``"<prefix>:<name>"``
    a model zoo offers (``tv:``, ``timm:`` when installed), a long list."""
    names = sorted(_MODELS)
    if include_prefixes:
        for prefix in sorted(_PREFIXES):
            names.extend(f"{prefix}:{n}" for n in sorted(_PREFIXES[prefix].names()))
    return names


def check_model_dependencies(name: str) -> None:
    """Raise :class:`~ciiv.deps.MissingDependency` when the optional package behind ``name``'s
    prefix (``timm:`` needs timm) is not installed, without importing it: a check to make before
    anything is written. Native names and unknown prefixes pass (:func:`create_model` reports
    those)."""
    prefix, sep, _ = name.partition(":")
    if sep and prefix in _PREFIXES:
        check_available(_PREFIXES[prefix].requires, needed_by=f"backbone {name!r}")


def create_model(
    name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: object
) -> Backbone:
    """The backbone registered as ``name`` (``"preact_resnet18"``, ``"tv:resnet18"``, ...) with
    ``num_classes`` logits for ``in_channels``-channel images; ``kwargs`` are the family's options
    (``width`` for ``small_cnn``, ``depth``/``widen_factor`` for ``wrn34_10``). Raises ValueError
    for an unknown name (the message lists the valid ones) or bad sizes."""
    positive_int("num_classes", num_classes)
    positive_int("in_channels", in_channels)
    prefix, sep, rest = name.partition(":")
    if sep:
        if prefix not in _PREFIXES:
            raise ValueError(
                f"unknown model prefix {prefix!r} in {name!r}; valid prefixes: "
                + ", ".join(f"'{p}:' ({_PREFIXES[p].hint})" for p in sorted(_PREFIXES))
            )
        model = _PREFIXES[prefix].factory(
            rest, num_classes=num_classes, in_channels=in_channels, **kwargs
        )
    else:
        if name not in _MODELS:
            prefixes = ", ".join(f"'{p}:<name>' ({_PREFIXES[p].hint})" for p in sorted(_PREFIXES))
            message = unknown_name_message("model", name, list(_MODELS))
            raise ValueError(f"{message}; or a prefixed name: {prefixes}")
        model = _MODELS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    if not isinstance(model, Backbone):
        raise TypeError(f"factory for {name!r} returned {type(model).__name__}, not a Backbone")
    return model


def unknown_name_message(kind: str, name: str, valid: list[str], listing: str | None = None) -> str:
    """Error text for an unknown ``name`` among ``valid``: close matches, then every valid name,
    or ``listing`` (e.g. "see timm.list_models()") in place of a list too long to print."""
    close = difflib.get_close_matches(name, valid, n=3)
    suggestion = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    names = listing or f"Valid names: {', '.join(sorted(valid))}"
    return f"unknown {kind} {name!r}.{suggestion} {names}"
