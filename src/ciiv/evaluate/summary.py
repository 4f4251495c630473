"""From per-example rows to accuracies: the worst-case and randomness accounting.

Rows are the dicts of ``examples.jsonl``: per input (clean, each attack) the R predicted labels and
the number of correct draws. An example is correct under an input only if **all R draws** are,
and robust only if correct on clean input and under every counted attack (docs/evaluation.md,
"Random predictions: R draws and the rule"); the per-draw mean is taken per example at the input
that broke it. Intervals are 95 %: Wilson for fractions of examples, normal over examples for
per-draw means. :func:`build_summary` turns rows and batch records into ``summary.json``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ciiv.versions import software_versions

from .settings import SCHEMA, EvalPlan
from .suites import format_eps

__all__ = [
    "accuracy_stats",
    "build_summary",
    "mean_interval",
    "wilson_interval",
    "worst_case_stats",
]

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion successes / n (n = 0 -> (0, 1))."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high): normal 95 % interval of the mean of values in [0, 1], clipped."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0, 1.0
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(var / n)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def accuracy_stats(all_correct: Sequence[bool], fractions: Sequence[float]) -> dict[str, Any]:
    """Accuracy block of the summary from per-example indicators and correct-draw fractions."""
    n = len(all_correct)
    k = sum(bool(c) for c in all_correct)
    mean, low, high = mean_interval(fractions)
    return {
        "accuracy": k / n if n else 0.0,
        "ci95": list(wilson_interval(k, n)),
        "per_draw": {"mean": mean, "ci95": [low, high]},
        "n": n,
    }


def worst_case_stats(
    rows: Sequence[dict[str, Any]], entries: Sequence[tuple[str, bool, bool]], draws: int
) -> dict[str, Any]:
    """Clean, per-attack and worst-case accuracies from rows (any order) with R = ``draws``.

    ``entries`` holds ``(name, chain, counts)`` per attack in run order: ``chain`` for the
    worst-case chain (attacked only while standing), ``counts`` when the attack counts for the
    worst case (every chain entry, and standalone entries inside the threat model).

    Returns:
        ``{"clean": block, "attacks": {name: block}, "robust": block, "broken_by": {name: count}}``
        where a block is :func:`accuracy_stats`' dict. For a chain attack the block is the robust
        accuracy *after* it (cumulative over the counted attacks up to it, as AutoAttack logs it);
        for a standalone attack it is its own accuracy. ``broken_by`` counts, per counted attack,
        the points it broke first ("clean" for points wrong on clean input).
    """
    clean_ok = [r["clean"]["correct"] == draws for r in rows]
    clean_frac = [r["clean"]["correct"] / draws for r in rows]
    out: dict[str, Any] = {"clean": accuracy_stats(clean_ok, clean_frac), "attacks": {}}
    standing, worst_frac = list(clean_ok), list(clean_frac)
    broken_by: dict[str, int] = {"clean": len(rows) - sum(clean_ok)}
    for name, chain, counts in entries:
        own_ok, own_frac = [], []
        for i, row in enumerate(rows):
            outcome = row["attacks"].get(name)
            if outcome is None and chain and standing[i]:
                raise ValueError(
                    f"example {row['index']} is standing but has no outcome for {name!r}; "
                    "the rows are incomplete"
                )
            own_ok.append(outcome is not None and outcome["correct"] == draws)
            own_frac.append(clean_frac[i] if outcome is None else outcome["correct"] / draws)
            if counts and outcome is not None:
                worst_frac[i] = min(worst_frac[i], own_frac[i])
        if counts:
            broken_by[name] = sum(up and not ok for up, ok in zip(standing, own_ok, strict=True))
            standing = [up and ok for up, ok in zip(standing, own_ok, strict=True)]
        block = (standing, worst_frac) if chain else (own_ok, own_frac)
        out["attacks"][name] = accuracy_stats(*block)
    return {**out, "robust": accuracy_stats(standing, worst_frac), "broken_by": broken_by}


def _totals(recs: Sequence[dict[str, Any]], key: str) -> Counter:
    """Per-attack sums of the batch records' ``key`` block."""
    totals: Counter = Counter()
    for rec in recs:
        totals.update(rec[key])
    return totals


