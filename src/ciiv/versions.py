"""The software (and device) that produced a result, recorded beside it for reproducibility."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

import ciiv

__all__ = ["software_versions"]


def software_versions(device: torch.device | None = None) -> dict[str, str]:
    """Versions of ciiv, torch, numpy, Python (and pyautoattack when installed), the platform and,
    when given, the device with its name on CUDA."""
    out = {
        "ciiv": ciiv.__version__,
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        out["pyautoattack"] = version("pyautoattack")
    except PackageNotFoundError:  # AutoAttack entries say so when they run
        pass
    if device is not None:
        device = torch.device(device)
        out["device"] = str(device)
        if device.type == "cuda":
            out["device_name"] = torch.cuda.get_device_name(device)
    return out
