"""Every registered attack honours the contract: x_adv detached, in [0, 1], inside the ball, model
modes restored, eps = 0 returns x, seeded runs repeat, settings are complete. The base class checks
the raw output and never repairs it, so these tests hold only because each attack keeps its own
points valid; a broken attack is refused. Threat models."""

import json
import math
import sys

import pytest
import torch
from torch import nn

from ciiv.attacks import (
    Attack,
    AttackContractError,
    attack_class,
    create_attack,
    default_eps,
    get_threat_model,
    list_attacks,
    parse_eps,
    preserve_mode,
)
from ciiv.attacks.base import BestIterate, ball_tolerance, check_output
from ciiv.models import Backbone, Classifier

SIZE, CLASSES = 8, 5
CONTRACT_NAMES = {
    "fgsm", "pgd", "cw", "spsa", "square", "autoattack", "apgd-ce", "gaussian_noise",
    "uniform_noise", "random_search", "transfer",
}  # fmt: skip


def tiny_model(seed: int = 0) -> Classifier:
    """A small MLP classifier with BatchNorm and Dropout, so train and eval mode differ."""
    torch.manual_seed(seed)
    features = nn.Sequential(
        nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5)
    )
    return Classifier(Backbone(features, 16, CLASSES), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def fast_hyper(name: str) -> dict:
    """Small budgets so the whole registry runs in seconds; eps 0.1 for every bounded attack."""
    hyper = {
        "pgd": dict(steps=3),
        "cw": dict(steps=8, binary_search_steps=2),
        "spsa": dict(steps=2, nb_sample=4),
        "square": dict(n_queries=20),
        "apgd-ce": dict(steps=5),
        "random_search": dict(draws=6, max_batch=8),
        "transfer": dict(surrogate=tiny_model(seed=1).eval(), steps=2),
    }.get(name, {})
    return {"eps": 0.1, **hyper}


def batch(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIZE, SIZE, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


NAMES = list_attacks()
# Every attack; full AutoAttack (four attacks in a row) only in the slow run.
NAMES_AUTOATTACK_SLOW = [
    pytest.param(n, marks=pytest.mark.slow) if n == "autoattack" else n for n in NAMES
]


def test_registry_has_the_contract_names_and_rejects_unknown_ones():
    assert CONTRACT_NAMES <= set(NAMES)
    with pytest.raises(ValueError, match="valid: .*pgd"):
        create_attack("nope", tiny_model())
    with pytest.raises(ValueError, match="unknown hyper-parameter.*stepz.*valid: .*steps"):
        create_attack("pgd", tiny_model(), stepz=3)
    assert attack_class("pgd").name == "pgd"


@pytest.mark.parametrize("name", NAMES)
def test_output_contract_and_modes_restored(name):
    model = tiny_model().train()
    model.backbone.features[2].eval()  # mixed flags must come back exactly as they were
    flags = [m.training for m in model.modules()]
    x, y = batch()
    attack = create_attack(name, model, **fast_hyper(name))
    x_adv = attack(x, y)
    assert [m.training for m in model.modules()] == flags
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert bool((attack.threat.distance(x_adv, x) <= 0.1 + 1e-6).all())
    assert all(p.grad is None for p in model.parameters())
    assert isinstance(attack.forward_passes, int) and attack.forward_passes >= 0
    settings = attack.settings()
    json.dumps(settings)
    assert settings["seed"] == attack.seed and math.isclose(settings["eps"], 0.1)


@pytest.mark.parametrize("name", NAMES)
def test_eval_model_stays_in_eval_mode(name):
    model = tiny_model().eval()
    x, y = batch()
    create_attack(name, model, **fast_hyper(name))(x, y)
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", NAMES_AUTOATTACK_SLOW)
def test_eps_zero_returns_the_input(name):
    model = tiny_model().eval()
    x, y = batch()
    x_adv = create_attack(name, model, **{**fast_hyper(name), "eps": 0.0})(x, y)
    assert torch.equal(x_adv, x)


@pytest.mark.parametrize("name", NAMES)
def test_every_attack_passes_the_check_unrepaired(name):
    """The raw ``_attack`` output is already valid, and ``attack(x, y)`` returns it bit for bit."""
    model = tiny_model().eval()
    x, y = batch(seed=5)
    raw_attack = create_attack(name, model, **fast_hyper(name), seed=7)
    raw = raw_attack._attack(x, y).detach()
    check_output(name, raw_attack.threat, raw, x)
    assert torch.equal(create_attack(name, model, **fast_hyper(name), seed=7)(x, y), raw)


@pytest.mark.parametrize("name", NAMES_AUTOATTACK_SLOW)
def test_every_attack_accepts_seed_and_max_batch(name):
    """The evaluation and the audit pass both to every attack (ignored where meaningless)."""
    model = tiny_model().eval()
    x, y = batch()
    attack = create_attack(name, model, **{**fast_hyper(name), "seed": 3, "max_batch": 2})
    chunked = attack.base if name == "transfer" else attack  # transfer forwards it to its base
    assert attack.seed == 3 and chunked.max_batch == 2
    check_output(name, attack.threat, attack(x, y), x)
    with pytest.raises(ValueError, match="max_batch must be a positive integer"):
        create_attack(name, model, **{**fast_hyper(name), "max_batch": 0})


class Garbage(Attack):
    """A broken attack: returns ``make(x, eps)`` as is (a step beyond the ball, NaN, ...)."""

    name = "garbage"

    def __init__(self, model, make, norm="Linf", eps=0.1, bounded=True):
        super().__init__(model, seed=0)
        self.threat = get_threat_model(norm, eps) if bounded else None
        self.make = make

    def _attack(self, x, y):
        return self.make(x, self.threat.eps if self.threat else 0.1)


def mid_batch(n: int = 4):
    """Images in [0.3, 0.7]: far enough from the box that only the ball can be broken."""
    x, y = batch(n)
    return 0.3 + 0.4 * x, y


def _l2_overshoot(x, eps):
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    return x + 2 * eps * direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _some_nan(x, eps):
    """Two NaN pixel-channels per image, every other value inside the ball."""
    out = x.clone()
    out[:, 0, 0, :2] = float("nan")
    return out


@pytest.mark.parametrize(
    "make, norm, bounded, message",
    [
        (lambda x, eps: x + 2 * eps, "Linf", True, r"'garbage'.*Linf distance above eps=0\.1 by"),
        (_l2_overshoot, "L2", True, r"L2 distance above eps=0\.1 by up to 0\.1"),
        (lambda x, eps: x + eps + 1e-4, "Linf", True, "Linf distance above eps"),
        (_some_nan, "Linf", True, r"attack 'garbage' .*: 8 NaN/inf value\(s\)\."),
        (lambda x, eps: x + 0.8, "Linf", False, r"outside \[0, 1\] by up to 0\.5"),
        (lambda x, eps: x[:, :1], "Linf", True, r"returned shape \(4, 1, 8, 8\)"),
    ],
    ids=["linf-2eps", "l2-2eps", "linf-just-beyond", "nan", "unbounded-box", "shape"],
)
def test_a_broken_attack_is_refused_not_repaired(make, norm, bounded, message):
    x, y = mid_batch()
    attack = Garbage(tiny_model(), make, norm=norm, bounded=bounded)
    with pytest.raises(AttackContractError, match=message):
        attack(x, y)


def test_rounding_inside_the_tolerance_passes_unchanged():
    """An excess of 1e-6 over eps is float error, not a step: returned as is, not clamped."""
    x, y = mid_batch()
    assert 1e-6 < ball_tolerance(0.1, x.dtype) < 1e-4
    attack = Garbage(tiny_model(), lambda x, eps: x + (eps + 1e-6))
    x_adv = attack(x, y)
    torch.testing.assert_close(x_adv, x + (0.1 + 1e-6), rtol=0, atol=0)
    assert attack.threat.distance(x_adv, x).max() > 0.1


def test_external_attacks_project_and_record_their_excess():
    pytest.importorskip("pyautoattack")
    x, _ = mid_batch()
    attack = create_attack("apgd-ce", tiny_model(), eps=0.1)
    projected = attack._project(x + 0.13, x)
    assert math.isclose(attack.projected_excess, 0.03, rel_tol=1e-4)
    torch.testing.assert_close(projected, x + 0.1)
    attack._project(x + 0.05, x)
    assert math.isclose(attack.projected_excess, 0.03, rel_tol=1e-4)  # the largest over calls


def test_best_iterate_is_lexicographic_keeps_ties_and_updates_subsets():
    best = BestIterate(torch.zeros(3, 1, 1, 1), initial=(0.0, 0.0))
    ones, fooled = torch.ones(3, 1, 1, 1), torch.tensor([False, True, False])
    best.update(ones, fooled, torch.tensor([5.0, -9.0, 0.0]))
    # 0: same primary, higher secondary; 1: fooled beats any secondary; 2: a tie keeps the old
    assert best.x.flatten().tolist() == [1, 1, 0]
    twos, idx = torch.full((2, 1, 1, 1), 2.0), torch.tensor([1, 2])
    best.update(twos, torch.tensor([0.0, 1.0]), torch.tensor([100.0, -1.0]), idx)
    # 1: unfooled never beats fooled, whatever its secondary; 2: now fooled
    assert best.x.flatten().tolist() == [1, 1, 2]
    assert best.primary.tolist() == [0, 1, 1] and best.secondary.tolist() == [5, -9, -1]


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result_on_a_deterministic_model(name):
    model = tiny_model().eval()
    x, y = batch(seed=3)
    first = create_attack(name, model, **fast_hyper(name), seed=11)(x, y)
    second = create_attack(name, model, **fast_hyper(name), seed=11)(x, y)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "transfer"])
