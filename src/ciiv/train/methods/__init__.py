"""Training methods: a registry of objectives with one signature (see :mod:`.base`).

Importing this package registers vanilla, mixup, rs, bpfc, pgd_at, trades, ciiv, ciiv_at and
ciiv_mixup.
"""

from . import adversarial, ciiv, standard
from .base import (
    Objective,
    StepContext,
    StepOutput,
    create_method,
    get_method,
    list_methods,
    register_method,
)

__all__ = [
    "Objective",
    "StepContext",
    "StepOutput",
    "adversarial",
    "ciiv",
    "create_method",
    "get_method",
    "list_methods",
    "register_method",
    "standard",
]
