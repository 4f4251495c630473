"""One batch of an evaluation: prediction draws, the worst-case chain and standalone attacks;
and :func:`run_attack`, the one way the evaluation and the audit run an attack.

Everything random in a batch (the model's draws, the attacks' seeds) derives from the evaluation
seed and the batch index alone, so a batch gives the same rows whenever and wherever it runs: a
resumed or multi-process evaluation equals an uninterrupted one on the same device type.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ciiv.attacks import (
    AttackContractError,
    create_attack,
    draw_layout,
    parse_eps,
)
from ciiv.attacks.threat import canonical_norm
from ciiv.models import predict

from .protocols import Protocol

if TYPE_CHECKING:
    from .settings import EvalPlan

__all__ = [
    "AttackOutcome",
    "derive_seed",
    "draw_predictions",
    "evaluate_batch",
    "run_attack",
    "seeded",
]


def derive_seed(seed: int, *keys: object) -> int:
    """A 62-bit seed that depends only on ``seed`` and ``keys`` (stable across runs, machines)."""
    digest = hashlib.blake2b(repr((int(seed), *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**62 - 1)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global generators of torch, Python's ``random`` and NumPy's legacy
    ``numpy.random`` for the block, and restore the caller's states afterwards.

    A model's own randomness (CiiV's noise and masks, a foreign defence's ``random.randint`` or
    ``np.random.rand``) comes from these: this makes a batch reproducible. A private generator
    (``np.random.default_rng()``, a ``torch.Generator``) is not reached; the audit's randomness
    check says when a seeded evaluation is not reproducible.
    """
    devices = []
    if device.type == "cuda":
        devices = [torch.cuda.current_device() if device.index is None else device.index]
    python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global generator is the shared one)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)  # noqa: NPY002


@torch.no_grad()
def draw_predictions(
    model: nn.Module, x: Tensor, draws: int, max_batch: int | None = None
) -> Tensor:
    """R = ``draws`` predictions of every example, by the model's own rule: int64 [R, B].

    A model whose rows are independent draws (:func:`~ciiv.attacks.rows_independent`) gets the R
    copies as R * B rows (row r * B + i is draw r of example i) inside
    :func:`~ciiv.attacks.independent_draws`, like an attack's EOT draws; any other model gets one
    call per draw. Calls hold at most ``max_batch`` images (None: no limit).
    """
    calls, context = draw_layout(model, x.shape[0], draws, max_batch)
    rows = x.repeat(draws, 1, 1, 1) if draws > 1 else x
    with context:
        preds = [predict(model, rows[call]) for call in calls]
    return torch.cat(preds).view(draws, x.shape[0])


@dataclass
class AttackOutcome:
    """One run of an attack (:func:`run_attack`): x_adv [B, C, H, W] (checked by the attack's
    contract), ``preds`` [R, B] int64 of the model on x_adv (None without draws), the attack's
    ``settings()``, its ``forward_passes``, the images the model received while it ran
    (``queried``, a forward hook) and whether every module's train/eval flag came back."""

    x_adv: Tensor
    preds: Tensor | None
    settings: dict[str, Any]
    forward_passes: int
    queried: int
    mode_restored: bool


def run_attack(
    model: nn.Module,
    attack: str,
    x: Tensor,
    y: Tensor,
    *,
    hyper: Mapping[str, Any],
    seed: int,
    key: tuple = (),
    protocol: Protocol | None = None,
    draws: int = 0,
    max_batch: int | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> AttackOutcome:
    """Build attack ``attack`` against ``model`` through the registry, run it, predict: the one
    way the evaluation and the audit run an attack.

    Args:
        model: the evaluated model, pixels in [0, 1] -> logits.
        attack: registry name; hyper: its hyper-parameters, ``eps`` and ``norm`` included (an
            attack that would check its points against another ball is refused).
        x, y: images [B, C, H, W] in [0, 1] and labels [B] on the model's device.
        seed, key: the attack's seed is ``derive_seed(seed, "attack", *key)``: a run depends on
            them alone, never on what ran before.
        protocol: what the attack queries while it runs (None: the model itself).
        draws: R, predictions of ``model`` on x_adv (:func:`draw_predictions`); 0: none.
        max_batch: most images per model call of the attack and the predictions (None: its own).
        on_step: progress hook of the iterative attacks (:attr:`ciiv.attacks.Attack.on_step`).
    """
    hyper = {**hyper, "seed": derive_seed(seed, "attack", *key)}
    if max_batch is not None:
        hyper["max_batch"] = max_batch
    target = model if protocol is None else protocol.attacked(model)
    instance = create_attack(attack, target, **hyper)
    norm, eps, threat = canonical_norm(hyper["norm"]), parse_eps(hyper["eps"]), instance.threat
    if threat is None or threat.norm != norm or not math.isclose(threat.eps, eps, rel_tol=1e-9):
        raise AttackContractError(
            f"attack {attack!r} was asked for the {norm} ball of radius {eps:.6g} but checks its "
            f"points against {threat!r}: a bug in the attack, not a robustness result"
        )
    instance.on_step = on_step
    seen: list[int] = []  # images per model call while the attack runs
    flags = [m.training for m in model.modules()]
    with target.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0]))):
        x_adv = instance(x, y)
    preds = draw_predictions(model, x_adv, draws, max_batch) if draws and len(x) else None
    restored = flags == [m.training for m in model.modules()]
    return AttackOutcome(
        x_adv, preds, instance.settings(), instance.forward_passes, sum(seen), restored
    )


