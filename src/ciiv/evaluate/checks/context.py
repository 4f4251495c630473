"""The state the checks share: model, points, settings, cached measurements and attack runs.

A cached value is keyed on what defines it (never a display name) and computed under a seed
derived from the audit's seed and that key, so a check run alone gives the verdict it gives in the
full audit. Every attack run keeps its evidence for the bookkeeping check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from ciiv.attacks import RowVerdict, assume_rows, get_threat_model, known_rows, measure_rows
from ciiv.models import SupportsBPDA, predict
from ciiv.sampling import BPDA_SURROGATES

from ..engine import derive_seed, draw_predictions, run_attack, seeded
from .measure import Stability, eot_stability
from .settings import AuditSettings

__all__ = ["AttackRun", "AuditContext", "Comparison", "compare", "fixed_randomness", "worst_case"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Two forward passes of a deterministic model can differ by float noise (non-deterministic GPU
# kernels); only differences above this fraction of the logit scale count as randomness.
_RANDOM_RTOL = 1e-4


@dataclasses.dataclass
class Comparison:
    """acc(a) - acc(b) over the same examples with the standard error of the paired difference.

    ``violated`` means a exceeds b by more than ``tolerance`` = max(z * se, 1 / n): the sampling
    error of the two accuracies (prediction draws, random starts) and one example are forgiven.
    """

    diff: float
    se: float
    tolerance: float

    @property
    def violated(self) -> bool:
        return self.diff > self.tolerance

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in dataclasses.asdict(self).items()}


def compare(a: Tensor, b: Tensor, z: float) -> Comparison:
    """Compare correctness a [Da, N] and b [Db, N] (bool per draw and example, or per-example
    fractions of correct draws as a [1, N] float, see :func:`worst_case`)."""
    d = a.float().mean(0) - b.float().mean(0)
    n = d.numel()
    se = (d.std() / math.sqrt(n)).item() if n > 1 else 0.0
    return Comparison(diff=d.mean().item(), se=se, tolerance=max(z * se, 1.0 / n))


def worst_case(runs: list[AttackRun]) -> Tensor:
    """Per-example worst case over runs on the same points, [1, N] float: the minimum of per-run
    fractions of correct draws (a per-draw AND would count every unlucky draw of a random model
    as a success, biased down the more runs it spans)."""
    return torch.stack([r.correct.float().mean(0) for r in runs]).amin(0, keepdim=True)


@dataclasses.dataclass
class AttackRun:
    """One attack the audit ran, with its evidence.

    Attributes:
        label: the audit's name for the run, e.g. "pgd-50" or "square@fixed".
        attack: the registry name.
        target: which function was attacked and evaluated ("model", "fixed", a stand-in name).
        settings: the attack's ``settings()``.
        x: the clean points, x_adv the adversarial ones, [N, C, H, W].
        correct: [D, N] bool, prediction draws of the evaluated function on x_adv.
        forward_passes: images the attack says it sent through the model.
        queried: images the attacked module actually received (a forward hook).
        mode_restored: every module's train/eval flag was the same after the attack.
        eps, norm: the threat model the audit asked for.
    """

    label: str
    attack: str
    target: str
    settings: dict[str, Any]
    x: Tensor
    x_adv: Tensor
    correct: Tensor
    forward_passes: int
    queried: int
    mode_restored: bool
    eps: float
    norm: str

    @property
    def accuracy(self) -> float:
        """Mean per-draw accuracy on the adversarial points."""
        return self.correct.float().mean().item()


class _Fixed(nn.Module):
    """A random model with its randomness fixed: every forward pass reuses the same seeded draws,
    by ``model.fixed_randomness(seed)`` when the model has it (CiiV), else by reseeding the global
    generators of torch, ``random`` and NumPy around every pass (``engine.seeded``). A model with
    a private generator stays random; the audit verifies the result."""

    stochastic = False

    def __init__(self, model: nn.Module, seed: int) -> None:
        super().__init__()
        self.model = model
        self.seed = int(seed)

    def _seeded(self, device: torch.device) -> contextlib.AbstractContextManager:
        own = getattr(self.model, "fixed_randomness", None)
        return own(self.seed) if callable(own) else seeded(self.seed, device)

    def forward(self, x: Tensor) -> Tensor:
        with self._seeded(x.device):
            return self.model(x)

    def predict(self, x: Tensor) -> Tensor:
        with self._seeded(x.device):
            return predict(self.model, x)


class _FixedWithBPDA(_Fixed):
    """:class:`_Fixed` for a model with BPDA backwards: passes ``bpda`` through."""

    def bpda(self, surrogate: str):
        return self.model.bpda(surrogate)


def fixed_randomness(model: nn.Module, seed: int) -> nn.Module:
    """``model`` with its randomness fixed to ``seed`` (see :class:`_Fixed`); a new module that
    shares the model's parameters, with ``bpda`` only if the model has it."""
    return (_FixedWithBPDA if isinstance(model, SupportsBPDA) else _Fixed)(model, seed)


