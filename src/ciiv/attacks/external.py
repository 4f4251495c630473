"""Adapters for the reference implementations in ``pyautoattack`` (Croce and Hein 2020):
AutoAttack ("standard" and "rand" versions), APGD-CE alone and the Square attack.

The algorithms and settings are the original ones; the adapters give them the common attack
contract. pyautoattack reseeds torch's *global* generator, so it runs inside
``torch.random.fork_rng`` (the caller's state is left as it was). Like the originals, these
attacks return x itself for every example they did not fool. Their points can leave the ball by
float error, so the adapters project them and keep the largest excess in ``projected_excess``
(docs/evaluation.md, "Worst case and per-attack numbers").

Every adapter takes ``model`` (x [B, C, H, W] in [0, 1] -> logits [B, K]), ``norm`` ("Linf" or
"L2"), ``eps`` (None = 8/255 Linf, 128/255 L2), ``seed`` (seeds pyautoattack), ``eval_mode``
(model in eval mode during the attack) and ``max_batch`` (accepted for the interface:
pyautoattack batches itself).

``pyautoattack`` is an optional dependency: ``pip install pyautoattack`` (or ``ciiv[autoattack]``).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Literal

import torch
from torch import Tensor, nn

from ciiv._checks import check_choice
from ciiv.deps import require

from .base import Attack, ball_tolerance, excess, positive_int
from .registry import register_attack

__all__ = ["APGDCE", "AutoAttack", "Square"]

logger = logging.getLogger(__name__)

VERSIONS: tuple[str, ...] = ("standard", "rand")


def _pyautoattack():
    pyautoattack = require("pyautoattack", needed_by="this attack")
    for part in ("autopgd_base", "square"):
        require(f"pyautoattack.{part}", "autoattack", needed_by="this attack")
    return pyautoattack


class _External(Attack):
    """Shared part: the projection of pyautoattack's output. Subclasses set ``self.norm`` with
    ``_set_threat`` (eps None = 8/255 Linf, 128/255 L2)."""

    requires = ("pyautoattack",)
    # The largest distance beyond eps or [0, 1] seen before the projection, over every call.
    projected_excess: float = 0.0

    @abstractmethod
    def _run(self, x: Tensor, y: Tensor) -> Tensor:
        """pyautoattack's raw x_adv for the batch (called under no_grad)."""

    def _attack(self, x: Tensor, y: Tensor) -> Tensor:
        # No autograd graph outside pyautoattack's own enable_grad blocks, and a forked global RNG
        # (it calls torch.manual_seed).
        devices = []
        if x.device.type == "cuda":
            devices = [torch.cuda.current_device() if x.device.index is None else x.device.index]
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            return self._project(self._run(x, y), x)

    def _project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """x_adv projected into the ball and [0, 1], its excess recorded (NaN/inf pass through:
        the contract check reports them)."""
        _, box, ball = excess(self.threat, x_adv, x)
        self.projected_excess = max(self.projected_excess, box, ball)
        if max(box, ball) > ball_tolerance(self.eps, x.dtype):
            logger.warning("%s: projected points %.3g outside the ball", self.name, max(box, ball))
        return self.threat.project(x_adv, x)


