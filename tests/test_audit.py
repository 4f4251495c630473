"""The obfuscated-gradient audit: a clean model passes, models with known obfuscation fail the
checks that should catch them, CiiV gets a complete, honest report; plus the statistics helpers.

Tiny MLPs on synthetic 8x8 images (4 classes, each a fixed binary pattern at +-0.15 around grey
plus noise), trained for a fraction of a second; the audit runs with short settings.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ciiv.attacks.base import ball_tolerance
from ciiv.evaluate.audit import AuditResult, audit, describe_checks, list_checks
from ciiv.evaluate.checks import (
    AttackRun,
    AuditContext,
    CheckResult,
    audit_settings,
    compare,
    fixed_randomness,
    get_check,
)
from ciiv.evaluate.checks import base as checks_base
from ciiv.evaluate.checks.measure import Stability, eot_stability
from ciiv.models import CentreView
from tiny_models import K, make_data, train_tiny_ciiv

EPS = 0.12
# Short settings: seconds per audit on one CPU core.
FAST = dict(
    steps=10,
    step_grid=(5, 10),
    restarts=2,
    eot_grid=(1, 2, 4, 8),
    max_eot=8,
    grad_examples=16,
    draws=3,
    eps_multipliers=(1.0,),
    square_queries=50,
    spsa_steps=5,
    random_search_draws=10,
)


def train_mlp(transform=None, steps: int = 300) -> nn.Module:
    """An MLP trained on (optionally randomly transformed) training images."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, K))
    x, y = make_data(1024, seed=0)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(steps):
        inputs = x if transform is None else transform(x)
        loss = F.cross_entropy(net(inputs), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


class Quantised(nn.Module):
    """x -> round(8 x) / 8 in front: torch.round has a zero gradient everywhere."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 8) / 8)


class Saturated(nn.Module):
    """softmax(100 * logits): saturated probabilities instead of logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.softmax(100 * self.net(x), dim=1)


def gaussian_noise(x):
    return (x + 0.5 * torch.randn_like(x)).clamp(0, 1)


def random_translation(x):
    """Each example shifted by its own random 0..2 px in each direction (border padding)."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = torch.randint(-2, 3, (n, 2), device=x.device).to(x.dtype) * 2 / x.shape[-1]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="border")


def batch_translation(x):
    """One random shift for the whole batch: the randomness is drawn once per call."""
    i, j = torch.randint(0, 5, (2,)).tolist()
    return F.pad(x, (2, 2, 2, 2), mode="replicate")[..., i : i + 8, j : j + 8]


class RandomInput(nn.Module):
    """A randomised input transformation in front of a classifier trained on it."""

    stochastic = True

    def __init__(self, net: nn.Module, transform) -> None:
        super().__init__()
        self.net = net
        self.transform = transform

    def forward(self, x):
        return self.net(self.transform(x))


@pytest.fixture(scope="module")
def points():
    return make_data(100, seed=1)


@pytest.fixture(scope="module")
def vanilla():
    return train_mlp()


def statuses(result: AuditResult) -> dict[str, str]:
    return {c.name: c.status for c in result.checks}


# -- models with and without obfuscation -------------------------------------------------------


def test_clean_vanilla_model_passes(vanilla, points):
    x, y = points
    result = audit(vanilla, x, y, eps=EPS, raise_errors=True, **FAST)
    got = statuses(result)
    assert list(got) == list_checks()
    assert result.passed, got
    skipped = {"fixed_randomness", "sampler_removed"}  # deterministic, no sampler
    assert all(s == "pass" for n, s in got.items() if n not in skipped), got
    assert all(got[n] == "skip" for n in skipped)
    # The attacks have real work to do: robust accuracy well below a high clean accuracy.
    strength = result.check("strength_monotonicity").numbers
    assert result.clean_accuracy > 0.9
    assert 0.1 < strength["accuracy"][1] < result.clean_accuracy - 0.1
    assert strength["accuracy"][-1] <= 0.05
    # Every check explains itself, and the result is JSON.
    assert all(c.detail for c in result.checks)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["passed"] is True and data["n_examples"] == 100 and data["seed"] == 0
    assert {"name", "status", "detail", "numbers"} <= set(data["checks"][0])
    assert data["settings"]["eps"] == EPS and data["versions"]["torch"] == torch.__version__


def test_quantised_input_fails_gradient_and_strength(vanilla, points):
    x, y = points
    result = audit(Quantised(vanilla), x, y, eps=EPS, raise_errors=True, **FAST)
    got = statuses(result)
    assert not result.passed
    assert got["gradient_health"] == "fail"
    assert result.check("gradient_health").numbers["clean"]["margin_vanishing_fraction"] == 1.0
    assert got["strength_monotonicity"] == "fail"  # not even an unbounded attack breaks it
    assert got["randomness"] == got["output_sanity"] == "pass"  # these are not the problem


def test_saturated_probabilities_fail_output_and_gradient(vanilla, points):
    x, y = points
    result = audit(Saturated(vanilla), x, y, eps=EPS, raise_errors=True, **FAST)
    got = statuses(result)
    assert got["output_sanity"] == "fail"
    assert result.check("output_sanity").numbers["probability_rows"] == 1.0
    assert got["gradient_health"] == "fail"
    assert got["strength_monotonicity"] == "fail"


@pytest.mark.parametrize("transform", [gaussian_noise, random_translation])
def test_random_input_transformation_fails_randomness(points, transform):
    x, y = points
    model = RandomInput(train_mlp(transform), transform)
    settings = {**FAST, "eot_grid": (1, 4, 16, 32), "max_eot": 32}
    result = audit(model, x, y, eps=EPS, raise_errors=True, **settings)
    check = result.check("randomness")
    assert check.status == "fail", check.detail
    numbers = check.numbers
    assert numbers["stochastic"] and numbers["rows"]["independent"]
    assert numbers["rows"]["source"] == "measured" and numbers["draw_layout"] == "stacked"
    assert numbers["reproducible_with_seed"] is True
    cosines = list(numbers["exact"]["cosine_by_eot"].values())
    assert cosines[0] < 0.8 <= cosines[-1]  # one draw is unstable, 32 are enough
    assert numbers["eot_gain"]["diff"] > numbers["eot_gain"]["tolerance"]  # EOT finds more
    assert result.check("fixed_randomness").status != "skip"


def test_randomness_drawn_once_per_batch_is_caught_and_drawn_one_call_at_a_time(points):
    x, y = points
    model = RandomInput(train_mlp(batch_translation), batch_translation)
    calls: list[int] = []
    model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    result = audit(model, x, y, eps=EPS, checks=["randomness"], raise_errors=True, **FAST)
    check = result.check("randomness")
    rows = check.numbers["rows"]
    assert rows["source"] == "measured" and not rows["independent"]
    assert rows["spread_ratio"] == 0.0 and rows["p_value"] < 0.01
    assert check.numbers["draw_layout"] == "one call per draw"
    assert "one call per EOT and prediction draw" in check.detail
    # 4 logit draws of the 16 gradient points, the spread test (4 calls of 4 copies of 8), two
    # seeded passes, then the 2 x 8 EOT draws of the stability measurement: one call each.
    assert calls[:10] == [16] * 4 + [32] * 4 + [16] * 2
    assert calls[10 : 10 + 2 * 8] == [16] * 16
    assert result.forward_passes == sum(calls)


def test_a_false_independent_rows_declaration_fails_randomness(points):
    x, y = points

    class Declared(RandomInput):
        independent_rows = True

    model = Declared(train_mlp(batch_translation), batch_translation)
    result = audit(model, x, y, eps=EPS, checks=["randomness"], raise_errors=True, **FAST)
    check = result.check("randomness")
    assert check.status == "fail" and "declares independent_rows" in check.detail
    assert check.numbers["declared_independent_rows"] is True
    assert not check.numbers["rows"]["independent"]


@pytest.fixture(scope="module")
def ciiv_model():
    return train_tiny_ciiv(samples_per_view=2, n=1024, steps=60)


def test_ciiv_gets_a_complete_honest_report(ciiv_model, points):
    x, y = points
    ciiv_model.train()  # the audit evaluates in eval mode and restores the caller's flags
    result = audit(ciiv_model, x, y, eps=EPS, raise_errors=True, **FAST)
    assert ciiv_model.training
    got = statuses(result)
    assert result.stochastic and result.clean_accuracy > 0.8
    # Random, spiky: the randomness check never simply passes; every CiiV check ran.
    assert got["randomness"] in ("warn", "fail")
    assert got["fixed_randomness"] != "skip" and got["sampler_removed"] != "skip"
    assert got["bookkeeping"] == "pass"
    curves = result.check("randomness").numbers
    assert {"exact", "identity", "smooth"} <= set(curves)
    health = result.check("gradient_health").numbers
    assert set(health["bpda_vs_true"]) == {"identity", "smooth"}
    blackbox = result.check("whitebox_vs_blackbox").numbers["black_box"]
    assert "transfer-from-expected" in blackbox
    report = json.loads(json.dumps(result.to_dict()))
    assert {c["name"]: c["status"] for c in report["checks"]} == got  # every verdict recorded
    assert report["stochastic"] is True


def test_every_check_alone_gives_its_verdict_in_the_full_audit(ciiv_model, points):
    """Issue 13.7: measurements and attack runs are cached under what defines them and seeded by
    it, and the white-box baseline is a declared list, so no check depends on what ran before."""
    x, y = points[0][:16], points[1][:16]
    full = audit(ciiv_model, x, y, eps=EPS, quick=True, raise_errors=True, **FAST)
    for check in full.checks:
        alone = audit(ciiv_model, x, y, eps=EPS, quick=True, checks=[check.name],
                      raise_errors=True, **FAST).checks[0]  # fmt: skip
        assert alone.status == check.status, (check.name, alone.detail, check.detail)
        if check.name != "bookkeeping":  # its evidence spans every run of the audit
            assert alone.to_dict()["numbers"] == check.to_dict()["numbers"], check.name


def test_warnings_and_skips_pass_the_audit_a_failure_fails_it(vanilla, points, monkeypatch):
    x, y = points
    for order, status in enumerate(("pass", "warn", "skip", "fail"), start=1000):

        def fixed(ctx, status=status):
            return CheckResult(f"always_{status}", status, "a fixed outcome")

        entry = checks_base._Entry(order, fixed, status)
        monkeypatch.setitem(checks_base._CHECKS, f"always_{status}", entry)

    def passed(*statuses: str) -> bool:
        checks = [f"always_{status}" for status in statuses]
        result = audit(vanilla, x, y, eps=EPS, checks=checks, raise_errors=True, **FAST)
        assert [c.status for c in result.checks] == list(statuses)
        return result.passed

    assert passed("pass", "warn", "skip") and passed("warn")
    assert not passed("pass", "fail") and not passed("warn", "skip", "fail")


# -- framework -----------------------------------------------------------------------------------


def test_subset_of_checks_and_rng_state(vanilla, points):
    x, y = points
    state = torch.random.get_rng_state()
    result = audit(vanilla, x, y, eps="30/255", checks=["output_sanity", "randomness"], **FAST)
    assert torch.equal(state, torch.random.get_rng_state())
    assert [c.name for c in result.checks] == ["output_sanity", "randomness"]
    assert result.settings["eps"] == pytest.approx(30 / 255)
    assert set(describe_checks()) == set(list_checks())


def test_bad_arguments_raise(vanilla, points):
    x, y = points
    with pytest.raises(ValueError, match="valid"):
        audit(vanilla, x, y, eps=EPS, checks=["no_such_check"])
    with pytest.raises(ValueError, match="unknown audit setting"):
        audit(vanilla, x, y, eps=EPS, stepz=3)
    with pytest.raises(ValueError, match="norm"):
        audit(vanilla, x, y, eps=EPS, norm="L3")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        audit(vanilla, x * 3, y, eps=EPS)
    with pytest.raises(ValueError, match="eps"):
        audit(vanilla, x, y, eps=0)


def test_a_crashing_check_is_recorded_as_failed(points):
    x, y = points

    class Broken(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, 0]  # [B] instead of [B, classes]

    result = audit(Broken(), x, y, eps=EPS, checks=["output_sanity"], **FAST)
    check = result.check("output_sanity")
    assert check.status == "fail" and "error" in check.numbers and not result.passed
    with pytest.raises(IndexError):
        audit(Broken(), x, y, eps=EPS, checks=["output_sanity"], raise_errors=True, **FAST)


def test_run_passes_every_hyper_parameter_to_the_attack(vanilla, points):
    """``draws`` is the random search's own budget (random_search_draws), not the number of
    prediction draws of the evaluation (one for a deterministic model)."""
    x, y = points
    ctx = AuditContext(vanilla, x, y, audit_settings(EPS, **FAST))
    run = ctx.run("random-search", "random_search", draws=7)
    assert run.settings["draws"] == 7 and run.correct.shape == (1, x.shape[0])


def test_bookkeeping_flags_points_outside_the_ball(vanilla, points):
    x, y = points
    ctx = AuditContext(vanilla, x, y, audit_settings(EPS, **FAST))
    good = ctx.pgd()
    assert get_check("bookkeeping")(ctx).status == "pass"
    ctx.runs["bad"] = AttackRun(
        label="bad", attack="pgd", target="model", settings=dict(good.settings), x=x,
        x_adv=(x + 2 * EPS).clamp(0, 1), correct=good.correct, forward_passes=good.forward_passes,
        queried=good.queried, mode_restored=True, eps=EPS, norm="Linf",
    )  # fmt: skip
    result = get_check("bookkeeping")(ctx)
    assert result.status == "fail" and "bad" in result.numbers["problems"]


def test_bookkeeping_warns_when_ciiv_runs_fewer_views(ciiv_model, points):
    x, y = points
    ciiv_model.num_views = 1
    try:
        ctx = AuditContext(ciiv_model, x[:20], y[:20], audit_settings(EPS, **FAST))
        ctx.fgsm()
        result = get_check("bookkeeping")(ctx)
    finally:
        ciiv_model.num_views = ciiv_model.sampler.num_views
    assert result.status == "warn" and "model" in result.numbers["notes"]
    # The paper protocol's surrogate, audited in place of the model, is flagged the same way.
    ctx = AuditContext(CentreView(ciiv_model), x[:20], y[:20], audit_settings(EPS, **FAST))
    ctx.fgsm()
    result = get_check("bookkeeping")(ctx)
    assert result.status == "warn" and "CentreView" in result.numbers["notes"]["model"][0]
    assert (result.numbers["views_evaluated"], result.numbers["views_of_sampler"]) == (1, 3)


def test_bookkeeping_ball_slack_is_the_attacks_rounding_tolerance(vanilla, points):
    """The check holds the audit's points to the attacks' own contract: a step beyond the ball by
    rounding (below ball_tolerance) passes, one by 1e-4 fails, and the box gets no slack."""
    x, y = points
    ctx = AuditContext(vanilla, x, y, audit_settings(EPS, **FAST))
    good = ctx.pgd()
    tolerance = ball_tolerance(EPS, x.dtype)
    assert 1e-6 < tolerance < 1e-4
    inner = x.clamp(2 * EPS, 1 - 2 * EPS)  # room on both sides of the box

    def status(x_adv: torch.Tensor, x0: torch.Tensor = inner) -> str:
        ctx.runs = {"run": dataclasses.replace(good, x=x0, x_adv=x_adv)}
        return get_check("bookkeeping")(ctx).status

    assert status(inner + EPS + tolerance / 2) == "pass"
    assert status(inner + EPS + 1e-4) == "fail"
    top = x.clone()
    top[..., 0] = 1 - 5e-7
    assert status(top + 1e-6, top) == "fail"  # above 1 by 5e-7: no slack on the box


def test_compare_tolerance():
    n = 100
    a = torch.zeros(1, n, dtype=torch.bool)
    b = a.clone()
    a[0, :1] = True  # one example: never a violation
    assert not compare(a, b, 2.0).violated
    a[0, :6] = True  # six examples, all one way: a violation
    cmp = compare(a, b, 2.0)
    assert cmp.violated and cmp.diff == pytest.approx(0.06)
    assert cmp.se == pytest.approx(torch.tensor([1.0] * 6 + [0.0] * 94).std().item() / 10)
    mixed = torch.tensor([[True] * 10 + [False] * 90])
    other = torch.tensor([[False] * 5 + [True] * 10 + [False] * 85])
    assert not compare(mixed, other, 2.0).violated  # equal accuracies


def test_stability_needed_and_extrapolated():
    curve = Stability([1, 2, 4], [0.2, 0.4, 0.6], torch.zeros(1))
    assert curve.needed(0.5) == 4 and curve.needed(0.8) is None
    # cos(E) = E r / (1 + E r): at E = 4, 0.6 -> r = 0.375; 0.8 needs E = 4 / r = 10.67.
    assert curve.extrapolated(0.8) == pytest.approx(0.8 / (0.2 * 0.375))
    assert Stability([1], [0.0], torch.zeros(1)).extrapolated(0.8) is None


def test_eot_stability_of_a_deterministic_model_is_one(vanilla, points):
    x, y = points
    curve = eot_stability(vanilla, x[:8], y[:8], (1, 2))
    assert curve.cosine == pytest.approx([1.0, 1.0], abs=1e-5)


def test_fixed_randomness_makes_models_deterministic(ciiv_model, points):
    x, _ = points
    noisy = RandomInput(nn.Flatten(), gaussian_noise)
    for model in (noisy, ciiv_model):
        fixed = fixed_randomness(model, seed=3)
        with torch.no_grad():
            assert torch.equal(fixed(x[:10]), fixed(x[:10]))
            assert not torch.equal(model(x[:10]), model(x[:10]))
    assert callable(fixed_randomness(ciiv_model, 0).bpda)
    assert not hasattr(fixed_randomness(noisy, 0), "bpda")


def test_settings_presets():
    full, quick = audit_settings(0.1), audit_settings(0.1, quick=True)
    assert full.steps > quick.steps and max(full.eot_grid) > max(quick.eot_grid)
    assert audit_settings(0.1, quick=True, steps=7).steps == 7
    with pytest.raises(ValueError, match="ascending"):
        audit_settings(0.1, eot_grid=(4, 2))
    assert math.isclose(audit_settings(0.1, norm="L2").eps, 0.1)