def build_summary(
    plan: EvalPlan,
    rows: Sequence[dict[str, Any]],
    recs: Sequence[dict[str, Any]],
    *,
    model: dict[str, Any],
    run_info: Mapping[str, Any] | None,
    wall: float,
) -> dict[str, Any]:
    """The content of ``summary.json`` (docs/evaluation.md lists its keys) from every row and
    batch record of the evaluation ``plan``; ``model`` describes the model, ``wall`` is the
    seconds this session took."""
    settings, attacks = plan.settings, plan.attacks
    draws, budget = settings.draws, settings.eps
    entries = [(a.name, a.worst_case, a.worst_case or a.in_threat_model) for a in attacks]
    stats = worst_case_stats(rows, entries, draws)
    passes = {**plan.passes, "predictions": 0, **_totals(recs, "forward_passes")}
    attacked, seconds = _totals(recs, "attacked"), _totals(recs, "elapsed")
    first = recs[0]["settings"] if recs else {}
    # Attack seeds differ per batch; the summary gives the rule, examples.jsonl's batches the rest.
    attack_settings = {
        name: {**value, "seed": "derive_seed(seed, 'attack', batch, name)"}
        if "seed" in value
        else dict(value)
        for name, value in first.items()
    }
    details = {}
    for spec in attacks:
        block = stats["attacks"][spec.name]
        details[spec.name] = {
            **spec.describe(),
            "role": "worst_case" if spec.worst_case else "standalone",
            "counts_for_worst_case": spec.worst_case or spec.in_threat_model,
            **{key: block[key] for key in ("accuracy", "ci95", "per_draw")},
            "attacked": attacked.get(spec.name, 0),
            "newly_broken": stats["broken_by"].get(spec.name),
            "forward_passes": passes.get(spec.name, 0),
            "elapsed_s": float(seconds.get(spec.name, 0.0)),
        }
    clean, robust = stats["clean"], stats["robust"]
    eot_used = {a.name: int(a.hyper["eot"]) for a in attacks if "eot" in a.hyper}
    suite = settings.suite
    return {
        "schema": SCHEMA,
        "suite": suite.name,
        "suite_description": suite.description,
        "threat_model": {"norm": suite.norm, "eps": budget, "eps_label": format_eps(budget)},
        "protocol": settings.protocol,
        "protocol_note": plan.protocol_note,
        # The EOT the attacks used (under the paper protocol most take 1 whatever E was asked).
        "eot": max(eot_used.values(), default=1),
        "eot_requested": settings.eot,
        "eot_by_attack": eot_used,
        "draws": draws,
        "rule": (
            "an example is correct under an input only if all `draws` predictions are correct; "
            "robust = correct on clean input and under every worst-case attack; the worst-case "
            "chain attacks only the points still standing"
        ),
        "n_examples": len(rows),
        "seed": settings.seed,
        "batch_size": settings.batch_size,
        "dataset": settings.dataset,
        "num_classes": plan.num_classes,  # the model's K: chance accuracy is 1 / K
        "clean_accuracy": clean["accuracy"],
        "clean_accuracy_ci95": clean["ci95"],
        "clean_accuracy_per_draw": clean["per_draw"],
        "robust_accuracy": robust["accuracy"],
        "robust_accuracy_ci95": robust["ci95"],
        "robust_accuracy_per_draw": robust["per_draw"],
        "per_attack": {name: block["accuracy"] for name, block in stats["attacks"].items()},
        "worst_case_chain": [a.name for a in attacks if a.worst_case],
        "standalone": [a.name for a in attacks if not a.worst_case],
        "broken_by": stats["broken_by"],
        "attacks": details,
        "skipped_attacks": plan.skipped,
        "attack_settings": attack_settings,
        "forward_passes": sum(passes.values()),
        "forward_passes_by_source": passes,
        "model": model,
        "run": dict(run_info) if run_info else None,
        "examples_digest": plan.config["examples_digest"],
        "versions": software_versions(plan.device),
        "elapsed_s": sum(rec["elapsed_s"] for rec in recs),
        "wall_s_this_session": wall,
        "randomness": {
            "stochastic": plan.traits.stochastic,
            "rows": plan.layout.to_dict(),
            "draws": (
                "stacked: the EOT and prediction draws of an example share model calls"
                if plan.layout.independent
                else "one call per draw: each model call holds one draw of each example"
            ),
            "seeded_generators": ["torch", "random", "numpy"],
        },
    }