def test_settings_rebuild_the_same_attack(name):
    model = tiny_model().eval()
    attack = create_attack(name, model, **fast_hyper(name))
    rebuilt = create_attack(name, model, **attack.settings())
    assert rebuilt.settings() == attack.settings()


def test_empty_batch_and_bad_input():
    attack = create_attack("pgd", tiny_model(), steps=1)
    x, y = batch()
    assert attack(x[:0], y[:0]).shape == (0, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack(x * 2, y)
    with pytest.raises(ValueError, match="integer class indices"):
        attack(x, y.float())
    with pytest.raises(ValueError, match="positive integer"):
        create_attack("pgd", tiny_model(), steps=0)
    with pytest.raises(ValueError, match="unknown norm"):
        create_attack("pgd", tiny_model(), norm="L1")


def test_inference_mode_is_refused_with_advice():
    x, y = batch()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="no_grad"):
        create_attack("pgd", tiny_model(), steps=1)(x, y)


def test_preserve_mode_restores_flags_after_an_error():
    model = tiny_model().train()
    with pytest.raises(RuntimeError), preserve_mode(model):
        assert not model.training
        raise RuntimeError
    assert all(m.training for m in model.modules())


def test_default_budgets_per_norm_and_dataset():
    assert default_eps("linf") == default_eps("Linf", "cifar10") == 8 / 255
    assert default_eps("L2") == 128 / 255 and default_eps("L2", "mnist") == 2.0
    assert default_eps("Linf", "mnist") == 0.3
    for name in ("pgd", "fgsm", "apgd-ce"):
        for norm in ("Linf", "L2"):
            attack = create_attack(name, tiny_model(), norm=norm)
            assert attack.settings()["eps"] == default_eps(norm)


