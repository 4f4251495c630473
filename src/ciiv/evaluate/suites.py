"""Attack suites: named, data-only presets of the attacks an evaluation runs (SPEC section 6).

A :class:`Suite` has a threat model (norm and a per-dataset budget eps) and an ordered list of
:class:`AttackEntry` (an attack of the :mod:`ciiv.attacks` registry and its hyper-parameters) and
:class:`Sweep` (one standalone entry per eps and/or step count). ``worst_case=True`` entries form
the worst-case chain (run in order on the points still standing; suite norm, eps within the
budget); the others are standalone, and count for the worst case too when inside the threat model
(docs/evaluation.md, "Worst case and per-attack numbers"). Suites read and write YAML-like
mappings (unknown keys rejected; a suite file works wherever a name does), and
:func:`resolve_suite` makes one concrete for a dataset, protocol, EOT count and model.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ciiv._checks import positive_int
from ciiv._mapping import build_dataclass, check_keys
from ciiv.attacks.registry import check_attack_arguments
from ciiv.attacks.threat import default_budget, parse_eps

from .protocols import get_protocol

__all__ = [
    "DEFAULT_EOT",
    "AttackEntry",
    "ModelTraits",
    "ResolvedAttack",
    "Suite",
    "Sweep",
    "format_eps",
    "get_suite",
    "list_suites",
    "load_suite_file",
    "register_suite",
    "resolve_suite",
]

# Gradient samples averaged per attack step under the full protocol. benchmarks/eot_convergence.py
# measures robust accuracy against E on a CiiV model; docs/evaluation.md records the curve.
DEFAULT_EOT = 8

NORMS = ("Linf", "L2")
# Model traits an entry may require, and why it is skipped on a model without them.
_UNMET = {
    "views": "needs a CiiV model (views, BPDA); this model has none",
    "stochastic": "needs a random model; on a deterministic one it repeats another entry",
}
# "protocol": E under the full protocol, 1 under the paper's; "E": E under both (EOT-PGD entries).
EOT_MODES = ("protocol", "E")


def format_eps(eps: float) -> str:
    """Readable budget: ``8/255`` when eps is a whole number of 1/255 steps, else ``0.3``."""
    scaled = eps * 255
    if abs(scaled - round(scaled)) < 1e-6 and round(scaled) > 0:
        return f"{round(scaled)}/255"
    return f"{eps:g}"


@dataclass(frozen=True)
class AttackEntry:
    """One attack of a suite.

    Attributes:
        name: unique label in the suite (a key of the results), e.g. ``"pgd-20"``.
        attack: name in the :mod:`ciiv.attacks` registry.
        hyper: other hyper-parameters passed to ``create_attack`` (``steps``, ``bpda``, ...).
        eps: a fixed budget (float or ``"16/255"``); None uses the suite's budget, so ``eps=``
            overrides of the budget reach it.
        norm: "Linf" or "L2"; None uses the suite's.
        step_fraction: ``step_size = step_fraction * eps`` (keeps the step right when eps changes);
            None leaves the step to ``hyper`` or the attack's default.
        eot: None (no EOT for this attack), "protocol" (E under the full protocol, 1 under the
            paper's) or "E" (E under both: the named EOT attacks). A deterministic model always
            gets 1.
        eot_hyper: how the attack expresses EOT when it takes no ``eot`` argument: these
            hyper-parameters are added when the resolved E is above 1 (AutoAttack:
            ``{"version": "rand"}``, its EOT-20 version for randomized defences).
        worst_case: part of the worst-case chain (True) or standalone (False).
        requires: model traits the entry needs: "views" (a CiiV model: BPDA, adaptive loss) or
            "stochastic" (a random model: EOT-only entries). Entries whose needs are unmet are
            skipped and listed with the reason in the summary.
        sweep_point: set by :meth:`Sweep.expand` only (never in a suite file): ``{"family": sweep
            name, "axes": {"eps"/"steps": value}}``, the summary's ``sweep`` that reports read.
    """

    name: str
    attack: str
    hyper: Mapping[str, Any] = field(default_factory=dict)
    eps: float | str | None = None
    norm: str | None = None
    step_fraction: float | None = None
    eot: Literal["protocol", "E"] | None = None
    eot_hyper: Mapping[str, Any] = field(default_factory=dict)
    worst_case: bool = True
    requires: tuple[str, ...] = ()
    sweep_point: Mapping[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "\n\t"):
            raise ValueError(
                f"attack entry name must be a non-empty single line, got {self.name!r}"
            )
        if self.norm is not None and self.norm not in NORMS:
            raise ValueError(f"{self.name}: unknown norm {self.norm!r}; valid: {', '.join(NORMS)}")
        unknown = sorted(set(self.requires) - set(_UNMET))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown requirement(s) {unknown}; valid: {', '.join(_UNMET)}"
            )
        if self.eot is not None and self.eot not in EOT_MODES:
            raise ValueError(f"{self.name}: eot must be None, 'protocol' or 'E'")
        reserved = {"eps", "norm", "eot", "seed"} & set(self.hyper)
        if reserved:
            raise ValueError(
                f"{self.name}: set {sorted(reserved)} through the entry's own fields, not hyper"
            )
        if self.eps is not None:
            parse_eps(self.eps)
        if self.eot_hyper and self.eot is None:
            raise ValueError(f"{self.name}: eot_hyper needs an eot mode ('protocol' or 'E')")
        object.__setattr__(self, "hyper", dict(self.hyper))
        object.__setattr__(self, "eot_hyper", dict(self.eot_hyper))
        object.__setattr__(self, "requires", tuple(self.requires))


@dataclass(frozen=True)
class Sweep:
    """A family of standalone entries, one per value of eps and/or steps (their product).

    Entry names are ``"<name>@eps=8/255"``, ``"<name>@steps=50"`` or both joined by ``,``.
    """

    name: str
    base: AttackEntry
    eps: tuple[float | str, ...] = ()
    steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.eps and not self.steps:
            raise ValueError(f"sweep {self.name!r} needs eps and/or steps values")
        for value in self.eps:
            parse_eps(value)
        if any(not isinstance(s, int) or s < 1 for s in self.steps):
            raise ValueError(f"sweep {self.name!r}: steps must be positive ints, got {self.steps}")
        object.__setattr__(self, "eps", tuple(self.eps))
        object.__setattr__(self, "steps", tuple(self.steps))

    def expand(self) -> list[AttackEntry]:
        entries = []
        eps_values = [parse_eps(e) for e in self.eps] or [None]
        for eps, steps in itertools.product(eps_values, self.steps or [None]):
            axes = {k: v for k, v in (("eps", eps), ("steps", steps)) if v is not None}
            label = ",".join(f"{k}={format_eps(v) if k == 'eps' else v}" for k, v in axes.items())
            entries.append(
                dataclasses.replace(
                    self.base,
                    name=f"{self.name}@{label}",
                    hyper={**self.base.hyper, **({} if steps is None else {"steps": steps})},
                    eps=self.base.eps if eps is None else eps,
                    worst_case=False,
                    sweep_point={"family": self.name, "axes": axes},
                )
            )
        return entries


@dataclass(frozen=True)
class Suite:
    """A named attack suite.

    Attributes:
        name, description: registry name; one line for listings and the summary.
        norm: the threat model's norm, "Linf" or "L2".
        budget: eps per dataset name, with a ``"default"`` key for every other dataset.
        entries: attacks and sweeps, in run order (the worst-case chain runs cheap ones first,
            so the expensive ones see fewer standing points).
    """

    name: str
    description: str
    norm: str
    budget: Mapping[str, float | str]
    entries: tuple[AttackEntry | Sweep, ...]

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"suite {self.name!r}: unknown norm {self.norm!r}; valid: {NORMS}")
        if "default" not in self.budget:
            raise ValueError(f"suite {self.name!r}: budget needs a 'default' key")
        for value in self.budget.values():
            parse_eps(value)
        object.__setattr__(self, "budget", dict(self.budget))
        object.__setattr__(self, "entries", tuple(self.entries))
        names = [e.name for e in self.expanded()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"suite {self.name!r}: duplicate entry names {duplicates}")
        if not names:
            raise ValueError(f"suite {self.name!r} has no entries")

    def expanded(self) -> list[AttackEntry]:
        """Entries with sweeps expanded, in run order."""
        out: list[AttackEntry] = []
        for entry in self.entries:
            out.extend(entry.expand() if isinstance(entry, Sweep) else [entry])
        return out

    def eps_for(self, dataset: str | None) -> float:
        """The budget for ``dataset`` (its own key, else ``"default"``)."""
        return parse_eps(self.budget.get(dataset or "default", self.budget["default"]))

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-ready mapping that :meth:`from_dict` reads back."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        entries = [_entry_to_dict(e) for e in self.entries]
        return {**values, "budget": dict(self.budget), "entries": entries}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Suite:
        """Build a suite from a mapping like :meth:`to_dict`'s; unknown keys raise ValueError.

        An entry with a ``sweep`` key is a :class:`Sweep`: ``{"sweep": name, "eps": [...],
        "steps": [...], "base": {entry}}``.
        """
        check_keys(data, [f.name for f in dataclasses.fields(cls)], "suite key")
        raw = data.get("entries", ())
        if isinstance(raw, str | Mapping) or not all(isinstance(e, Mapping) for e in raw):
            raise ValueError("suite entries must be a list of mappings (attack entries, sweeps)")
        entries = tuple(_entry_from_dict(e) for e in raw)
        values = {"description": "", **data, "entries": entries}
        return build_dataclass(cls, values, what="suite key")


def _entry_to_dict(entry: AttackEntry | Sweep) -> dict[str, Any]:
    if isinstance(entry, Sweep):
        return {
            "sweep": entry.name,
            "base": _entry_to_dict(entry.base),
            "eps": list(entry.eps),
            "steps": list(entry.steps),
        }
    out = dataclasses.asdict(entry)
    out["requires"] = list(entry.requires)
    del out["sweep_point"]
    return out


def _entry_from_dict(data: Mapping[str, Any]) -> AttackEntry | Sweep:
    if "sweep" not in data:
        keys = [f.name for f in dataclasses.fields(AttackEntry) if f.name != "sweep_point"]
        check_keys(data, keys, "attack entry key")
        return build_dataclass(AttackEntry, data, what="attack entry key")
    check_keys(data, ("sweep", "base", "eps", "steps"), "sweep key")
    values = {"name": data["sweep"], **{k: v for k, v in data.items() if k != "sweep"}}
    if "base" in values:
        values["base"] = _entry_from_dict(values["base"])
    return build_dataclass(Sweep, values, what="sweep key")


def load_suite_file(path: str | Path) -> Suite:
    """A suite from a YAML (or JSON) file holding a :meth:`Suite.from_dict` mapping. Every
    entry's attack and hyper-parameter names are checked here, so a typo fails before an
    evaluation starts; a ValueError names the file and what is wrong."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read suite file {path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(
            f"suite file {path} must hold a mapping with name, description, norm, budget and "
            "entries (the form of Suite.from_dict; docs/evaluation.md, 'Custom suites')"
        )
    try:
        suite = Suite.from_dict(data)
        for entry in suite.expanded():
            check_attack_arguments(entry.attack, entry.hyper)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"suite file {path}: {exc}") from None
    return suite


