"""The matplotlib set-up every plot of ciiv shares: the Agg backend (PNG files, no display
needed), imported only when a plot is made, and a figure laid out, saved and closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["pyplot", "save_png"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save the figure ``fig`` as the PNG ``path`` (returned) and close it; one without a layout
    engine of its own (such as ``layout="constrained"``) is laid out tight first."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return Path(path)
