"""One batch of an evaluation: prediction draws, the worst-case chain and standalone attacks.

Everything random in a batch (the model's draws, the attacks' seeds) derives from the evaluation
seed and the batch index alone, so a batch gives the same rows whenever and wherever it runs: a
resumed or multi-process evaluation equals an uninterrupted one on the same device type.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ciiv.attacks import (
    attack_class,
    create_attack,
    draw_calls,
    get_threat_model,
    independent_draws,
    rows_independent,
)
from ciiv.models import predict

from .protocols import Protocol
from .suites import ResolvedAttack

__all__ = ["derive_seed", "draw_predictions", "evaluate_batch", "seeded"]

# Slack of the ball check on x_adv: float32 rounding of x + delta can exceed eps by ~1 ulp.
_BALL_TOLERANCE = 1e-5


def derive_seed(seed: int, *keys: object) -> int:
    """A 62-bit seed that depends only on ``seed`` and ``keys`` (stable across runs, machines)."""
    digest = hashlib.blake2b(repr((int(seed), *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**62 - 1)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global generators of torch, Python's ``random`` and NumPy's legacy
    ``numpy.random`` for the block, and restore the caller's states afterwards.

    A model's own randomness (CiiV's noise and masks, smoothing noise, a foreign defence's
    ``random.randint`` or ``np.random.rand``) comes from these, so this is what makes a batch
    reproducible. A model with a private generator (``np.random.default_rng()``, its own
    ``torch.Generator``) is not reached; the audit's randomness check says when a seeded
    evaluation of a model is not reproducible.
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

    Where the model's rows are independent draws (:func:`~ciiv.attacks.rows_independent`:
    declared, or measured by the evaluation) the R copies of the batch go through the model as
    R * B rows (row r * B + i is draw r of example i), in calls of at most ``max_batch`` images
    (None: one call), inside :func:`~ciiv.attacks.independent_draws`, like the EOT draws of an
    attack; every draw of every example then has its own noise and masks, distributed exactly as
    in R separate calls. Any other model gets R calls, one per draw.
    """
    if draws == 1 or not rows_independent(model):
        return torch.stack([predict(model, x) for _ in range(draws)])
    rows = x.repeat(draws, 1, 1, 1)
    with independent_draws(model):
        calls = draw_calls(x.shape[0], draws, max_batch, independent=True)
        preds = [predict(model, rows[call]) for call in calls]
    return torch.cat(preds).view(draws, x.shape[0])


def _accepts(attack: str, parameter: str) -> bool:
    return parameter in inspect.signature(attack_class(attack).__init__).parameters


def _outcome(values: list[int], label: int) -> dict[str, Any]:
    correct = sum(p == label for p in values)
    return {"preds": values, "correct": correct, "robust": correct == len(values)}


