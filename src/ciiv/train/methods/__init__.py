"""Training methods: a registry of objectives with one signature (see :mod:`.base`); importing
this package registers the built-in ones (vanilla, mixup, rs, bpfc, pgd_at, trades, ciiv, ...)."""

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
