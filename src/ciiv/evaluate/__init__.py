"""Robustness evaluation: suites, protocols, worst-case bookkeeping and the audit.

    from ciiv.evaluate import evaluate_robustness
    result = evaluate_robustness(model, x, y, suite="standard-linf", protocol="full")
    result.robust_accuracy, result.per_attack, result.to_dict()

Names are imported lazily, so importing a submodule (``ciiv.evaluate.checks``...) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names by the submodule that defines them.
_MODULES = {
    "api": "evaluate_robustness EvaluationResult detect_traits",
    "settings": "DEFAULT_DRAWS EvalSettings",
    "selection": "eval_dir_name evaluation_examples select_examples",
    "suites": "DEFAULT_EOT AttackEntry ModelTraits ResolvedAttack Suite Sweep get_suite "
    "list_suites register_suite resolve_suite",
    "protocols": "Protocol PROTOCOLS get_protocol",
    "summary": "worst_case_stats",
    "audit": "audit",
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names.split()}
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
