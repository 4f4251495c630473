"""Optional dependencies: one check, one error that says which extra to install.

    from ciiv.deps import require
    timm = require("timm")        # MissingDependency: ... pip install "ciiv[timm]"

Extras come from pyproject.toml's ``[project.optional-dependencies]``. Library code checks before
it writes anything (a run directory, an evaluation's files), so that a missing package never
leaves half a run behind; the CLI prints :class:`MissingDependency` as one line (exit code 2).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from types import ModuleType

__all__ = ["EXTRAS", "MissingDependency", "check_available", "require"]

# Importable module -> the ciiv extra that installs it.
EXTRAS: dict[str, str] = {"timm": "timm", "pyautoattack": "autoattack"}


class MissingDependency(ImportError):
    """An optional package is not installed. ``module``: what is missing; ``extra``: the ciiv
    extra that installs it; ``needed_by``: what asked for it (for the message)."""

    def __init__(self, module: str, extra: str | None = None, needed_by: str | None = None) -> None:
        self.module, self.extra, self.needed_by = module, extra or EXTRAS.get(module), needed_by
        what = f"{needed_by} needs" if needed_by else "this needs"
        install = f'pip install "ciiv[{self.extra}]"' if self.extra else f"pip install {module}"
        super().__init__(
            f"{what} the optional package {module!r}, which is not installed: {install}",
            name=module,
        )


def _importable(module: str) -> bool:
    # sys.modules[name] = None (how tests and some environments block a package) raises here.
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str | None = None, needed_by: str | None = None) -> ModuleType:
    """Import ``module`` and return it; otherwise :class:`MissingDependency` naming the ciiv
    ``extra`` that installs it (default: :data:`EXTRAS`) and what needs it (``needed_by``, e.g.
    ``"backbone 'timm:resnet18'"``)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if _importable(module):
            raise  # installed, but importing it failed: the original error says why
        raise MissingDependency(module, extra, needed_by) from err


def check_available(modules: Iterable[str], needed_by: str | None = None) -> None:
    """Raise :class:`MissingDependency` for the first of ``modules`` that cannot be imported,
    without importing any (a cheap check before a long run)."""
    for module in modules:
        if not _importable(module):
            raise MissingDependency(module, needed_by=needed_by)
