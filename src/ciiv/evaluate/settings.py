"""What an evaluation is asked to do (:class:`EvalSettings`) and what that became for one model and
one set of examples (:class:`EvalPlan`, whose ``config`` a resumed evaluation must match)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ciiv._mapping import build_dataclass
from ciiv.attacks.draws import RowVerdict
from ciiv.attacks.threat import parse_eps

from .default_audit import AuditPlan
from .protocols import Protocol, get_protocol
from .suites import ModelTraits, ResolvedAttack, Suite, get_suite

__all__ = ["DEFAULT_DRAWS", "SCHEMA", "EvalPlan", "EvalSettings"]

SCHEMA = "ciiv.eval/1"
# Prediction draws per input for a random model (R). Each draw is one forward pass of the deployed
# model; an example counts as correct only if all R draws are.
DEFAULT_DRAWS = 10

# Integer settings and their least value; the optional ones may be None (a default).
_INTS = {"eot": 1, "draws": 1, "max_batch": 1, "batch_size": 1, "audit_examples": 0, "seed": None}
_OPTIONAL = ("eot", "draws", "max_batch")


@dataclass(frozen=True)
class EvalSettings:
    """Every setting of :func:`~ciiv.evaluate.evaluate_robustness` that shapes its results.

    Attributes:
        suite: a :class:`Suite`; a suite name, suite file or mapping is looked up on creation.
        protocol: "full" (attacks query the evaluated function with EOT) or "paper" (centre view).
        eps: the budget (a float; "8/255" is parsed); None: the suite's for ``dataset``.
        eot, draws: E, gradient samples per step under the full protocol, and R, prediction draws
            per input (None: ``DEFAULT_EOT``, :data:`DEFAULT_DRAWS`); a deterministic model always
            gets 1 of each.
        seed: fixes every random draw (per batch, derived from the seed and the batch index).
        batch_size: examples per batch (the unit of resumption).
        max_batch: most images per model call inside the gradient attacks; None: the device's
            fastest (:func:`ciiv.attacks.default_max_batch`).
        dataset: dataset name choosing the suite's budget (e.g. "mnist" -> 0.3 for Linf).
        audit: the summary holds an audit (the default one, or one computed before).
        audit_examples: the default audit runs on at most the first ``audit_examples`` examples.
    """

    suite: Suite | str | Mapping[str, Any] = "standard-linf"
    protocol: str = "full"
    eps: float | str | None = None
    eot: int | None = None
    draws: int | None = None
    seed: int = 0
    batch_size: int = 128
    max_batch: int | None = None
    dataset: str | None = None
    audit: bool = True
    audit_examples: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "suite", get_suite(self.suite))
        get_protocol(self.protocol)
        if self.eps is not None:
            object.__setattr__(self, "eps", parse_eps(self.eps))
        for name, low in _INTS.items():
            value, optional = getattr(self, name), name in _OPTIONAL
            if value is None and optional:
                continue
            bound = "" if low is None else f" >= {low}"
            not_int = isinstance(value, bool) or not isinstance(value, int)
            if not_int or (low is not None and value < low):
                raise ValueError(
                    f"{name} must be an int{bound}{' or None' * optional}, got {value!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (the suite as :meth:`Suite.to_dict`) that :meth:`from_dict` reads
        back to equal settings."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**values, "suite": self.suite.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalSettings:
        """Settings from a mapping like :meth:`to_dict`'s (e.g. ``config.json["settings"]``);
        unknown keys and values of the wrong type raise a ValueError that names them."""
        return build_dataclass(cls, data, what="evaluation setting")


@dataclass(frozen=True)
class EvalPlan:
    """An evaluation made concrete for one model and one set of examples, before any batch runs.

    ``settings`` has every default resolved (``eps`` is the budget; ``config.json["settings"]``);
    ``protocol`` is the one run (full for the paper protocol on a model without views;
    ``protocol_note`` says so); ``skipped`` maps entry names to why not; ``layout`` is how the
    model's draws go through it; ``indices`` the examples' indices in the source split; ``passes``
    the forward passes before the batches by source, summed over the processes; ``audit`` the
    default audit planned after the batches (None: none); ``config`` is ``config.json``.
    """

    settings: EvalSettings
    protocol: Protocol
    protocol_note: str
    attacks: list[ResolvedAttack]
    skipped: dict[str, str]
    traits: ModelTraits
    layout: RowVerdict
    device: torch.device
    indices: list[int]
    num_classes: int
    passes: dict[str, int]
    audit: AuditPlan | None
    config: dict[str, Any]

    @property
    def n(self) -> int:
        return len(self.indices)

    def suite_bound(self) -> int:
        """Upper bound on the suite's forward passes: every attack on every example, R prediction
        draws on the clean points and after every attack, plus the passes before the batches."""
        draws = self.settings.draws
        per_example = draws + sum(a.queries_per_example() + draws for a in self.attacks)
        return self.n * per_example + sum(self.passes.values())