@pytest.mark.parametrize(
    "text, value", [("8/255", 8 / 255), (0.5, 0.5), (1, 1.0), (" 16/255", 16 / 255), ("0.03", 0.03)]
)
def test_parse_eps(text, value):
    assert math.isclose(parse_eps(text), value)


@pytest.mark.parametrize("bad", ["-1/255", "abc", "1/0", float("nan"), -0.1, True, None])
def test_parse_eps_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        parse_eps(bad)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_threat_model_projection_init_and_step(norm):
    threat = get_threat_model(norm, 0.2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, SIZE, SIZE, generator=g)
    far = x + 3 * torch.randn(x.shape, generator=g)
    projected = threat.project(far, x)
    assert bool((threat.distance(projected, x) <= 0.2 + 1e-6).all())
    assert projected.min() >= 0 and projected.max() <= 1
    torch.testing.assert_close(threat.project(projected, x), projected)  # idempotent
    start = threat.random_init(x, g)
    assert bool((threat.distance(start, x) <= 0.2 + 1e-6).all()) and not torch.equal(start, x)
    grad = torch.randn(x.shape, generator=g)
    moved = threat.step(x, grad, 0.05) - x
    if norm == "Linf":
        torch.testing.assert_close(moved, 0.05 * grad.sign())
    else:
        torch.testing.assert_close(moved.flatten(1).norm(dim=1), torch.full((6,), 0.05))
        cos = torch.nn.functional.cosine_similarity(moved.flatten(1), grad.flatten(1))
        torch.testing.assert_close(cos, torch.ones(6))