_SUITES: dict[str, Suite] = {}


def register_suite(suite: Suite) -> Suite:
    """Add ``suite`` to the registry under ``suite.name`` (names are unique)."""
    if suite.name in _SUITES:
        raise ValueError(f"suite {suite.name!r} is already registered")
    _SUITES[suite.name] = suite
    return suite


def list_suites() -> list[str]:
    """Registered suite names, sorted."""
    return sorted(_SUITES)


def get_suite(suite: str | Path | Suite | Mapping[str, Any]) -> Suite:
    """A registered suite by name, a suite file (a path ending in .yaml, .yml or .json, see
    :func:`load_suite_file`), a :class:`Suite` as is, or a mapping through ``from_dict``."""
    if isinstance(suite, Suite):
        return suite
    if isinstance(suite, Mapping):
        return Suite.from_dict(suite)
    if suite in _SUITES:
        return _SUITES[suite]
    if isinstance(suite, Path) or str(suite).lower().endswith((".yaml", ".yml", ".json")):
        return load_suite_file(suite)
    raise ValueError(
        f"unknown suite {suite!r}; valid: {', '.join(list_suites())}, or a YAML file "
        "(name.yaml) holding a suite mapping"
    )


@dataclass(frozen=True)
class ModelTraits:
    """What the evaluation found out about the model: whether its prediction is random
    (``stochastic``, declared or detected) and whether it has ``views``
    (:class:`~ciiv.models.MultiView`, as CiiV has)."""

    stochastic: bool
    views: bool


