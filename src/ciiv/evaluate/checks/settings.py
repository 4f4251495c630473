"""The audit's settings: one typed dataclass, a full preset and a quick one."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ciiv._checks import positive_int
from ciiv._mapping import build_dataclass

__all__ = ["AuditSettings", "audit_settings"]

# Overrides of the defaults that make the audit cheap enough to run inside every `ciiv eval`.
QUICK: dict[str, Any] = {
    "steps": 20,
    "step_grid": (5, 20),
    "restarts": 2,
    "eot_grid": (1, 4, 16),
    "max_eot": 8,
    "grad_examples": 16,
    "draws": 3,
    "eps_multipliers": (1.0,),
    "square_queries": 200,
    "spsa_steps": 10,
    "random_search_draws": 20,
}


@dataclass(frozen=True)
class AuditSettings:
    """Every knob of the audit: docs/evaluation.md ("Settings, presets and cost") gives the
    meaning and presets of each. Budgets are in [0, 1] pixel units; accuracies compared between
    attacks are mean per-draw accuracies over the same examples, with the paired standard error of
    their difference. Besides that table:

    Attributes:
        eps, norm: the threat model ("Linf" or "L2").
        vanishing_atol: a per-example gradient whose largest entry is at most this is "zero".
        bpda_cosine_warn: a true and a BPDA gradient less aligned than this are reported.
        spsa_samples: SPSA's samples per step; noise_sigma: std of the noise attacks.
        batch_size: most images per model call.
        seed: seeds the audit's draws (attacks, random starts, the model's randomness).
        quick: the cheap preset (the table's "quick" column).
    """

    eps: float
    norm: str = "Linf"
    steps: int = 50
    step_grid: tuple[int, ...] = (10, 50, 200)
    restarts: int = 3
    eot_grid: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    cosine_threshold: float = 0.8
    max_eot: int = 32
    grad_examples: int = 32
    draws: int = 5
    eps_multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    unbounded_max_accuracy: float = 0.05
    z: float = 2.0
    zero_grad_max_fraction: float = 0.1
    vanishing_atol: float = 1e-8
    bpda_cosine_warn: float = 0.5
    square_queries: int = 1000
    spsa_steps: int = 20
    spsa_samples: int = 16
    random_search_draws: int = 100
    noise_sigma: float = 0.1
    batch_size: int = 256
    seed: int = 0
    quick: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"eps must be a positive budget, got {self.eps!r}")
        if self.norm not in ("Linf", "L2"):
            raise ValueError(f"unknown norm {self.norm!r}; valid: Linf, L2")
        for name in ("step_grid", "eot_grid", "eps_multipliers"):
            values = tuple(getattr(self, name))
            if not values or list(values) != sorted(set(values)) or values[0] <= 0:
                raise ValueError(f"{name} must be a non-empty ascending tuple of positive values")
            object.__setattr__(self, name, values)
        for f in dataclasses.fields(self):
            if f.type == "int" and f.name != "seed":  # every count is positive
                positive_int(f.name, getattr(self, f.name))
        if not 0 < self.cosine_threshold < 1:
            raise ValueError(f"cosine_threshold must be in (0, 1), got {self.cosine_threshold}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def audit_settings(eps: float, norm: str = "Linf", quick: bool = False, **overrides: Any):
    """Settings for budget ``eps`` and ``norm``: the full preset, or the quick one, then
    ``overrides`` (any :class:`AuditSettings` field). Unknown names raise a ValueError."""
    values = {**(QUICK if quick else {}), **overrides, "eps": eps, "norm": norm, "quick": quick}
    return build_dataclass(AuditSettings, values, what="audit setting")
