"""Robustness evaluation: suites, protocols, worst-case bookkeeping and the audit.

    from ciiv.evaluate import evaluate_robustness
    result = evaluate_robustness(model, x, y, suite="standard-linf", protocol="full")
    result.robust_accuracy, result.per_attack, result.to_dict()

Names are imported lazily, so importing a submodule (``ciiv.evaluate.checks``...) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "evaluate_robustness": "api",
    "EvaluationResult": "api",
    "DEFAULT_DRAWS": "settings",
    "EvalSettings": "settings",
    "detect_traits": "api",
    "eval_dir_name": "selection",
    "evaluation_examples": "selection",
    "select_examples": "selection",
    "DEFAULT_EOT": "suites",
    "AttackEntry": "suites",
    "ModelTraits": "suites",
    "ResolvedAttack": "suites",
    "Suite": "suites",
    "Sweep": "suites",
    "get_suite": "suites",
    "list_suites": "suites",
    "register_suite": "suites",
    "resolve_suite": "suites",
    "Protocol": "protocols",
    "PROTOCOLS": "protocols",
    "get_protocol": "protocols",
    "worst_case_stats": "summary",
    "audit": "audit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ciiv.evaluate' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