def _memoized(method: Callable[[AuditContext], Any]) -> property:
    """A read-only property computed once per audit by :meth:`AuditContext.memo` under the
    property's name."""
    return property(
        lambda self: self.memo(method.__name__, lambda: method(self)), doc=method.__doc__
    )


class AuditContext:
    """Model (pixels in [0, 1] -> logits, in eval mode), points x [N, C, H, W] in [0, 1] and
    labels y [N] int64 on its device, and settings of one audit, with everything the checks
    computed so far."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, settings: AuditSettings) -> None:
        self.model = model
        self.x = x
        self.y = y
        self.settings = settings
        self.threat = get_threat_model(settings.norm, settings.eps)
        k = min(settings.grad_examples, x.shape[0])
        self.grad_x, self.grad_y = x[:k], y[:k]  # the points of the gradient measurements
        self.runs: dict[tuple, AttackRun] = {}
        self._memo: dict[str, Any] = {}

    # -- basics ----------------------------------------------------------------------------

    def memo(self, key: str, factory: Callable[[], T]) -> T:
        """``factory()`` computed once per audit and cached under ``key`` (what defines the
        value), with the global generators seeded from the audit's seed and ``key`` meanwhile."""
        if key not in self._memo:
            with seeded(derive_seed(self.settings.seed, "memo", key), self.x.device):
                self._memo[key] = factory()
        return self._memo[key]

    @property
    def unbounded_eps(self) -> float:
        """A budget that reaches every image: 1 for Linf, the diagonal sqrt(C*H*W) of the cube
        for L2."""
        return 1.0 if self.settings.norm == "Linf" else math.sqrt(self.x[0].numel())

    # -- randomness ------------------------------------------------------------------------

    @_memoized
    def logit_draws(self) -> Tensor:
        """Logits of max(draws, 4) forward passes (separate calls, as the deployed model is
        queried) on the gradient points: [R, n, classes]."""
        return torch.stack([self.logits(self.grad_x) for _ in range(max(self.settings.draws, 4))])

    @_memoized
    def stochastic(self) -> bool:
        """Whether the same input gives different logits (measured, whatever the model says)."""
        return _differ(self.logit_draws, self.logit_draws[0])

    @_memoized
    def rows(self) -> RowVerdict:
        """Whether copies of an image stacked into one call are independent draws: the verdict of
        an enclosing evaluation that measured it, else the spread test on the gradient points,
        also for a model that declares ``independent_rows`` (the randomness check compares)."""
        if not self.stochastic:
            return RowVerdict(independent=True, source="deterministic")
        known = known_rows(self.model)
        if known is not None and known.source == "measured":
            return known
        return measure_rows(self.model, self.grad_x[:8], seed=self.settings.seed)

    def draw_layout(self) -> contextlib.AbstractContextManager:
        """A context in which the audit's attacks and measurements stack the draws of the audited
        model exactly as the evaluation would: as it declares, else as :attr:`rows` measured."""
        return assume_rows(self.model, self.rows)

    @_memoized
    def reproducible(self) -> bool:
        """Whether two forward passes of the gradient points under the same seed of the global
        generators (torch, ``random``, ``numpy``) give the same logits: what makes a seeded
        evaluation of the model repeatable."""

        def once() -> Tensor:
            with seeded(self.settings.seed + 1, self.x.device):
                return self.logits(self.grad_x)

        return not _differ(once(), once())

    @property
    def surrogates(self) -> tuple[str, ...]:
        """BPDA backwards the model offers (``model.bpda``), else ()."""
        return BPDA_SURROGATES if isinstance(self.model, SupportsBPDA) else ()

    def stability(self, surrogate: str | None = None) -> Stability:
        """EOT stability of the true gradient (None) or a BPDA one, on the gradient points."""
        x, y = self.grad_x, self.grad_y
        grid = self.settings.eot_grid if self.stochastic else (1,)

        def measure() -> Stability:
            with self.draw_layout():
                return eot_stability(self.model, x, y, grid, surrogate, self.settings.batch_size)

        return self.memo(f"stability:{surrogate}", measure)

    def eot(self, surrogate: str | None = None) -> int:
        """Draws per gradient for an attack with this backward: 1 for a deterministic model, else
        the E at which the gradient direction is stable, at most ``max_eot``."""
        if not self.stochastic:
            return 1
        needed = self.stability(surrogate).needed(self.settings.cosine_threshold)
        return min(needed or self.settings.max_eot, self.settings.max_eot)

    @_memoized
    def best_surrogate(self) -> str | None:
        """The backward whose EOT gradient stabilises first (None = the true gradient; ties go to
        it); when none stabilises, the one with the highest cosine at the largest E."""
        if not self.stochastic or not self.surrogates:
            return None
        options = [None, *self.surrogates]
        threshold = self.settings.cosine_threshold
        curves = {s: self.stability(s) for s in options}
        reached = [s for s in options if curves[s].needed(threshold) is not None]
        if reached:
            return min(reached, key=lambda s: curves[s].needed(threshold))
        return max(options, key=lambda s: curves[s].cosine[-1])

    # -- accuracy ----------------------------------------------------------------------------

    @torch.no_grad()
    def logits(self, points: Tensor) -> Tensor:
        """One forward pass of the audited model on points, in batches."""
        size = self.settings.batch_size
        return torch.cat([self.model(points[s : s + size]) for s in range(0, len(points), size)])

    def _draws(self, model: nn.Module) -> int:
        """Prediction draws per accuracy: settings.draws for the audited model if random, else 1."""
        return self.settings.draws if (model is self.model and self.stochastic) else 1

    def correct(self, points: Tensor, model: nn.Module | None = None) -> Tensor:
        """[D, N] bool: whether each of D predictions of ``model`` (default: the audited one) on
        ``points`` is right, drawn as the evaluation draws them (D: :meth:`_draws`)."""
        model = self.model if model is None else model
        draws = self._draws(model)
        with self.draw_layout() if draws > 1 else contextlib.nullcontext():
            return draw_predictions(model, points, draws, self.settings.batch_size) == self.y

    @_memoized
    def clean_correct(self) -> Tensor:
        """[D, N] bool: :meth:`correct` on the clean points."""
        return self.correct(self.x)

    def compare(self, a: Tensor, b: Tensor) -> Comparison:
        """acc(a) - acc(b), paired, with this audit's tolerance (see :class:`Comparison`)."""
        return compare(a, b, self.settings.z)

    # -- attacks -------------------------------------------------------------------------------

    def run(
        self,
        label: str,
        attack: str,
        *,
        target: str = "model",
        model: nn.Module | None = None,
        **hyper: Any,
    ) -> AttackRun:
        """Run attack ``attack`` (registry name) with ``hyper`` (``eps``/``norm`` default to the
        audit's) against ``model`` (default: the audited one; ``target`` names it) on all points
        through :func:`~ciiv.evaluate.engine.run_attack`, evaluated on the same model.

        Cached under (attack, target, draws, frozen hyper-parameters), which also seeds the attack
        and the model's draws, so a run gives the same points whichever check asks first;
        ``label`` only names it in the reports.
        """
        model = self.model if model is None else model
        draws = self._draws(model)
        hyper = {"eps": self.settings.eps, "norm": self.settings.norm, **hyper}
        key = (attack, target, draws, _frozen(hyper))
        if key in self.runs:
            return self.runs[key]
        start = time.perf_counter()
        # draw_layout() measures the rows first, outside the query count.
        with self.draw_layout(), seeded(derive_seed(self.settings.seed, *key), self.x.device):
            out = run_attack(
                model, attack, self.x, self.y, hyper=hyper, seed=self.settings.seed, key=key,
                draws=draws, max_batch=self.settings.batch_size,
            )  # fmt: skip
        elapsed = time.perf_counter() - start
        run = AttackRun(
            label=label,
            attack=attack,
            target=target,
            settings=out.settings,
            x=self.x,
            x_adv=out.x_adv,
            correct=out.preds == self.y,
            forward_passes=out.forward_passes,
            queried=out.queried,
            mode_restored=out.mode_restored,
            eps=float(hyper["eps"]),
            norm=str(hyper["norm"]),
        )
        logger.info("audit: %s accuracy %.3f (%.1fs)", label, run.accuracy, elapsed)
        self.runs[key] = run
        return run

    def pgd(
        self,
        steps: int | None = None,
        *,
        eps: float | None = None,
        restarts: int = 1,
        surrogate: str | None = None,
        eot: int | None = None,
        model: nn.Module | None = None,
        target: str = "model",
    ) -> AttackRun:
        """PGD with a random start and step 2.5 * eps / steps; EOT and backward as the audit
        measured unless given (the stochasticity of ``model`` decides whether EOT is needed)."""
        steps = self.settings.steps if steps is None else steps
        eps = self.settings.eps if eps is None else eps
        on_audited = model is None or model is self.model
        eot = (self.eot(surrogate) if on_audited else 1) if eot is None else eot
        hyper = {
            "eps": eps,
            "steps": steps,
            "step_size": 2.5 * eps / steps,
            "random_start": True,
            "restarts": restarts,
            "eot": eot,
            "bpda": surrogate,
        }
        return self.run(
            self._label("pgd", hyper, target), "pgd", target=target, model=model, **hyper
        )

    def fgsm(self, surrogate: str | None = None) -> AttackRun:
        """FGSM at the audit's budget (EOT as measured)."""
        hyper = {"eot": self.eot(surrogate), "bpda": surrogate}
        return self.run(self._label("fgsm", hyper), "fgsm", **hyper)

    def _label(self, kind: str, hyper: Mapping[str, Any], target: str = "model") -> str:
        """Readable run names from the hyper-parameters of :meth:`pgd` or :meth:`fgsm`: "pgd-50",
        "pgd-50-bpda-identity-eot8", "pgd-50@eps=0.5@fixed"."""
        steps, restarts, eot = hyper.get("steps"), hyper.get("restarts", 1), hyper["eot"]
        parts = [kind if steps is None else f"{kind}-{steps}"]
        if restarts > 1:
            parts.append(f"x{restarts}")
        if hyper["bpda"]:
            parts.append(f"bpda-{hyper['bpda']}")
        if eot > 1:
            parts.append(f"eot{eot}")
        name = "-".join(parts)
        if not math.isclose(hyper.get("eps", self.settings.eps), self.settings.eps):
            name += f"@eps={hyper['eps']:.4g}"
        if target != "model":
            name += f"@{target}"
        return name

    def white_box(self) -> list[AttackRun]:
        """The declared white-box baseline at the audit's budget: FGSM and PGD through every
        backward the model offers, then through :attr:`best_surrogate` the longest PGD of
        ``step_grid`` and PGD with ``restarts``. A fixed list, never "whatever ran so far", so the
        checks that compare against it give the same verdict alone and in the full audit."""
        s, best, backwards = self.settings, self.best_surrogate, [None, *self.surrogates]
        runs = [self.fgsm(b) for b in backwards] + [self.pgd(surrogate=b) for b in backwards]
        runs += [self.pgd(max(s.step_grid), surrogate=best)]
        runs += [self.pgd(restarts=s.restarts, surrogate=best)]
        return list({id(run): run for run in runs}.values())  # each run once


def _differ(a: Tensor, b: Tensor) -> bool:
    """Whether logits a and b differ by more than float noise (see ``_RANDOM_RTOL``)."""
    a, b = a.float(), b.float()
    return (a - b).abs().amax().item() > _RANDOM_RTOL * (1.0 + a.abs().amax().item())


def _frozen(hyper: Mapping[str, Any]) -> tuple:
    """Hyper-parameters as a sorted tuple, hashable and with a repr that is stable across runs
    (a module, e.g. a transfer attack's surrogate, by its class name)."""
    return tuple(
        sorted((k, type(v).__name__ if isinstance(v, nn.Module) else v) for k, v in hyper.items())
    )
