"""The audit's checks (docs/evaluation.md, "The audit checks"): one module per check, registered
by name with the order it runs in. ``ciiv.evaluate.audit`` runs them."""

# Importing the check modules registers them.
from . import (  # noqa: F401
    blackbox,
    bookkeeping,
    fixed,
    gradients,
    iterations,
    outputs,
    randomness,
    sampler_removed,
    strength,
)
from .base import (
    STATUSES,
    CheckResult,
    Status,
    check_summary,
    get_check,
    list_checks,
    register_check,
)
from .context import AttackRun, AuditContext, Comparison, compare, fixed_randomness
from .settings import AuditSettings, audit_settings

__all__ = [
    "STATUSES",
    "AttackRun",
    "AuditContext",
    "AuditSettings",
    "CheckResult",
    "Comparison",
    "Status",
    "audit_settings",
    "check_summary",
    "compare",
    "fixed_randomness",
    "get_check",
    "list_checks",
    "register_check",
]
