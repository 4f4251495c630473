"""The contract every attack follows (torchattacks-style), and the model plumbing they share.

An attack is a callable object: hyper-parameters go to the constructor, ``attack(x, y)`` returns
``x_adv``. The base class guarantees, for every attack:

- ``x_adv`` is detached, has x's shape and dtype, lies in [0, 1] and inside the attack's threat
  ball (a last projection enforces it, so a subclass bug cannot leak an out-of-budget point);
- the model's train/eval flags are restored exactly, module by module (by default the model is put
  in eval mode while the attack runs);
- ``forward_passes`` counts images sent through the model (see below);
- ``settings()`` lists every hyper-parameter (JSON-serialisable, with the resolved seed), so that
  ``create_attack(attack.name, model, **attack.settings())`` rebuilds the same attack.

Counting: ``forward_passes`` is the cumulative number of *images* forwarded through the model by
this attack object, i.e. the sum of the batch sizes of all its calls of ``model(x)`` (or
``model.forward_views(x)``), with or without gradient. One call on a batch of 128 counts 128; EOT
with E draws of that batch counts 128 * E whether the draws are batched into one call or not; a
CiiV image counts once although the model runs its L views internally. The count therefore does not
depend on ``max_batch`` chunking and measures the query cost of the attack.

Randomness: ``seed`` seeds a torch.Generator (one per device, created on first use) that drives
the attack's own draws (random starts, targets, noise). The model's randomness is separate: a
CiiV model draws its noise from torch's global generator unless it is inside
``model.fixed_randomness(seed)``.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .threat import ThreatModel

__all__ = [
    "Attack",
    "bpda_context",
    "check_batch",
    "default_max_batch",
    "independent_draws",
    "inputs_checked_once",
    "positive_int",
    "preserve_mode",
]

logger = logging.getLogger(__name__)

BPDA_SURROGATES: tuple[str, ...] = ("identity", "smooth")


@contextlib.contextmanager
def preserve_mode(model: nn.Module, eval_mode: bool = True) -> Iterator[None]:
    """Put ``model`` in eval mode (if ``eval_mode``) and restore every module's own flag afterwards.

    ``model.train(flag)`` would set all submodules alike; restoring per module keeps a model whose
    parts were in mixed modes exactly as it was.
    """
    flags = [(module, module.training) for module in model.modules()]
    try:
        if eval_mode:
            model.eval()
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def bpda_context(model: nn.Module, surrogate: str | None) -> contextlib.AbstractContextManager:
    """``model.bpda(surrogate)`` if requested and the model has one, else a no-op context.

    BPDA replaces the backward pass of a non-differentiable layer. A model without ``bpda()`` has no
    such layer known to us, so its own gradient already is the BPDA gradient; we log that once.
    """
    if surrogate is None:
        return contextlib.nullcontext()
    if surrogate not in BPDA_SURROGATES:
        raise ValueError(f"unknown bpda {surrogate!r}; valid: None, {', '.join(BPDA_SURROGATES)}")
    method = getattr(model, "bpda", None)
    if not callable(method):
        logger.info(
            "bpda=%r: %s has no bpda(); using its own gradient", surrogate, type(model).__name__
        )
        return contextlib.nullcontext()
    return method(surrogate)


@contextlib.contextmanager
def inputs_checked_once(model: nn.Module) -> Iterator[None]:
    """Turn off the per-call pixel check of ``model`` (and its submodules) for the block.

    ciiv's models validate that every input is in [0, 1], which costs one device-to-host sync
    per call. An attack validates x once (``check_batch``) and keeps its own points in [0, 1] by
    construction (every iterate is projected), so the check would only stall the GPU at every
    step. The previous flags are restored module by module.
    """
    modules = getattr(model, "modules", None)
    flagged = [m for m in modules() if hasattr(m, "check_inputs")] if callable(modules) else []
    flags = [m.check_inputs for m in flagged]
    for module in flagged:
        module.check_inputs = False
    try:
        yield
    finally:
        for module, flag in zip(flagged, flags, strict=True):
            module.check_inputs = flag


@contextlib.contextmanager
def independent_draws(model: nn.Module) -> Iterator[None]:
    """Make every row of a batch get its own random masks in a CiiV model, for batched EOT.

    A CiiV sampler with shared masks (the official behaviour) draws one mask per view and sample for
    the whole batch, so E copies of an image stacked into one batch would share their masks and the
    E "draws" would not be independent. Switching the sampler to per-example masks during the
    attack gives each row its own mask. For the attack this is the same random function: the
    per-example loss and gradient depend only on that example's own masks, whose distribution is
    identical under both settings (the rows are independent in eval mode). Only the correlation
    *between* examples of a batch changes, which a per-example attack never uses. Models without
    such a sampler are left untouched: their draws are assumed independent per row.
    """
    sampler = getattr(model, "sampler", None)
    if sampler is None or getattr(sampler, "per_example_masks", True):
        yield
        return
    sampler.per_example_masks = True
    try:
        yield
    finally:
        sampler.per_example_masks = False


# Images per model call on the CPU: calls of 64 images (x L views) stay in cache and run 2-3x faster
# than one call of all E * B rows of an EOT step on a small CNN, and as fast on pre-activation
# ResNet-18 (benchmarks/eval_throughput.py --max-batch, 2-core CPU).
CPU_MAX_BATCH = 64


def default_max_batch(device: torch.device | str) -> int | None:
    """The fastest images-per-model-call cap on ``device``: small calls on the CPU
    (:data:`CPU_MAX_BATCH`), one call of everything (None) on an accelerator."""
    return CPU_MAX_BATCH if torch.device(device).type == "cpu" else None


def positive_int(name: str, value: int) -> int:
    """``value`` as an int; a ValueError naming the hyper-parameter unless it is an integer >= 1."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_batch(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate an image batch x [B, C, H, W] in [0, 1] and labels y [B]; return them detached."""
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        desc = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"attacks take float images [B, C, H, W] in [0, 1], got {desc}")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
        desc = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(
            f"labels must be integer class indices of shape [{x.shape[0]}], got {desc}"
        )
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError("pixels must be finite and in [0, 1]; pass unnormalised images")
    return x.detach(), y.detach().long().to(x.device)


