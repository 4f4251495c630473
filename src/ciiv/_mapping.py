"""Strict mapping -> dataclass parsing: the one place that reads settings from YAML, JSON or
keyword arguments (training configs, suites, dataset options, audit settings, attack arguments).

Unknown keys raise a :class:`ConfigError` that names them, suggests a close match and lists the
valid ones; each value is checked against its field's annotation (nested dataclasses, lists,
tuples, literals, and fractions such as ``"8/255"`` for floats); the dataclass's own
``__post_init__`` checks ranges, and its errors (written ``"field: problem"``) come back prefixed
with where the mapping sits (``method.pgd.eps: ...``). Only the standard library is imported.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Collection, Mapping
from fractions import Fraction
from typing import Any, Literal

__all__ = ["ConfigError", "build_dataclass", "check_keys", "parse_fraction"]


class ConfigError(ValueError):
    """Bad settings; the message names the offending key and what is valid."""


def check_keys(
    values: Collection[str],
    valid: Collection[str],
    what: str = "key",
    prefix: str = "",
    owner: str = "",
) -> None:
    """Raise a :class:`ConfigError` for the keys of ``values`` that are not in ``valid``.

    The message reads ``[<owner>: ]unknown <what> '<prefix><key>'; did you mean ...? (valid:
    ...)``, e.g. ``dataset 'shapes': unknown option 'colour' (valid: n_train, ...)``.
    """
    unknown = [str(key) for key in values if key not in valid]
    if not unknown:
        return
    names = ", ".join(f"'{prefix}{key}'" for key in unknown)
    close = difflib.get_close_matches(unknown[0], [str(v) for v in valid], n=1)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close and len(unknown) == 1 else ""
    listed = ", ".join(prefix + str(v) for v in valid) or "none"
    owner = f"{owner}: " if owner else ""
    raise ConfigError(f"{owner}unknown {what} {names}{hint} (valid: {listed})")


def parse_fraction(value: str, key: str) -> float:
    """'8/255' -> 0.0313..., '0.5' -> 0.5; a ConfigError naming ``key`` otherwise."""
    try:
        return float(Fraction(value.strip()))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(
            f"{key}: expected a number or a fraction like 8/255, got {value!r}"
        ) from None


# Types taken only as they are (no conversion), and what the error says was expected.
_EXPECTED: dict[type, str] = {bool: "true or false", int: "an integer", str: "a string"}


def _exact(value: Any, annotation: Any) -> bool:
    """Whether ``value`` already is of type ``annotation`` (no conversion needed)."""
    if typing.get_origin(annotation) is Literal:
        return value in typing.get_args(annotation)
    if annotation is float:
        return isinstance(value, float)
    if annotation in (bool, int, str):
        return type(value) is annotation
    return dataclasses.is_dataclass(annotation) and isinstance(value, annotation)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a type annotation; return it converted (ints to floats, etc.)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        # An option that takes the value as it is wins ("16/255" stays a string in float | str).
        for option in options:
            if _exact(value, option):
                return value
        errors = []
        for option in options:
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] + (" (or null)" if type(None) in args else ""))
    if annotation is not float and _exact(value, annotation):  # floats: the finiteness check
        return value
    if origin is Literal:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            items = [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        elif len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        else:
            pairs = enumerate(zip(value, args, strict=True))
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in pairs]
        return items if origin is list else tuple(items)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}: expected a mapping with string keys, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return build_dataclass(annotation, value, key + ".")
    if annotation in _EXPECTED:
        raise ConfigError(f"{key}: expected {_EXPECTED[annotation]}, got {value!r}")
    if annotation is float:
        if isinstance(value, str):
            value = parse_fraction(value, key)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if annotation is Any:
        return value
    raise TypeError(f"{key}: unsupported annotation {annotation!r}")  # a bug in the dataclass


def build_dataclass(
    cls: type, values: Any, prefix: str = "", what: str = "config key", owner: str = ""
) -> Any:
    """``cls(**values)`` for a dataclass, strictly (see the module doc).

    A dataclass with a ``from_mapping(values, prefix)`` classmethod parses itself (a training
    method's options depend on its name). ``prefix`` names the keys in errors (``"method."``);
    ``what`` and ``owner`` word the unknown-key error (see :func:`check_keys`).

    Raises:
        ConfigError: not a mapping, an unknown or missing key, a value of the wrong type, or a
            value the dataclass's ``__post_init__`` rejects.
    """
    where = owner or prefix.rstrip(".") or cls.__name__
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    from_mapping = getattr(cls, "from_mapping", None)
    if from_mapping is not None:
        return from_mapping(values, prefix)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    check_keys(values, [f.name for f in fields], what, prefix, owner)
    missing = [
        f.name
        for f in fields
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing {what} {', '.join(prefix + m for m in missing)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(v, hints[name], prefix + name) for name, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{prefix}{exc}") from None
