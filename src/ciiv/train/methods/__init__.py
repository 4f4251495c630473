"""Training methods: a registry of objectives with one signature (see :mod:`.base`).

Importing this package registers vanilla, mixup, rs, bpfc, pgd_at, trades, ciiv, ciiv_at and
ciiv_mixup. Each objective class carries its ``Options`` dataclass; :class:`MethodConfig` is a
method's name with its options, the ``method`` section of a training config.
"""

from . import adversarial, ciiv, standard
from .adversarial import PGDOptions
from .base import (
    MethodConfig,
    NoOptions,
    Objective,
    StepContext,
    StepOutput,
    create_method,
    get_method,
    list_methods,
    option_names,
    register_method,
    switch_method,
)

__all__ = [
    "MethodConfig",
    "NoOptions",
    "Objective",
    "PGDOptions",
    "StepContext",
    "StepOutput",
    "adversarial",
    "ciiv",
    "create_method",
    "get_method",
    "list_methods",
    "option_names",
    "register_method",
    "standard",
    "switch_method",
]
