"""The contract every attack follows (torchattacks-style), and the model plumbing they share.

An attack is a callable object: hyper-parameters go to the constructor, ``attack(x, y)`` returns
``x_adv``. The base class guarantees, for every attack:

- ``x_adv`` is detached, has x's shape and dtype, is finite, in [0, 1] and inside the threat ball:
  *checked* on the raw output of ``_attack`` (:class:`AttackContractError` otherwise), never
  repaired (a projection here would turn an attack that steps with the wrong eps, or returns
  garbage, into a valid-looking weaker one); attacks project inside ``_attack`` where needed;
- the model's train/eval flags are restored exactly, module by module (by default the model is put
  in eval mode while the attack runs);
- ``forward_passes`` counts images sent through the model (see below);
- ``settings()`` lists every hyper-parameter (JSON-serialisable, with the resolved seed), so that
  ``create_attack(attack.name, model, **attack.settings())`` rebuilds the same attack.

Counting: ``forward_passes`` is the cumulative number of *images* this attack object sent through
the model, with or without gradient (the query cost): EOT with E draws of a batch of 128 counts
128 * E however ``max_batch`` splits them into calls, and a CiiV image counts once (not L views).

Randomness: ``seed`` seeds a torch.Generator (one per device) that drives the attack's own draws
(random starts, targets, noise). The model's randomness is separate: a CiiV model draws from
torch's global generator unless inside ``model.fixed_randomness(seed)``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ciiv._checks import check_images, check_labels, positive_int
from ciiv.models.views import SupportsBPDA

from .threat import ThreatModel, canonical_norm, default_eps, get_threat_model

__all__ = [
    "Attack",
    "AttackContractError",
    "BestIterate",
    "ball_tolerance",
    "bpda_context",
    "check_batch",
    "check_output",
    "excess",
    "default_max_batch",
    "inputs_checked_once",
    "preserve_mode",
]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def preserve_mode(model: nn.Module, eval_mode: bool = True) -> Iterator[None]:
    """Put ``model`` in eval mode (if ``eval_mode``) and restore every module's own flag afterwards
    (``model.train(flag)`` would set all submodules alike, losing mixed modes)."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        if eval_mode:
            model.eval()
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def bpda_context(model: nn.Module, surrogate: str | None) -> contextlib.AbstractContextManager:
    """``model.bpda(surrogate)`` if requested and the model has one, else a no-op context (a model
    without ``bpda()`` has no non-differentiable layer known to us: its gradient is the BPDA one).
    ``surrogate`` was validated by the attack's constructor."""
    if surrogate is None:
        return contextlib.nullcontext()
    if not isinstance(model, SupportsBPDA):
        logger.info(
            "bpda=%r: %s has no bpda(); using its own gradient", surrogate, type(model).__name__
        )
        return contextlib.nullcontext()
    return model.bpda(surrogate)


@contextlib.contextmanager
def inputs_checked_once(model: nn.Module) -> Iterator[None]:
    """Turn off the per-call pixel check of ``model``'s modules for the block (flags restored):
    the check costs a device-to-host sync per call, and an attack validates x once
    (``check_batch``) and keeps its points in [0, 1] by construction."""
    modules = model.modules() if callable(getattr(model, "modules", None)) else []
    flags = {m: m.check_inputs for m in modules if hasattr(m, "check_inputs")}
    for module in flags:
        module.check_inputs = False
    try:
        yield
    finally:
        for module, flag in flags.items():
            module.check_inputs = flag


# Images per model call on the CPU: calls of 64 images (x L views) stay in cache and run 2-3x faster
# than one call of all E * B rows of an EOT step on a small CNN, and as fast on pre-activation
# ResNet-18 (benchmarks/eval_throughput.py --max-batch, 2-core CPU).
CPU_MAX_BATCH = 64


def default_max_batch(device: torch.device | str) -> int | None:
    """The fastest images-per-model-call cap on ``device``: small calls on the CPU
    (:data:`CPU_MAX_BATCH`), one call of everything (None) on an accelerator."""
    return CPU_MAX_BATCH if torch.device(device).type == "cpu" else None