@register_attack("apgd-ce")
class APGDCE(_External):
    """APGD on the cross-entropy (Croce and Hein 2020), the first attack of AutoAttack.

    Args (and the module doc's):
        steps: iterations (AutoAttack: 100); restarts: random restarts (AutoAttack standard: 1).
        eot: gradients averaged over this many forward passes (AutoAttack rand: 20).
        rho: step-size decrease threshold (0.75).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "Linf",
        eps: float | str | None = None,
        steps: int = 100,
        restarts: int = 1,
        eot: int = 1,
        rho: float = 0.75,
        seed: int | None = None,
        max_batch: int | None = None,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, seed=seed, max_batch=max_batch, eval_mode=eval_mode)
        self.norm = self._set_threat(norm, eps)
        self.steps = positive_int("steps", steps)
        self.restarts = positive_int("restarts", restarts)
        self.eot = positive_int("eot", eot)
        self.rho = float(rho)
        self._record(steps=self.steps, restarts=self.restarts, eot=self.eot, rho=self.rho)

    def _run(self, x: Tensor, y: Tensor) -> Tensor:
        apgd = _pyautoattack().autopgd_base.APGDAttack(
            self.logits, n_iter=self.steps, norm=self.norm, n_restarts=self.restarts,
            eps=self.eps, seed=self.seed, loss="ce", eot_iter=self.eot, rho=self.rho,
            device=x.device,
        )  # fmt: skip
        return apgd.perturb(x, y)


@register_attack("square")
class Square(_External):
    """Square Attack (Andriushchenko et al. 2020), score-based, with AutoAttack's configuration.

    Args (and the module doc's):
        n_queries: query budget per restart (5000); p_init: initial square fraction (0.8).
        restarts: 1; resc_schedule: rescale the p-schedule to n_queries (AutoAttack: False).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "Linf",
        eps: float | str | None = None,
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        resc_schedule: bool = False,
        seed: int | None = None,
        max_batch: int | None = None,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, seed=seed, max_batch=max_batch, eval_mode=eval_mode)
        self.norm = self._set_threat(norm, eps)
        self.n_queries = positive_int("n_queries", n_queries)
        self.p_init = float(p_init)
        self.restarts = positive_int("restarts", restarts)
        self.resc_schedule = bool(resc_schedule)
        self._record(
            n_queries=self.n_queries, p_init=self.p_init, restarts=self.restarts,
            resc_schedule=self.resc_schedule,
        )  # fmt: skip

    def _run(self, x: Tensor, y: Tensor) -> Tensor:
        square = _pyautoattack().square.SquareAttack(
            self.logits, norm=self.norm, n_queries=self.n_queries, eps=self.eps,
            p_init=self.p_init, n_restarts=self.restarts, seed=self.seed, verbose=False,
            targeted=False, loss="margin", resc_schedule=self.resc_schedule, device=x.device,
        )  # fmt: skip
        return square.perturb(x, y)


@register_attack("autoattack")
class AutoAttack(_External):
    """AutoAttack (Croce and Hein 2020) as published, run on the batch (and the module doc's
    arguments). ``version`` "standard": APGD-CE, APGD-T (targeted DLR), FAB-T, Square (5000
    queries), each on the points still standing; "rand" (for randomized defences): APGD-CE and
    APGD-DLR with EOT over 20 draws. APGD-T and FAB-T use ``n_target_classes`` (9, i.e. every
    wrong class on 10-class data) capped at K - 1 for a K-class model (logged when capped);
    "standard" needs K >= 4 and "rand" K >= 3 (the DLR losses use the 3rd/4th largest logits).
    ``batch_size``: pyautoattack's internal batch size (None = the whole batch at once).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "Linf",
        eps: float | str | None = None,
        version: Literal["standard", "rand"] = "standard",
        n_target_classes: int = 9,
        batch_size: int | None = None,
        seed: int | None = None,
        max_batch: int | None = None,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, seed=seed, max_batch=max_batch, eval_mode=eval_mode)
        self.norm = self._set_threat(norm, eps)
        check_choice("AutoAttack version", version, VERSIONS)
        self.version = version
        self.n_target_classes = positive_int("n_target_classes", n_target_classes)
        self.batch_size = None if batch_size is None else positive_int("batch_size", batch_size)
        self._record(
            version=version, n_target_classes=self.n_target_classes, batch_size=self.batch_size
        )

    def _run(self, x: Tensor, y: Tensor) -> Tensor:
        num_classes = self.logits(x[:1]).shape[1]  # no_grad: inside _isolated
        needed = 4 if self.version == "standard" else 3
        if num_classes < needed:
            raise ValueError(
                f"AutoAttack version {self.version!r} needs at least {needed} classes (its DLR "
                f"losses), the model has {num_classes}: use the 'apgd-ce' and 'square' attacks"
            )
        targets = min(self.n_target_classes, num_classes - 1)
        if targets < self.n_target_classes:
            logger.info(
                "AutoAttack: %d target classes (the model has %d classes)", targets, num_classes
            )
        runner = _pyautoattack().AutoAttack(
            self.logits, norm=self.norm, eps=self.eps, version=self.version, seed=self.seed,
            device=x.device,
        )  # fmt: skip
        runner.apgd_targeted.n_target_classes = targets
        runner.fab.n_target_classes = targets
        return runner.run_standard_evaluation(x, y, batch_size=self.batch_size or len(x))[0]
