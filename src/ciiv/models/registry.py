"""Backbone contract and the name -> factory registry.

A backbone maps images to penultimate features phi (SPEC section 3) and has a single linear
head W on top. Native families register a factory under a plain name
(``create_model("preact_resnet18")``); external model zoos register a *prefix*
(``create_model("tv:resnet18")``, ``create_model("timm:resnet18")``) whose factory receives the
part after the colon.

The built-in families register themselves when :mod:`ciiv.models` is imported (its last line
imports :mod:`ciiv.models.backbones`), which Python does before this module: every built-in name
and prefix is registered by the time :func:`create_model` can be called.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

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
    """Feature extractor ``features`` followed by one linear ``head``.

    Args:
        features: module mapping images [N, C, H, W] to features [N, num_features]
            (global pooling and flattening included).
        num_features: D, the feature dimension.
        num_classes: number of logits of ``head``.

    Subclasses may override :meth:`forward_features`; :meth:`forward_head` is always ``head``.
    """

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


ModelFactory = Callable[..., Backbone]
"""``fn(num_classes: int, in_channels: int, **kw) -> Backbone``."""

PrefixFactory = Callable[..., Backbone]
"""``fn(name: str, num_classes: int, in_channels: int, **kw) -> Backbone``."""


@dataclass(frozen=True)
class _Prefix:
    factory: PrefixFactory
    names: Callable[[], list[str]]
    hint: str
    requires: tuple[str, ...] = ()


_MODELS: dict[str, ModelFactory] = {}
_PREFIXES: dict[str, _Prefix] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``fn(num_classes, in_channels, **kw) -> Backbone`` under ``name``."""
    if not name or ":" in name:
        raise ValueError(f"model name {name!r} must be non-empty and contain no ':' (prefix mark)")

    def decorator(fn: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return decorator


def register_prefix(
    prefix: str, names: Callable[[], list[str]], hint: str, requires: tuple[str, ...] = ()
) -> Callable[[PrefixFactory], PrefixFactory]:
    """Decorator registering ``fn(name, num_classes, in_channels, **kw)`` for ``"<prefix>:<name>"``.

    ``names()`` lists the valid names after the prefix (used by :func:`list_models` and error
    messages); ``hint`` is a short description shown in error messages; ``requires`` names the
    optional packages the zoo needs (:func:`check_model_dependencies`).
    """
    if not prefix or ":" in prefix:
        raise ValueError(f"prefix {prefix!r} must be non-empty and contain no ':'")

    def decorator(fn: PrefixFactory) -> PrefixFactory:
        if prefix in _PREFIXES:
            raise ValueError(f"prefix {prefix!r} is already registered")
        _PREFIXES[prefix] = _Prefix(factory=fn, names=names, hint=hint, requires=tuple(requires))
        return fn

    return decorator


def list_models(include_prefixes: bool = False) -> list[str]:
    """Sorted names accepted by :func:`create_model`.

    By default only the native backbones. With ``include_prefixes=True`` also every
    ``"<prefix>:<name>"`` that an external zoo offers (``tv:`` for torchvision, ``timm:`` for timm
    when it is installed); this can be a long list.
    """
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
    """Build the backbone registered as ``name`` (a native name or ``"<prefix>:<name>"``).

    Args:
        name: e.g. ``"preact_resnet18"``, ``"tv:resnet18"``, ``"timm:resnet18"``.
        num_classes: number of logits (>= 1).
        in_channels: image channels (1 for MNIST, 3 for RGB).
        **kwargs: family-specific options, e.g. ``width`` for ``small_cnn``,
            ``depth``/``widen_factor`` for ``wrn34_10``.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or bad sizes.
    """
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
            raise ValueError(_unknown_model_message(name))
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


def _unknown_model_message(name: str) -> str:
    prefixes = ", ".join(f"'{p}:<name>' ({_PREFIXES[p].hint})" for p in sorted(_PREFIXES))
    return unknown_name_message("model", name, list(_MODELS)) + f"; or a prefixed name: {prefixes}"
