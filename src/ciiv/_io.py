"""Atomic file writes, the one implementation behind every result, record and checkpoint file.

A file is written to a hidden temporary in the same folder (``.<name>.<unique>.tmp``), flushed to
disk and renamed over the target with ``os.replace``: a reader sees the old file or the new one,
never half of one, and a crash leaves at most a temporary (removed on errors we see; a killed
process's leftovers match :data:`TMP_SUFFIX` and are never read).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

__all__ = ["TMP_SUFFIX", "atomic_write", "write_json_atomic", "write_jsonl_atomic"]

TMP_SUFFIX = ".tmp"


def atomic_write(
    path: str | Path, write: Callable[[IO[Any]], object], *, binary: bool = False
) -> Path:
    """Create or replace ``path`` with what ``write(f)`` writes to an open file (text in UTF-8,
    or bytes with ``binary=True``); the parent folders are created. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name (two writers never share a temporary) opened with open(): the file gets the
    # umask's permissions, where tempfile.mkstemp would make it private to the user.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
    try:
        with open(tmp, "xb" if binary else "x", encoding=None if binary else "utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON (and a final newline) at ``path``, atomically."""
    return atomic_write(path, lambda f: f.write(json.dumps(data, indent=2) + "\n"))


def write_jsonl_atomic(path: str | Path, rows: Iterable[Any]) -> Path:
    """One compact JSON value per line at ``path``, atomically."""
    return atomic_write(path, lambda f: f.writelines(json.dumps(row) + "\n" for row in rows))
