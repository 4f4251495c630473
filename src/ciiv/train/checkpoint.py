"""Checkpoints: written atomically, read safely (``weights_only=True``), checked for origin. A
checkpoint holds only tensors and plain Python values, so loading never unpickles objects.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ciiv._io import TMP_SUFFIX, atomic_write
from ciiv.versions import software_versions

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "remove_temporaries",
    "restore_rng_state",
    "save_checkpoint",
]

FORMAT = "ciiv-train-checkpoint"
# 2: mid-epoch checkpoints ("step" > 0 and the running epoch's state); version 1 files still load.
FORMAT_VERSION = 2
_REQUIRED = ("model", "config", "method", "dataset", "epoch")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or was not written by ``ciiv train``."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus format tags) to ``path`` atomically (a crash never leaves a
    half-written file)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": software_versions(),
        **state,
    }
    atomic_write(path, lambda f: torch.save(payload, f), binary=True)


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete what a process killed inside :func:`save_checkpoint` left in ``folder`` (hidden
    ``.<name>.pt.*.tmp`` files, never read); returns the deleted paths."""
    stale = sorted(Path(folder).glob(f".*.pt.*{TMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _reason(exc: Exception) -> str:
    """torch's reason for refusing a file, without its advice to load it unsafely
    (``weights_only=False`` or allow-listing globals): the first sentence of the cause."""
    text = str(exc).split("WeightsUnpickler error:")[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0].split(". ")[0].rstrip(".") if lines else ""
    if not first or "weights_only" in first:
        return type(exc).__name__
    return f"{type(exc).__name__}: {first}"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; CheckpointError (saying which) for a
    missing, foreign, unsafe, truncated or newer-format file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is corrupt, truncated or not a checkpoint written "
            f"by `ciiv train` ({_reason(exc)}); it is never loaded unsafely. Copy it again from "
            "where the run was written, use the run's other checkpoint (best or last), or "
            "train again with `ciiv train`"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a torch file but not a `ciiv train` checkpoint (no format tag {FORMAT!r}); "
            "load plain state dicts with model.load_state_dict instead"
        )
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format_version']}, newer than this ciiv "
            f"({FORMAT_VERSION}); upgrade ciiv"
        )
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {', '.join(missing)}")
    return state


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and plain values."""
    version, internal, gauss = random.getstate()
    # NumPy's legacy global generator is the one third-party code draws from.
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
         npy["cached"])
    )  # fmt: skip
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
