"""Where datasets are looked for and where derived files are cached.

* Data root (torchvision datasets): the ``data_dir`` argument, else the ``CIIV_DATA`` environment
  variable, else ``~/.cache/ciiv/data``.
* Cache root (extracted archives, decoded image tensors): the ``CIIV_CACHE`` environment variable,
  else ``~/.cache/ciiv``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DatasetNotFoundError", "cache_root", "resolve_data_dir"]

DATA_ENV = "CIIV_DATA"
CACHE_ENV = "CIIV_CACHE"


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where they were looked for (and could not be fetched)."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """The data root: ``data_dir``, else ``$CIIV_DATA``, else ``~/.cache/ciiv/data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ciiv" / "data"


def cache_root() -> Path:
    """The cache root: ``$CIIV_CACHE``, else ``~/.cache/ciiv``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ciiv"