def test_l2_random_init_fills_the_ball():
    """Uniform in the ball: radius eps * U^(1/d), so the mean radius is eps * d / (d + 1)."""
    threat = get_threat_model("L2", 0.1)
    x = torch.full((2000, 1, 2, 2), 0.5)
    radius = threat.distance(threat.random_init(x, torch.Generator().manual_seed(0)), x)
    assert radius.max() <= 0.1 + 1e-6
    assert abs(radius.mean().item() - 0.1 * 4 / 5) < 0.003


def _unbreakable_batch(model, n: int = 4):
    """A batch labelled with the model's own predictions: at a tiny eps nothing is fooled, so
    every restart of an attack runs in full."""
    x, _ = batch(n)
    with torch.no_grad():
        return x, model.eval()(x).argmax(1)


@pytest.mark.parametrize(
    "name, hyper, total",
    [
        ("pgd", dict(steps=3, restarts=2), 6),
        ("fgsm", {}, 1),
        ("spsa", dict(steps=2, nb_sample=4), 2),
        ("cw", dict(steps=4, binary_search_steps=2, abort_early=False), 8),
    ],
)
def test_iterative_attacks_report_every_step_to_on_step(name, hyper, total):
    model = tiny_model()
    x, y = _unbreakable_batch(model)
    attack = create_attack(name, model, **({"eps": 1e-6} if name != "cw" else {}), **hyper)
    calls = []
    attack.on_step = lambda step, steps: calls.append((step, steps))
    attack(x, y)
    assert calls == [(step, total) for step in range(1, total + 1)]
    calls.clear()
    attack.on_step = None  # off: the attack runs as before
    attack(x, y)
    assert calls == []


def test_attacks_declare_their_optional_packages(monkeypatch):
    from ciiv.attacks import check_attack_dependencies
    from ciiv.deps import MissingDependency

    assert attack_class("autoattack").requires == ("pyautoattack",)
    assert attack_class("pgd").requires == ()
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # as if it were not installed
    check_attack_dependencies(["pgd", "fgsm", "cw"])
    for name in ("autoattack", "apgd-ce", "square"):
        with pytest.raises(MissingDependency, match=rf"attack '{name}'.*ciiv\[autoattack\]"):
            check_attack_dependencies(["pgd", name])
        with pytest.raises(MissingDependency, match=r'pip install "ciiv\[autoattack\]"'):
            create_attack(name, tiny_model(), **fast_hyper(name))(*batch())
    with pytest.raises(ValueError, match="unknown attack 'pgdd'"):
        check_attack_dependencies(["pgdd"])