class Attack(ABC):
    """Base class: ``attack(x [B, C, H, W] in [0, 1], y [B] int64) -> x_adv`` (see module doc).

    Subclasses implement ``_attack`` and set ``self.threat`` (None only for an unbounded attack) and
    record their hyper-parameters with ``self._record(...)``.
    """

    name: ClassVar[str] = "attack"
    # Optional packages the attack imports (checked up front, e.g. by evaluate_robustness).
    requires: ClassVar[tuple[str, ...]] = ()
    # Progress hook (None: off): the iterative attacks call on_step(step, steps) after each of
    # their iterations, restarts included; set it on the instance. It must not touch tensors.
    on_step: Callable[[int, int], None] | None = None

    def __init__(
        self, model: nn.Module, *, seed: int | None = None, eval_mode: bool | None = True
    ) -> None:
        if not callable(model):
            raise ValueError(f"model must be a callable nn.Module, got {type(model).__name__}")
        self.model = model
        self.forward_passes = 0
        # Without a seed, draw one from torch's global generator: torch.manual_seed then still
        # reproduces the run, and settings() records the seed that was used.
        self.seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed)
        self.eval_mode = bool(eval_mode)
        self.threat: ThreatModel | None = None
        self._generators: dict[torch.device, torch.Generator] = {}
        self._hyper: dict[str, Any] = {"seed": self.seed}
        # eval_mode=None marks an attack that never queries the model: its modes stay untouched
        # and the setting is not recorded.
        if eval_mode is not None:
            self._record(eval_mode=self.eval_mode)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"

    def _record(self, **hyper: Any) -> None:
        self._hyper.update(hyper)

    def settings(self) -> dict[str, Any]:
        """Every hyper-parameter, JSON-serialisable (eps as a float, the resolved seed)."""
        return dict(self._hyper)

    def _step_done(self, step: int, steps: int) -> None:
        """Tell :attr:`on_step` that iteration ``step`` of ``steps`` is done (no device sync)."""
        if self.on_step is not None:
            self.on_step(step, steps)

    def generator(self, device: torch.device) -> torch.Generator:
        """The attack's seeded generator on ``device`` (one per device, advanced across calls)."""
        device = torch.device(device)
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for x [B, C, H, W] in [0, 1] with labels y [B]: detached, in [0, 1],
        inside the threat ball, same shape and dtype as x."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "attacks need autograd: call them outside torch.inference_mode() "
                "(torch.no_grad() around the call is fine)"
            )
        x, y = check_batch(x, y)
        if x.shape[0] == 0:
            return x.clone()
        with preserve_mode(self.model, self.eval_mode), inputs_checked_once(self.model):
            x_adv = self._attack(x, y)
        x_adv = x_adv.detach().to(x.dtype)
        if self.threat is not None:
            return self.threat.project(x_adv, x)
        return x_adv.clamp(0, 1)

    @abstractmethod
    def _attack(self, x: Tensor, y: Tensor) -> Tensor:
        """x_adv for a validated, detached, non-empty batch (the model is already in its mode)."""

    def logits(self, x: Tensor) -> Tensor:
        """``model(x)``, counted: adds x.shape[0] to ``forward_passes``."""
        out = self.model(x)
        self.forward_passes += x.shape[0]
        return out

    def logits_no_grad(self, x: Tensor, max_batch: int | None = None) -> Tensor:
        """``model(x)`` without gradient, in calls of at most ``max_batch`` images (None: one)."""
        chunk = max_batch or x.shape[0]
        with torch.no_grad():
            return torch.cat([self.logits(x[s : s + chunk]) for s in range(0, x.shape[0], chunk)])

    def views(self, x: Tensor):
        """``model.forward_views(x)`` (CiiV's per-view outputs), counted like ``logits``."""
        out = self.model.forward_views(x)
        self.forward_passes += x.shape[0]
        return out
