"""On-disk caches under the cache root: extracted archives and decoded image tensors.

Both are written atomically (to a temporary name in the same folder, then renamed), so an
interrupted run leaves either the complete entry or none -- never a half-written one that a later
run would trust. A leftover temporary (a hidden ``.name-*`` entry) is never read and may be deleted.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ciiv._io import atomic_write
from ciiv.data.paths import cache_root

__all__ = [
    "ARCHIVE_SUFFIXES",
    "cached_payload",
    "extract_archive",
    "fingerprint",
    "is_archive",
]

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# What a file that is not a (complete) tar archive raises while it is opened or extracted.
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def is_archive(path: Path) -> bool:
    """True for a file named ``*.tar.gz``, ``*.tgz`` or ``*.tar``."""
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _suffix(path: Path) -> str:
    return next((s for s in ARCHIVE_SUFFIXES if path.name.lower().endswith(s)), "")


def extract_archive(archive: Path) -> Path:
    """Extract ``archive`` once into ``<cache root>/extracted/<name>-<hash>``; return that folder.

    The hash covers the archive's absolute path, size and modification time, so a changed archive
    is extracted afresh. Concurrent callers (e.g. DDP ranks) may both extract; the first rename
    wins and the others discard their copy. A file that is not a (complete) tar archive raises a
    ValueError and leaves nothing in the cache.
    """
    if not hasattr(tarfile, "data_filter"):
        raise RuntimeError(
            "safe extraction needs Python >= 3.10.12 or >= 3.11.4 (tarfile filters); extract "
            f"{archive} yourself and pass the extracted folder as --data-dir"
        )
    status = archive.stat()
    key = hashlib.sha1(
        f"{archive.resolve()}|{status.st_size}|{status.st_mtime_ns}".encode()
    ).hexdigest()[:12]
    stem = archive.name[: len(archive.name) - len(_suffix(archive))]
    target = cache_root() / "extracted" / f"{stem}-{key}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    logger.info("extracting %s to %s", archive, target)
    try:
        with tarfile.open(archive) as tar:
            # The "data" filter refuses absolute paths, links out of the tree and special files.
            tar.extractall(temporary, filter="data")
    except BaseException as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(exc, _ARCHIVE_ERRORS):
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ValueError(
                f"cannot extract {archive}: it is truncated or not a {_suffix(archive)} archive "
                f"({reason}); pass a complete .tar.gz, .tgz or .tar, or the extracted folder"
            ) from None
        raise
    try:
        temporary.rename(target)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)
        if not target.is_dir():
            raise
    return target


def fingerprint(root: Path, files: Sequence[Path], *settings: Any) -> str:
    """Short hash of ``settings`` and of each file's path (relative to ``root``), size and mtime.

    ``files`` must lie under ``root``.
    """
    digest = hashlib.sha1(repr((str(root.resolve()), settings)).encode())
    prefix = len(str(root))
    for path in map(str, files):
        status = os.stat(path)
        digest.update(f"{path[prefix:]}|{status.st_size}|{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def cached_payload(path: Path, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The payload (tensors, numbers, strings) saved at ``path``, else ``build()``'s, saved there
    atomically. An unreadable file is rebuilt, and a cache that cannot be written (read-only home,
    full disk) only costs the next load its speed: both are logged, not raised."""
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt or foreign file: rebuild rather than fail
            logger.warning("ignoring unreadable cache file %s (%s)", path, exc)
        else:
            logger.info("using decoded cache %s", path)
            return payload
    payload = build()
    try:
        atomic_write(path, lambda f: torch.save(payload, f), binary=True)
    except OSError as exc:
        logger.warning("cannot write cache %s (%s)", path, exc)
    return payload
