"""The default audit of evaluate_robustness / ciiv eval: random models only, at most the suite's
cost (counted in images through the model), its verdict in the summary, and the plan and time
estimate announced through the progress callback."""

from __future__ import annotations

import pytest
from torch import nn

from ciiv.evaluate import evaluate_robustness
from ciiv.evaluate.checks import audit_settings
from ciiv.evaluate.default_audit import (
    DEFAULT_CHECKS,
    DEFAULT_SETTINGS,
    forward_pass_bound,
    plan_audit,
)
from ciiv.models import CiiVClassifier
from tiny_models import make_data, train_tiny_ciiv

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_ciiv() -> CiiVClassifier:
    return train_tiny_ciiv(samples_per_view=1, n=512, steps=40)


def test_the_default_audit_of_the_quick_suite_costs_at_most_the_suite(tiny_ciiv):
    x, y = make_data(48, seed=1)
    images = [0]

    def count(_module: nn.Module, args: tuple) -> None:
        images[0] += len(args[0])

    events: list[tuple[str, dict]] = []
    hook = tiny_ciiv.register_forward_pre_hook(count)
    try:
        result = evaluate_robustness(
            tiny_ciiv, x, y, suite="quick", eps=0.03, eot=4, draws=4, batch_size=24,
            progress=lambda event, info: events.append((event, info)),
        )  # fmt: skip
    finally:
        hook.remove()
    summary = result.summary
    audit = summary["audit"]
    assert [c["name"] for c in audit["checks"]] == list(DEFAULT_CHECKS)
    assert audit["passed"] is not None and audit["settings"]["steps"] == DEFAULT_SETTINGS["steps"]
    suite, audited = summary["forward_passes"], audit["forward_passes"]
    # Every image the model saw is counted once: by the suite's counters or by the audit's.
    assert images[0] == suite + audited
    assert 0 < audited <= suite
    default = audit["default"]
    assert audited <= default["forward_pass_bound"] <= suite == default["suite_forward_passes"]
    assert default["examples"] == audit["n_examples"] >= 2
    # The plan came first, with bounds the run kept; the time estimate after the first batch.
    names = [event for event, _ in events]
    assert names[:2] == ["plan", "start"] and names.count("estimate") == 1
    assert names.index("estimate") == names.index("batch") + 1 and names[-1] == "audit"
    plan = events[0][1]["forward_passes"]
    assert suite <= plan["suite"] and plan["audit"] <= plan["suite"]
    estimate = dict(events)["estimate"]
    assert estimate["batch_s"] > 0 and estimate["suite_s"] >= 0 and estimate["audit_s"] > 0


def test_no_default_audit_for_a_deterministic_model_or_when_off(tiny_ciiv):
    x, y = make_data(16, seed=2)
    plain = tiny_ciiv.backbone
    summary = evaluate_robustness(plain, x, y, suite="quick", eps=0.03, batch_size=16).summary
    assert summary["audit"]["passed"] is None and "deterministic" in summary["audit"]["detail"]
    assert not summary["randomness"]["stochastic"]
    off = evaluate_robustness(tiny_ciiv, x, y, suite="quick", eps=0.03, eot=2, draws=2,
                              batch_size=16, audit=False).summary  # fmt: skip
    assert "audit" not in off


def test_the_audit_plan_fits_the_budget_and_never_drops_below_two_examples():
    settings = audit_settings(0.03, "Linf", quick=True, **DEFAULT_SETTINGS)

    def bound(n: int, surrogates: int = 2) -> int:
        return forward_pass_bound(settings, n, surrogates=surrogates, rows_measured=False)

    assert bound(10) < bound(11) and bound(10, surrogates=0) < bound(10)
    for budget in (bound(2) + 1, bound(37), bound(37) + 1, 10**9):
        plan = plan_audit(0.03, "Linf", available=100, budget=budget, surrogates=2,
                          rows_measured=False)  # fmt: skip
        assert plan.bound <= budget and plan.to_dict()["within_budget"]
        assert plan.n == 100 or bound(plan.n + 1) > budget
    small = plan_audit(0.03, "Linf", available=100, budget=10, surrogates=2, rows_measured=False)
    assert small.n == 2 and not small.to_dict()["within_budget"]
    assert plan_audit(0.03, "Linf", available=1, budget=10**9, surrogates=0,
                      rows_measured=True) is None  # fmt: skip