def _outcome(values: list[int], label: int) -> dict[str, Any]:
    correct = sum(p == label for p in values)
    return {"preds": values, "correct": correct, "robust": correct == len(values)}


def _step_event(progress: Callable, info: dict[str, Any], step: int, steps: int) -> None:
    progress("step", {**info, "step": step, "steps": steps})


def evaluate_batch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    plan: EvalPlan,
    batch: int,
    lo: int,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Evaluate batch ``batch`` of ``plan``, the examples at positions lo..lo+B-1 of the
    evaluated set: images x [B, C, H, W] in [0, 1] and labels y [B] int64 on the device of the
    model (in eval mode; attacks keep it so). The batch index and the plan's seed fix every
    random draw of the batch. ``progress`` gets the "attack" and "step" events of
    :data:`ciiv.evaluate.api.ProgressFn`. Returns (one row per example, the batch record).
    """
    attacks, protocol, settings = plan.attacks, plan.protocol, plan.settings
    draws, seed, max_batch = settings.draws, settings.seed, settings.max_batch
    start = time.perf_counter()
    record: dict[str, Any] = {"batch": batch, "size": x.shape[0]}
    record |= {key: {} for key in ("forward_passes", "attacked", "elapsed", "settings")}
    labels = y.tolist()
    with seeded(derive_seed(seed, "batch", batch), x.device):
        clean = draw_predictions(model, x, draws, max_batch)
        record["forward_passes"]["predictions"] = draws * x.shape[0]
        correct = (clean == y).all(0)
        standing = correct.clone()
        broken_by: list[str | None] = [None if ok else "clean" for ok in correct.tolist()]
        outcomes: dict[str, list[dict | None]] = {}
        for number, spec in enumerate(attacks):
            step = None
            if progress:
                info = {"batch": batch, "name": spec.name}
                progress("attack", {**info, "index": number, "attacks": len(attacks)})
                step = partial(_step_event, progress, info)
            t0 = time.perf_counter()
            idx = torch.nonzero(standing if spec.worst_case else correct).flatten()
            run = run_attack(
                model, spec.attack, x[idx], y[idx], hyper=spec.hyper, seed=seed,
                key=(batch, spec.name), protocol=protocol, draws=draws, max_batch=max_batch,
                on_step=step,
            )  # fmt: skip
            record["settings"][spec.name] = run.settings
            rows_out: list[dict | None] = [None] * x.shape[0]
            if idx.numel():
                record["forward_passes"]["predictions"] += draws * idx.numel()
                robust = (run.preds == y[idx]).all(0)
                if spec.worst_case or spec.in_threat_model:
                    # A point broken inside the threat model is not robust, whatever the role.
                    newly = idx[~robust & standing[idx]]
                    standing[newly] = False
                    for i in newly.tolist():
                        broken_by[i] = spec.name
                # One device-to-host copy per attack, not one per example.
                for i, values in zip(idx.tolist(), run.preds.T.tolist(), strict=True):
                    rows_out[i] = _outcome(values, labels[i])
            outcomes[spec.name] = rows_out
            record["attacked"][spec.name] = idx.numel()
            record["forward_passes"][spec.name] = run.forward_passes
            record["elapsed"][spec.name] = time.perf_counter() - t0
    clean_values = clean.T.tolist()
    rows = [
        {
            "index": plan.indices[lo + i],
            "position": lo + i,
            "batch": batch,
            "label": labels[i],
            "clean": _outcome(clean_values[i], labels[i]),
            "attacks": {name: outcomes[name][i] for name in outcomes},
            "robust": bool(standing[i]),
            "broken_by": broken_by[i],
        }
        for i in range(x.shape[0])
    ]
    record["elapsed_s"] = time.perf_counter() - start
    return rows, record
