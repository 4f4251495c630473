"""The obfuscated-gradient audit: the published checklists (Athalye, Carlini and Wagner 2018;
Carlini et al. 2019; AutoAttack's sanity checks) run on any model, automatically.

Each check (:mod:`ciiv.evaluate.checks`, one module each) reports pass / warn / fail / skip with
the numbers behind it and, when it does not pass, what to run next; docs/evaluation.md ("The
audit checks") explains every one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ciiv._checks import check_images, check_labels
from ciiv._io import write_json_atomic
from ciiv.attacks import default_max_batch, parse_eps, preserve_mode
from ciiv.attacks.threat import canonical_norm
from ciiv.versions import software_versions

from .checks import (
    STATUSES,
    AuditContext,
    CheckResult,
    audit_settings,
    check_summary,
    get_check,
    list_checks,
)
from .checks.base import jsonable
from .engine import derive_seed, seeded

__all__ = [
    "AuditResult",
    "audit",
    "audit_verdict",
    "check_events",
    "describe_checks",
    "list_checks",
]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, CheckResult | None], None]
"""``progress(check_name, result)``: called with None before a check runs, then with its result."""


def audit_verdict(audit: Mapping[str, Any] | None) -> dict[str, Any]:
    """What an audit dict (``audit.json``, a summary's ``audit``) concluded: ``verdict``
    ("passed", "failed" or "not run"), its status ``counts`` and the checks that ``failed`` and
    ``warned``."""
    if not isinstance(audit, Mapping) or audit.get("passed") is None:
        return {"verdict": "not run"}
    checks = audit.get("checks") or []
    return {
        "verdict": "passed" if audit["passed"] else "failed",
        "counts": {k: int(v) for k, v in (audit.get("counts") or {}).items()},
        "failed": [c["name"] for c in checks if c.get("status") == "fail"],
        "warned": [c["name"] for c in checks if c.get("status") == "warn"],
    }


@dataclass
class AuditResult:
    """The outcome of :func:`audit`: one :class:`~ciiv.evaluate.checks.CheckResult` per check in
    run order, ``passed`` when none failed (warnings and skips allowed), and the facts of the run.

    ``clean_accuracy`` is the mean per-draw clean accuracy (NaN, and ``stochastic`` None, when the
    model failed before they were measured); ``forward_passes`` counts the images the model
    received over the whole audit (a forward hook: 0 for a model that is a plain callable).
    """

    checks: list[CheckResult]
    passed: bool
    settings: dict[str, Any]
    versions: dict[str, str]
    seed: int
    n_examples: int
    clean_accuracy: float
    stochastic: bool | None
    model: str
    elapsed_s: float
    forward_passes: int = 0

    def check(self, name: str) -> CheckResult:
        """The result of check ``name``; KeyError listing the checks that ran otherwise."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(
            f"no check {name!r} in this audit; ran: {', '.join(c.name for c in self.checks)}"
        )

    @property
    def counts(self) -> dict[str, int]:
        """How many checks ended in each status."""
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        """The content of ``audit.json`` (JSON-serialisable)."""
        return jsonable(
            {
                "passed": self.passed,
                "counts": self.counts,
                "checks": [c.to_dict() for c in self.checks],
                "model": self.model,
                "stochastic": self.stochastic,
                "n_examples": self.n_examples,
                "clean_accuracy": round(self.clean_accuracy, 4),
                "seed": self.seed,
                "settings": self.settings,
                "versions": self.versions,
                "elapsed_s": round(self.elapsed_s, 2),
                "forward_passes": self.forward_passes,
            }
        )

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically (a temporary file, then a rename)."""
        return write_json_atomic(path, self.to_dict())


def audit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | str,
    norm: str = "Linf",
    *,
    quick: bool = False,
    seed: int = 0,
    checks: Sequence[str] | None = None,
    raise_errors: bool = False,
    progress: ProgressFn | None = None,
    **overrides: Any,
) -> AuditResult:
    """Audit ``model``'s robustness evaluation at budget ``eps`` for obfuscated gradients.

    Args:
        model: maps pixels x [B, C, H, W] in [0, 1] to logits [B, K]; optionally ``predict``,
            ``stochastic``, ``bpda(surrogate)``, ``fixed_randomness(seed)``, ``forward_expected``
            (CiiV). It runs in eval mode; its flags are restored afterwards.
        x, y: images [N, C, H, W] in [0, 1] (N >= 100 advised) and labels [N].
        eps, norm: the threat model: a budget (a float or a string like "8/255"), "Linf" or "L2".
        quick: the cheap preset (short attacks, fewer EOT draws and queries) instead of the full
            one of ``ciiv audit``.
        seed: seeds every draw of the audit (attacks and the model's randomness); the global
            generators' states (torch, ``random``, ``numpy``) are restored afterwards.
        checks: names of the checks to run (default all, see :func:`list_checks`); a subset
            costs less, and each check gives the verdict it gives in the full audit.
        raise_errors: re-raise an exception inside a check instead of recording a failed check.
        progress: optional callback, see :data:`ProgressFn`.
        **overrides: any :class:`~ciiv.evaluate.checks.AuditSettings` field (e.g. ``steps=20``);
            ``batch_size`` defaults to the device's fastest (:func:`ciiv.attacks.default_max_batch`
            on the CPU, the settings' default on a GPU).
    """
    started = time.perf_counter()
    eps_value, norm = parse_eps(eps), canonical_norm(norm)
    if not callable(model):
        raise ValueError(f"model must be a callable nn.Module, got {type(model).__name__}")
    check_images(x)
    check_labels(y, x.shape[0])
    if x.shape[0] < 2:
        raise ValueError(
            "the audit compares accuracies over examples: pass at least 2 (100+ advised)"
        )
    param = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    device = x.device if param is None else param.device
    x, y = x.detach().to(device), y.detach().to(device).long()
    cap = default_max_batch(x.device)  # None: keep AuditSettings' default (large calls)
    if cap is not None:
        overrides.setdefault("batch_size", cap)
    settings = audit_settings(eps_value, norm, quick, seed=int(seed), **overrides)
    names = list_checks() if checks is None else list(checks)
    for name in names:
        get_check(name)  # unknown names fail before any work
    results: list[CheckResult] = []
    seen: list[int] = []  # images per model call; the hook's handle removes it when the block ends
    hook = None
    if isinstance(model, nn.Module):
        hook = model.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    with seeded(settings.seed, x.device), preserve_mode(model), hook or contextlib.nullcontext():
        ctx = AuditContext(model, x, y, settings)
        for name in names:
            if progress:
                progress(name, None)
            t0 = time.perf_counter()
            try:
                # Its own seed: a check draws the same whichever checks ran before it.
                with seeded(derive_seed(settings.seed, "check", name), x.device):
                    result = get_check(name)(ctx)
            except Exception as err:
                if raise_errors:
                    raise
                logger.exception("audit check %s crashed", name)
                error = f"{type(err).__name__}: {err}"
                detail = f"The check crashed ({error}); fix the error and rerun the audit: an "
                detail += "evaluation that cannot be audited cannot be trusted."
                result = CheckResult(name, "fail", detail, {"error": error})
            result.elapsed_s = time.perf_counter() - t0
            logger.info("audit: %s -> %s (%.1fs)", name, result.status, result.elapsed_s)
            results.append(result)
            if progress:
                progress(name, result)
        try:
            clean, stochastic = ctx.clean_correct.float().mean().item(), ctx.stochastic
        except Exception:  # a model that crashed its checks may crash here too
            if raise_errors:
                raise
            clean, stochastic = float("nan"), None
    return AuditResult(
        checks=results,
        passed=all(r.status != "fail" for r in results),
        settings=settings.to_dict(),
        versions=software_versions(x.device),
        seed=settings.seed,
        n_examples=x.shape[0],
        clean_accuracy=clean,
        stochastic=stochastic,
        model=type(model).__name__,
        elapsed_s=time.perf_counter() - started,
        forward_passes=sum(seen),
    )


def check_events(emit: Callable[[dict[str, Any]], None], checks: Sequence[str]) -> ProgressFn:
    """An :func:`audit` ``progress`` callback for a run of ``checks`` that calls ``emit`` with
    ``{check, status, done, total}`` before (status None) and after each check: the "audit"
    event of the evaluation's and the experiment's progress callbacks."""
    done = [0]

    def progress(name: str, result: CheckResult | None) -> None:
        done[0] += result is not None
        status = None if result is None else result.status
        emit({"check": name, "status": status, "done": done[0], "total": len(checks)})

    return progress


def describe_checks() -> dict[str, str]:
    """{check name: one-line summary}, in run order."""
    return {name: check_summary(name) for name in list_checks()}
