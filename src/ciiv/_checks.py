"""The one check of pixel batches, labels, counts and config bounds at ciiv's edges (configs,
models, attacks, evaluation, audit, certification): a refusal names the argument, what it got and
what is valid."""

from __future__ import annotations

import numbers
import operator
from collections.abc import Collection
from typing import Any

from torch import Tensor

__all__ = ["check_bounds", "check_choice", "check_images", "check_labels", "positive_int"]


def _describe(t: object) -> str:
    return f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__


def check_images(
    x: Tensor,
    *,
    name: str = "x",
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    nonempty: bool = False,
    image: bool = True,
) -> None:
    """Raise a ValueError (naming the argument ``name``) unless ``x`` is a float batch of finite
    pixels in [0, 1]: images [B, C, H, W] (``image=False``: any batch [B, ...] of 2+ dims), with
    the C and (H, W) a model expects (``channels``, ``size``; None: any), B > 0 if ``nonempty``.
    The range test is one fused reduction (NaN fails both comparisons): a single host sync."""
    if not isinstance(x, Tensor) or x.dim() < 2 or (image and x.dim() != 4):
        what = "images [B, C, H, W]" if image else "a batch [B, ...]"
        raise ValueError(f"{name} must be {what} of float pixels in [0, 1], got {_describe(x)}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} has dtype {x.dtype}; pass float pixels in [0, 1] (divide uint8 by 255)"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"model expects {channels} channel(s), got {x.shape[1]} (shape {tuple(x.shape)})"
        )
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        raise ValueError(
            f"model expects {size[0]}x{size[1]} images, got {x.shape[-2]}x{x.shape[-1]}"
        )
    if nonempty and x.shape[0] == 0:
        raise ValueError(f"{name} holds no examples")
    if not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError(
            f"{name}: pixels must be finite and in [0, 1] (got NaN/inf or values outside); "
            "pass unnormalised images scaled to [0, 1] (models normalise internally)"
        )


def check_labels(y: Tensor, n: int, *, name: str = "y") -> None:
    """Raise a ValueError unless ``y`` is an integer tensor of shape [n] (class indices)."""
    if not isinstance(y, Tensor) or y.shape != (n,) or y.is_floating_point():
        raise ValueError(f"{name} must be integer class indices of shape [{n}], got {_describe(y)}")


def positive_int(name: str, value: object) -> int:
    """``value`` as an int; a ValueError naming the argument unless it is an integer >= 1.

    A bool (``num_classes=True``) and a float (``steps=2.0``) are refused rather than converted:
    both are bugs at the call site. NumPy integers are integers.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


_COMPARE = {">": operator.gt, ">=": operator.ge}


def check_bounds(options: Any, **bounds: str) -> None:
    """For an ``__post_init__``: a ValueError "key: must be <bound>, got <value>" naming the
    first field of ``options`` out of its bound. A bound is "> x" or ">= x"; "... or null" also
    lets None pass; "increasing epochs >= 0" wants a strictly increasing list of such values.
    E.g. ``check_bounds(self, lr="> 0", max_val=">= 1 or null")``."""
    for key, bound in bounds.items():
        value = getattr(options, key)
        if value is None and bound.endswith(" or null"):
            continue
        *increasing, compare, limit = bound.removesuffix(" or null").split()
        values = value if increasing else [value]
        pairs = zip(values[:-1], values[1:], strict=True)
        within = all(v is not None and _COMPARE[compare](v, float(limit)) for v in values)
        if not within or any(a >= b for a, b in pairs):
            raise ValueError(f"{key}: must be {bound}, got {value}")


def check_choice(what: str, value: object, valid: Collection, *, optional: bool = False) -> None:
    """A ValueError ``unknown <what> <value>; valid: ...`` unless ``value`` is one of ``valid``
    (or None, with ``optional``)."""
    if not (optional and value is None) and value not in valid:
        listed = ", ".join(["None"] * optional + list(valid))
        raise ValueError(f"unknown {what} {value!r}; valid: {listed}")