def evaluate_batch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch: int,
    positions: list[int],
    indices: list[int],
    attacks: list[ResolvedAttack],
    protocol: Protocol,
    draws: int,
    seed: int,
    max_batch: int | None = None,
    on_attack: Callable[[str], None] | None = None,
    on_step: Callable[[str, int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Evaluate one batch; returns (one row per example, the batch record).

    Args:
        model: any model on pixels x in [0, 1] (in eval mode; attacks keep it so).
        x: images [B, C, H, W] in [0, 1] on the model's device; y: labels [B] int64.
        batch: batch index (with ``seed`` it fixes every random draw of the batch).
        positions, indices: per example, its position in the evaluated set and its index in the
            source split (both written to the rows).
        attacks: resolved attacks in run order.
        protocol: the effective protocol (decides which function the attacks query).
        draws: R, prediction draws per input.
        seed: the evaluation seed.
        max_batch: most images per model call inside attacks that accept ``max_batch``, and
            per call of the batched prediction draws.
        on_attack: called with each attack's name before it runs (progress display).
        on_step: called as ``on_step(name, step, steps)`` after each iteration of an iterative
            attack (:attr:`ciiv.attacks.Attack.on_step`; progress display).
    """
    start = time.perf_counter()
    record: dict[str, Any] = {
        "batch": batch,
        "size": x.shape[0],
        "forward_passes": {},
        "attacked": {},
        "elapsed": {},
        "settings": {},
    }
    labels = y.tolist()
    with seeded(derive_seed(seed, "batch", batch), x.device):
        clean = draw_predictions(model, x, draws, max_batch)
        record["forward_passes"]["predictions"] = draws * x.shape[0]
        correct = (clean == y).all(0)
        standing = correct.clone()
        broken_by: list[str | None] = [None if ok else "clean" for ok in correct.tolist()]
        outcomes: dict[str, list[dict | None]] = {}
        for spec in attacks:
            if on_attack is not None:
                on_attack(spec.name)
            t0 = time.perf_counter()
            hyper = dict(spec.hyper)
            if _accepts(spec.attack, "seed"):
                hyper["seed"] = derive_seed(seed, "attack", batch, spec.name)
            if max_batch is not None and _accepts(spec.attack, "max_batch"):
                hyper["max_batch"] = max_batch
            attack = create_attack(spec.attack, protocol.attacked(model), **hyper)
            if on_step is not None:
                attack.on_step = lambda step, steps, name=spec.name: on_step(name, step, steps)
            record["settings"][spec.name] = attack.settings()
            idx = torch.nonzero(standing if spec.worst_case else correct).flatten()
            rows_out: list[dict | None] = [None] * x.shape[0]
            if idx.numel():
                x_adv = attack(x[idx], y[idx])
                _check_ball(spec, x_adv, x[idx])
                preds = draw_predictions(model, x_adv, draws, max_batch)
                record["forward_passes"]["predictions"] += draws * idx.numel()
                robust = (preds == y[idx]).all(0)
                if spec.worst_case or spec.in_threat_model:
                    # A point broken inside the threat model is not robust, whatever the role.
                    newly = idx[~robust & standing[idx]]
                    standing[newly] = False
                    for i in newly.tolist():
                        broken_by[i] = spec.name
                # One device-to-host copy per attack, not one per example.
                for i, values in zip(idx.tolist(), preds.T.tolist(), strict=True):
                    rows_out[i] = _outcome(values, labels[i])
            outcomes[spec.name] = rows_out
            record["attacked"][spec.name] = idx.numel()
            record["forward_passes"][spec.name] = attack.forward_passes
            record["elapsed"][spec.name] = time.perf_counter() - t0
    rows = []
    clean_values = clean.T.tolist()
    for i in range(x.shape[0]):
        rows.append(
            {
                "index": indices[i],
                "position": positions[i],
                "batch": batch,
                "label": labels[i],
                "clean": _outcome(clean_values[i], labels[i]),
                "attacks": {name: outcomes[name][i] for name in outcomes},
                "robust": bool(standing[i]),
                "broken_by": broken_by[i],
            }
        )
    record["elapsed_s"] = time.perf_counter() - start
    return rows, record


def _check_ball(spec: ResolvedAttack, x_adv: Tensor, x: Tensor) -> None:
    """Refuse an x_adv outside [0, 1] or the entry's ball (an attack bug, never a result)."""
    distance = get_threat_model(spec.norm, spec.eps).distance(x_adv, x)
    limit = spec.eps + _BALL_TOLERANCE
    if (
        x_adv.shape != x.shape
        or bool((distance > limit).any())
        or not bool(((x_adv >= 0) & (x_adv <= 1)).all())
    ):
        raise RuntimeError(
            f"attack {spec.name!r} returned points outside [0, 1] or outside its {spec.norm} ball "
            f"of radius {spec.eps:.6g} (largest distance {float(distance.max()):.6g}); this is a "
            "bug in the attack, not a robustness result"
        )
