"""The matplotlib set-up every plot of ciiv shares: the Agg backend (PNG files, no display
needed) and a figure laid out, saved and closed. matplotlib is imported only when a plot is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import matplotlib.figure

__all__ = ["pyplot", "save_png"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: matplotlib.figure.Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` as the PNG ``path`` (returned) and close it. A figure without a layout engine
    of its own (``layout="constrained"``) is laid out tight first."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
