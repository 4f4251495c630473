"""Human-readable numbers for logs and progress displays: durations and rates."""

from __future__ import annotations

import math

__all__ = ["format_duration", "format_rate"]


def format_duration(seconds: float) -> str:
    """``seconds`` as ``45s``, ``3m10s``, ``2h05m`` or ``3d04h`` (rounded down to the unit shown).

    Negative values count as 0; NaN and infinity give ``"?"``.
    """
    if not math.isfinite(seconds):
        return "?"
    total = max(0, int(seconds))
    for unit, big, sub, small in ((86400, "d", 3600, "h"), (3600, "h", 60, "m"), (60, "m", 1, "s")):
        if total >= unit:
            return f"{total // unit}{big}{total % unit // sub:02d}{small}"
    return f"{total}s"


def format_rate(value: float) -> str:
    """A throughput (images/s, steps/s...) with 3 significant digits, never in exponent form:
    ``12345``, ``512``, ``12.3``, ``1.23``, ``0.0421``. A slow backbone's 0.4 images/s must not
    print as ``0``."""
    if not math.isfinite(value):
        return "?"
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    digits = 2 - math.floor(math.log10(abs(value)))  # decimals that leave 3 significant digits
    return f"{value:.{digits}f}"