@dataclass(frozen=True)
class ResolvedAttack:
    """A suite entry made concrete for one evaluation.

    Attributes:
        name, attack: the entry's name and the registry name of its attack.
        hyper: every keyword passed to ``create_attack`` except the per-batch ``seed``.
        norm, eps: the ball x_adv must stay in (checked after every call).
        steps: iterations, or None for attacks without a step count.
        worst_case: role (see the module docstring): part of the chain, or standalone.
        in_threat_model: same norm as the suite and eps within its budget. Such an entry counts
            for the worst case even when standalone (a point it breaks is not robust).
        protocol_views: "centre" when the attack queries the centre view only (paper protocol on a
            CiiV model), else "all".
        sweep: the entry's ``sweep_point`` (None outside a sweep).
    """

    name: str
    attack: str
    hyper: dict[str, Any]
    norm: str
    eps: float
    steps: int | None
    worst_case: bool
    in_threat_model: bool
    protocol_views: str
    sweep: Mapping[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the summary."""
        return {
            "attack": self.attack,
            "norm": self.norm,
            "eps": self.eps,
            "eps_label": format_eps(self.eps),
            "steps": self.steps,
            "worst_case": self.worst_case,
            "in_threat_model": self.in_threat_model,
            "views": self.protocol_views,
            "hyper": dict(self.hyper),
            "sweep": self.sweep,
        }

    def queries_per_example(self) -> int:
        """Images this attack sends through the model per example, estimated from its settings:
        gradient steps (+ 1 with a random start) x EOT x restarts (x 2 * samples for SPSA), a
        query budget, or noise draws. Exact for FGSM and PGD, an estimate for attacks whose
        queries depend on more than their settings (AutoAttack, C&W)."""
        hyper = self.hyper
        if "n_queries" in hyper:
            return int(hyper["n_queries"])
        if "draws" in hyper and "steps" not in hyper:
            return int(hyper["draws"])
        steps = int(hyper.get("steps", 1)) + (1 if hyper.get("random_start") else 0)
        samples = int(hyper.get("nb_sample", 1)) * 2 if "nb_sample" in hyper else 1
        return steps * int(hyper.get("eot", 1)) * samples * int(hyper.get("restarts", 1))


def resolve_suite(
    suite: Suite,
    *,
    protocol: str,
    traits: ModelTraits,
    dataset: str | None = None,
    eps: float | str | None = None,
    eot: int = DEFAULT_EOT,
) -> tuple[list[ResolvedAttack], dict[str, str], float]:
    """Concrete attacks for one evaluation: (attacks in run order, {skipped entry: reason}, the
    budget used).

    ``dataset`` chooses the budget (None: the suite's default) unless ``eps`` overrides it (an
    entry with a fixed eps keeps it). Entries whose ``requires`` the model's ``traits`` do not
    meet are skipped. ``eot`` is E, gradient samples per step where the entry and ``protocol``
    ("full" or "paper") ask for EOT; a deterministic model gets 1 (more samples of a fixed
    function change nothing).
    """
    proto = get_protocol(protocol).effective(traits)
    positive_int("eot", eot)
    budget = suite.eps_for(dataset) if eps is None else parse_eps(eps)
    resolved: list[ResolvedAttack] = []
    skipped: dict[str, str] = {}
    for entry in suite.expanded():
        unmet = (why for n, why in _UNMET.items() if n in entry.requires and not getattr(traits, n))
        reason = next(unmet, None) or proto.unsupported(entry)
        if reason:
            skipped[entry.name] = reason
            continue
        entry_eps = budget if entry.eps is None else parse_eps(entry.eps)
        norm = entry.norm or suite.norm
        inside = norm == suite.norm and entry_eps <= budget * (1 + 1e-9)
        if entry.worst_case and not inside:
            raise ValueError(
                f"suite {suite.name!r}: worst-case entry {entry.name!r} ({norm}, eps "
                f"{format_eps(entry_eps)}) lies outside the threat model ({suite.norm}, eps "
                f"{format_eps(budget)}); mark it worst_case=False"
            )
        hyper = {"norm": norm, "eps": entry_eps, **entry.hyper}
        if entry.step_fraction is not None:
            hyper["step_size"] = entry.step_fraction * entry_eps
        if entry.eot is not None:
            wanted = entry.eot == "E" or proto.eot_by_default
            draws = eot if wanted and traits.stochastic else 1
            if not entry.eot_hyper:
                hyper["eot"] = draws
            elif draws > 1:
                hyper.update(entry.eot_hyper)
        resolved.append(
            ResolvedAttack(
                name=entry.name,
                attack=entry.attack,
                hyper=hyper,
                norm=norm,
                eps=entry_eps,
                steps=hyper.get("steps"),
                worst_case=entry.worst_case,
                in_threat_model=inside,
                protocol_views=proto.attack_views(),
                sweep=entry.sweep_point,
            )
        )
    return resolved, skipped, budget


# ---------------------------------------------------------------------------------------------
# Built-in suites. eps strings are on the 0-255 scale of SPEC section 6.

_LINF_BUDGET = default_budget("Linf")
_L2_BUDGET = default_budget("L2")


def _pgd(name: str, steps: int, fraction: float = 0.25, **hyper: Any) -> AttackEntry:
    """PGD with a random start, EOT per protocol, step = fraction * eps (2/255 at 8/255)."""
    requires = ("views",) if hyper.get("bpda") or hyper.get("loss") == "adaptive" else ()
    return AttackEntry(
        name=name,
        attack="pgd",
        hyper={"steps": steps, "random_start": True, **hyper},
        step_fraction=fraction,
        eot="protocol",
        requires=requires,
    )


_FGSM = AttackEntry(name="fgsm", attack="fgsm", eot="protocol")
# AutoAttack's own EOT version ("rand": APGD-CE/DLR with 20 draws) where the protocol asks for EOT.
_AUTOATTACK = AttackEntry(
    name="autoattack", attack="autoattack", eot="protocol", eot_hyper={"version": "rand"}
)
_NOISE = tuple(
    AttackEntry(
        name=f"noise-{kind}",
        attack=f"{kind}_noise",
        hyper={"sigma": 0.1},
        eps="16/255",
        norm="Linf",
        worst_case=False,
    )
    for kind in ("gaussian", "uniform")
)
_SPSA = AttackEntry(
    name="spsa", attack="spsa", hyper={"delta": 0.1, "nb_sample": 16, "steps": 20, "lr": 0.1}
)
_RANDOM_SEARCH = AttackEntry(name="random-search", attack="random_search", hyper={"draws": 100})
# PGD-20 through the true gradient and both BPDA backwards (standard-linf and ciiv-adaptive).
_PGD_20_BPDA = (
    _pgd("pgd-20", 20),
    _pgd("pgd-20-bpda-identity", 20, bpda="identity"),
    _pgd("pgd-20-bpda-smooth", 20, bpda="smooth"),
)
_TARGETED = tuple(
    _pgd(f"pgd-20-targeted-{target.replace('_', '-')}", 20, targeted=target)
    for target in ("random", "most_likely", "least_likely")
)


def _paper_suite(name: str, dataset: str, linf: float | str, l2: float | str, fgsm_eps, spsa_eps):
    """The attack list of the authors' code (SPEC section 6) at one dataset's budgets."""
    l2_standalone = {"eps": l2, "norm": "L2", "worst_case": False}
    return Suite(
        name=name,
        description=(
            f"the paper's attacks at {dataset} budgets: FGSM and PGD-step sweeps, EOT/BPDA/"
            "adaptive PGD, targeted PGD, SPSA, AutoAttack Linf and L2, C&W, noise, random search"
        ),
        norm="Linf",
        budget={"default": linf},
        entries=(
            _FGSM,
            _pgd("pgd-20", 20),
            dataclasses.replace(_pgd("eot-pgd-20", 20), eot="E", requires=("stochastic",)),
            _pgd("bpda-pgd-20", 20, bpda="identity"),
            _pgd("adaptive-pgd-20", 20, bpda="identity", loss="adaptive"),
            *_TARGETED,
            _RANDOM_SEARCH,
            _AUTOATTACK,
            Sweep(name="fgsm", base=_FGSM, eps=fgsm_eps),
            Sweep(name="pgd", base=_pgd("pgd", 20), steps=(10, 20, 50, 100, 200)),
            dataclasses.replace(_pgd("pgd-l2-20", 20), **l2_standalone),
            AttackEntry(name="cw-l2", attack="cw", **l2_standalone),
            dataclasses.replace(_AUTOATTACK, name="autoattack-l2", **l2_standalone),
            dataclasses.replace(_SPSA, eps=spsa_eps, worst_case=False),
            *_NOISE,
        ),
    )


for _suite in (
    Suite(
        name="quick",
        description="smoke test: FGSM, PGD-10 and (CiiV) BPDA-PGD-10 at the Linf budget",
        norm="Linf",
        budget=_LINF_BUDGET,
        entries=(_FGSM, _pgd("pgd-10", 10), _pgd("pgd-10-bpda", 10, bpda="identity")),
    ),
    Suite(
        name="standard-linf",
        description="Linf worst case: FGSM, PGD-20, BPDA and adaptive PGD, PGD-100, AutoAttack",
        norm="Linf",
        budget=_LINF_BUDGET,
        entries=(
            _FGSM,
            *_PGD_20_BPDA,
            _pgd("pgd-20-adaptive", 20, bpda="identity", loss="adaptive"),
            _pgd("pgd-100", 100, fraction=0.1),
            _AUTOATTACK,
        ),
    ),
    Suite(
        name="standard-l2",
        description="L2 worst case: PGD-L2-20, BPDA-PGD-L2, C&W-L2, AutoAttack-L2",
        norm="L2",
        budget=_L2_BUDGET,
        entries=(
            _pgd("pgd-l2-20", 20),
            _pgd("pgd-l2-20-bpda-identity", 20, bpda="identity"),
            AttackEntry(name="cw-l2", attack="cw"),
            dataclasses.replace(_AUTOATTACK, name="autoattack-l2"),
        ),
    ),
    Suite(
        name="ciiv-adaptive",
        description=(
            "adaptive attacks for random multi-view models: EOT, BPDA, consistency-loss PGD, "
            "long PGD, targeted PGD and gradient-free SPSA / Square / random search"
        ),
        norm="Linf",
        budget=_LINF_BUDGET,
        entries=(
            *_PGD_20_BPDA,
            _pgd("pgd-50-adaptive", 50, fraction=0.1, bpda="identity", loss="adaptive"),
            _pgd("pgd-100-bpda-identity", 100, fraction=0.1, bpda="identity"),
            _pgd("pgd-20-targeted-most-likely", 20, bpda="identity", targeted="most_likely"),
            _SPSA,
            AttackEntry(name="square", attack="square", hyper={"n_queries": 1000}),
            _RANDOM_SEARCH,
        ),
    ),
    _paper_suite(
        "paper-cifar10",
        "CIFAR-10",
        linf="8/255",
        l2="128/255",
        fgsm_eps=("8/255", "16/255", "32/255", "64/255", "96/255"),
        spsa_eps="16/255",
    ),
    _paper_suite(
        "paper-mnist",
        "MNIST",
        linf=0.3,
        l2=2.0,
        fgsm_eps=("32/255", "64/255", 0.2, 0.3),
        spsa_eps=0.3,
    ),
):
    register_suite(_suite)