def check_batch(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate an image batch x [B, C, H, W] in [0, 1] and labels y [B]; return them detached."""
    check_images(x)
    check_labels(y, x.shape[0])
    return x.detach(), y.detach().long().to(x.device)


class BestIterate:
    """The best point seen so far per example, scored lexicographically by (primary, secondary),
    higher is better, ties kept: e.g. (fooled, loss) so that any fooling point beats every other.
    ``x`` [B, C, H, W] starts as the given points with scores ``initial`` (default -inf: the first
    update always wins). Updates use ``torch.where`` (no boolean indexing: no device sync); scores
    are float32 (float64 for float64 images)."""

    def __init__(self, x: Tensor, initial: tuple[float, float] = (-math.inf, -math.inf)) -> None:
        dtype = torch.promote_types(x.dtype, torch.float32)
        self.x = x.detach().clone()
        self.primary = torch.full((x.shape[0],), initial[0], device=x.device, dtype=dtype)
        self.secondary = torch.full((x.shape[0],), initial[1], device=x.device, dtype=dtype)

    def update(
        self, points: Tensor, primary: Tensor, secondary: Tensor, idx: slice | Tensor = slice(None)
    ) -> None:
        """Offer ``points`` [b, C, H, W] with scores [b] for the examples ``idx`` (default all)."""
        primary, secondary = primary.to(self.primary.dtype), secondary.to(self.secondary.dtype)
        old_primary, old_secondary = self.primary[idx], self.secondary[idx]
        better = (primary > old_primary) | ((primary == old_primary) & (secondary > old_secondary))
        shaped = better.view(-1, *([1] * (points.dim() - 1)))
        self.x[idx] = torch.where(shaped, points.detach().to(self.x.dtype), self.x[idx])
        self.primary[idx] = torch.where(better, primary, old_primary)
        self.secondary[idx] = torch.where(better, secondary, old_secondary)


class AttackContractError(ValueError):
    """An attack returned NaN/inf, a point outside [0, 1] or its threat ball, or the wrong shape:
    a bug in the attack, never a robustness result."""


def ball_tolerance(eps: float, dtype: torch.dtype) -> float:
    """The largest excess of ||x_adv - x|| over ``eps`` that rounding explains for ``dtype``
    images: (1e-5 + 4 ulp) * max(eps, 1). A real step beyond the ball (1/255 = 4e-3) is far
    larger; the pixel box [0, 1] gets no slack (models refuse inputs outside it)."""
    return (1e-5 + 4 * torch.finfo(dtype).eps) * max(eps, 1.0)


def excess(threat: ThreatModel | None, x_adv: Tensor, x: Tensor) -> tuple[int, float, float]:
    """(NaN/inf count, largest excess outside [0, 1], largest excess of the distance to x over
    eps: 0 without a threat) of x_adv [B, C, H, W], excesses taken over its finite values; the
    three come back in one device-to-host transfer."""
    finite = torch.isfinite(x_adv)
    clean = torch.where(finite, x_adv, x)
    ball = x.new_zeros(()) if threat is None else (threat.distance(clean, x) - threat.eps).amax()
    box = torch.maximum((clean - 1).amax(), (-clean).amax())
    nonfinite, box, ball = torch.stack([t.double() for t in ((~finite).sum(), box, ball)]).tolist()
    return int(nonfinite), box, ball


def check_output(name: str, threat: ThreatModel | None, x_adv: Tensor, x: Tensor) -> None:
    """Raise :class:`AttackContractError` unless x_adv [B, C, H, W] (x's shape) is finite, in
    [0, 1] and, when ``threat`` is given, inside its ball around x up to :func:`ball_tolerance`.
    The message names the attack, the norm, the largest excesses and the NaN/inf count."""
    if x_adv.shape != x.shape:
        raise AttackContractError(
            f"attack {name!r} returned shape {tuple(x_adv.shape)} for inputs {tuple(x.shape)}"
        )
    nonfinite, box, ball = excess(threat, x_adv, x)
    problems = []
    if nonfinite:
        problems.append(f"{nonfinite} NaN/inf value(s)")
    if box > 0:
        problems.append(f"pixels outside [0, 1] by up to {box:.3g}")
    if threat is not None and ball > (tolerance := ball_tolerance(threat.eps, x.dtype)):
        problems.append(
            f"{threat.norm} distance above eps={threat.eps:.6g} by up to {ball:.3g} "
            f"(tolerance {tolerance:.2g})"
        )
    if problems:
        raise AttackContractError(
            f"attack {name!r} broke its contract: {'; '.join(problems)}. An attack must return "
            "finite points in [0, 1] inside its ball (project inside _attack): this is a bug in "
            "the attack, not a robustness result"
        )


class Attack(ABC):
    """Base class: ``attack(x [B, C, H, W] in [0, 1], y [B] int64) -> x_adv`` (see module doc).
    Subclasses implement ``_attack``, set ``self.threat`` (None only for an unbounded attack) and
    ``self._record(...)`` their hyper-parameters (``max_batch`` only where they use it).

    Every attack takes ``model`` (x [B, C, H, W] in [0, 1] -> logits [B, K]), ``seed`` (seeds
    the attack's generator; None draws one), ``max_batch`` (most images per model call; None:
    one call) and ``eval_mode`` (the model in eval mode during the attack, flags restored)."""

    name: ClassVar[str] = "attack"
    # Optional packages the attack imports (checked up front, e.g. by evaluate_robustness).
    requires: ClassVar[tuple[str, ...]] = ()
    # Progress hook (None: off): the iterative attacks call on_step(step, steps) after each of
    # their iterations, restarts included; set it on the instance. It must not touch tensors.
    on_step: Callable[[int, int], None] | None = None

    def __init__(
        self,
        model: nn.Module,
        *,
        seed: int | None = None,
        max_batch: int | None = None,
        eval_mode: bool | None = True,
    ) -> None:
        if not callable(model):
            raise ValueError(f"model must be a callable nn.Module, got {type(model).__name__}")
        self.model = model
        self.max_batch = None if max_batch is None else positive_int("max_batch", max_batch)
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

    def _set_threat(self, norm: str, eps: float | str | None, only: str | None = None) -> str:
        """Set and record the threat (eps None: the norm's default); return the canonical norm.
        ``only``: the one norm the attack supports (suites pass a norm to every attack)."""
        norm = canonical_norm(norm)
        if only is not None and norm != only:
            raise ValueError(f"{self.name!r} is an {only} attack here; got norm={norm!r}")
        self.threat = get_threat_model(norm, default_eps(norm) if eps is None else eps)
        self.eps = self.threat.eps
        self._record(norm=norm, eps=self.eps)
        return norm

    def settings(self) -> dict[str, Any]:
        """Every hyper-parameter, JSON-serialisable (eps as a float, the resolved seed)."""
        return dict(self._hyper)

    def _step_done(self, step: int, steps: int) -> None:
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
        inside the threat ball, same shape and dtype as x (else :class:`AttackContractError`)."""
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
        check_output(self.name, self.threat, x_adv, x)
        return x_adv

    @abstractmethod
    def _attack(self, x: Tensor, y: Tensor) -> Tensor:
        """x_adv for a validated, detached, non-empty batch (the model is already in its mode):
        finite, in [0, 1] and inside ``self.threat``'s ball, projected here where needed."""

    def logits(self, x: Tensor) -> Tensor:
        """``model(x)``, counted: adds x.shape[0] to ``forward_passes``."""
        out = self.model(x)
        self.forward_passes += x.shape[0]
        return out

    def logits_no_grad(self, x: Tensor) -> Tensor:
        """``model(x)`` without gradient, in calls of at most ``max_batch`` images (None: one)."""
        chunk = self.max_batch or x.shape[0]
        with torch.no_grad():
            return torch.cat([self.logits(x[s : s + chunk]) for s in range(0, x.shape[0], chunk)])

    def views(self, x: Tensor):
        """``model.forward_views(x)`` (CiiV's per-view outputs), counted like ``logits``."""
        out = self.model.forward_views(x)
        self.forward_passes += x.shape[0]
        return out
