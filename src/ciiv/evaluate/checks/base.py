"""What a check returns, and the registry that runs the checks in their documented order.

A check is a function ``check(ctx: AuditContext) -> CheckResult``: it runs what it needs through
the context (which caches attack runs and measurements for all checks) and reports one status
with its evidence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .context import AuditContext

__all__ = [
    "STATUSES",
    "CheckFn",
    "CheckResult",
    "Status",
    "get_check",
    "jsonable",
    "list_checks",
    "register_check",
    "sentence",
]

Status = Literal["pass", "warn", "fail", "skip"]
STATUSES: tuple[str, ...] = ("pass", "warn", "fail", "skip")


def jsonable(value: Any) -> Any:
    """``value`` made JSON-safe: tensors to (lists of) numbers, tuples to lists, non-finite
    floats to None (JSON has no inf/NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # tensors and numpy values
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def sentence(text: str) -> str:
    """``text`` with its first letter upper-cased (unlike str.capitalize, the rest is kept)."""
    return text[:1].upper() + text[1:]


@dataclass
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: the check's registry name.
        status: "pass", "warn", "fail" or "skip".
        detail: one or two sentences: what was found and, unless it passed, what to run next.
        numbers: the evidence (accuracies, cosines, fractions, ...), JSON-serialisable.
        elapsed_s: wall-clock seconds the check took (shared cached attacks count once, in the
            check that ran them first).
    """

    name: str
    status: Status
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; valid: {', '.join(STATUSES)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "numbers": jsonable(self.numbers),
            "elapsed_s": round(self.elapsed_s, 3),
        }


CheckFn = Callable[["AuditContext"], CheckResult]


@dataclass(frozen=True)
class _Entry:
    order: int
    fn: CheckFn
    summary: str


_CHECKS: dict[str, _Entry] = {}


def register_check(name: str, order: int, summary: str) -> Callable[[CheckFn], CheckFn]:
    """Decorator registering ``fn(ctx) -> CheckResult`` as check ``name``, run in ascending
    ``order``: checks that measure what later ones reuse (randomness: the EOT of every attack)
    first, bookkeeping last."""

    def decorator(fn: CheckFn) -> CheckFn:
        if name in _CHECKS:
            raise ValueError(f"check {name!r} is already registered")
        _CHECKS[name] = _Entry(order=order, fn=fn, summary=summary)
        return fn

    return decorator


def list_checks() -> list[str]:
    """Check names in the order they run."""
    return sorted(_CHECKS, key=lambda n: _CHECKS[n].order)


def check_summary(name: str) -> str:
    """One line saying what check ``name`` measures."""
    get_check(name)
    return _CHECKS[name].summary


def get_check(name: str) -> CheckFn:
    """The function of check ``name``; ValueError listing the valid names otherwise."""
    if name not in _CHECKS:
        raise ValueError(f"unknown audit check {name!r}; valid: {', '.join(list_checks())}")
    return _CHECKS[name].fn
