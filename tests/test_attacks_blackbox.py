"""C&W-L2, SPSA, noise, random search, the pyautoattack adapters and transfer."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ciiv.attacks import create_attack, margin
from ciiv.models import Backbone, Classifier

SIZE = 8
DIM = 3 * SIZE * SIZE


def classifier(features: nn.Module, num_features: int, classes: int) -> Classifier:
    return Classifier(Backbone(features, num_features, classes), (0.0,) * 3, (1.0,) * 3).eval()


def two_class_linear(seed: int = 0):
    """logits = (w.x, -w.x): the label flips where w.x changes sign, so the smallest L2 change
    that flips it is |w.x| / ||w|| (the box [0, 1] is far enough not to interfere)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(DIM, generator=g)
    model = classifier(nn.Flatten(), DIM, 2)
    with torch.no_grad():
        model.backbone.head.weight.copy_(torch.stack([w, -w]))
        model.backbone.head.bias.zero_()
    x = 0.45 + 0.1 * torch.rand(6, 3, SIZE, SIZE, generator=g)
    m = x.flatten(1) @ w
    y = (m < 0).long()
    return model, x, y, m.abs() / w.norm()


def trained_mlp(classes: int = 4):
    """A tanh MLP trained on separable synthetic data (class = random pattern + noise)."""
    torch.manual_seed(0)
    protos = torch.rand(classes, 3, SIZE, SIZE)
    y = torch.randint(0, classes, (192,))
    x = (0.3 + 0.4 * protos[y] + 0.05 * torch.randn(192, 3, SIZE, SIZE)).clamp(0, 1)
    model = classifier(nn.Sequential(nn.Flatten(), nn.Linear(DIM, 16), nn.Tanh()), 16, classes)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(80):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    x, y = x[:8], y[:8]
    assert accuracy(model, x, y) == 1.0
    return model, x, y


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_cw_finds_the_minimal_l2_perturbation_of_a_linear_model():
    model, x, y, distance = two_class_linear()
    attack = create_attack("cw", model)
    x_adv = attack(x, y)
    assert accuracy(model, x_adv, y) == 0.0
    found = (x_adv - x).flatten(1).norm(dim=1)
    assert bool((found >= distance * (1 - 1e-4)).all())  # nothing beats the exact minimum
    assert bool((found <= distance * 1.05).all())


def test_cw_with_a_budget_succeeds_only_inside_the_ball():
    model, x, y, distance = two_class_linear()
    inside = create_attack("cw", model, eps=float(distance.max()) * 1.2)(x, y)
    assert accuracy(model, inside, y) == 0.0
    budget = float(distance.min()) * 0.5
    projected = create_attack("cw", model, eps=budget)(x, y)
    assert bool(((projected - x).flatten(1).norm(dim=1) <= budget + 1e-6).all())
    assert accuracy(model, projected, y) == 1.0  # no point within eps can fool this model


def test_spsa_estimate_follows_the_true_gradient():
    torch.manual_seed(0)
    model = classifier(nn.Sequential(nn.Flatten(), nn.Linear(DIM, 8), nn.Tanh()), 8, 2)
    x = 0.2 + 0.6 * torch.rand(4, 3, SIZE, SIZE)
    y = torch.tensor([0, 1, 0, 1])
    attack = create_attack("spsa", model, delta=0.01, nb_sample=256, seed=0)
    estimate = attack.estimate_gradient(x, y)
    xg = x.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(margin(model(xg), y).sum(), xg)
    cosine = F.cosine_similarity(estimate.flatten(1), true.flatten(1))
    assert bool((cosine > 0.5).all())  # about sqrt(S / (S + d)) = 0.76 in expectation
    assert attack.forward_passes == 2 * 256 * 4


def test_spsa_estimates_are_per_example():
    torch.manual_seed(0)
    model = classifier(nn.Sequential(nn.Flatten(), nn.Linear(DIM, 8), nn.Tanh()), 8, 3)
    attack = create_attack("spsa", model, nb_sample=8)
    x = torch.rand(2, 3, SIZE, SIZE)
    y = torch.tensor([0, 1])
    changed = x.clone()
    changed[1] = torch.rand(3, SIZE, SIZE)
    first = attack.estimate_gradient(x, y, torch.Generator().manual_seed(5))
    second = attack.estimate_gradient(changed, y, torch.Generator().manual_seed(5))
    torch.testing.assert_close(first[0], second[0])  # example 0 ignores example 1's queries
    assert not torch.allclose(first[1], second[1])


def test_spsa_breaks_a_trained_model_and_counts_its_queries():
    model, x, y = trained_mlp()
    attack = create_attack("spsa", model, eps=0.3, steps=10, max_batch=100, seed=0)
    x_adv = attack(x, y)
    assert accuracy(model, x_adv, y) <= 0.25
    assert attack.forward_passes == 10 * (2 * 16 + 1) * 8 + 8


class MeanAbove(nn.Module):
    """Class 1 iff the mean pixel exceeds 0.5: half of all zero-mean noise draws flip x = 0.5."""

    def forward(self, x):
        score = 100 * (x.mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([torch.zeros_like(score), score], 1)


def test_random_search_keeps_a_label_flipping_draw():
    model = MeanAbove()
    x, y = torch.full((6, 3, SIZE, SIZE), 0.5), torch.zeros(6, dtype=torch.long)
    attack = create_attack("random_search", model, max_batch=12, seed=0)
    x_adv = attack(x, y)
    assert accuracy(model, x_adv, y) == 0.0
    assert attack.forward_passes < 100 * 6  # stops once every example is flipped
    assert attack.forward_passes % 12 == 0  # 2 draws of the batch per call


@pytest.mark.parametrize("name", ["gaussian_noise", "uniform_noise"])
def test_noise_has_the_requested_spread_and_queries_nothing(name):
    x = torch.full((50, 3, SIZE, SIZE), 0.5)
    attack = create_attack(name, MeanAbove(), eps=1.0, sigma=0.1, seed=0)
    delta = attack(x, torch.zeros(50, dtype=torch.long)) - x
    assert abs(delta.std().item() - 0.1) < 0.005
    if name == "uniform_noise":
        assert delta.abs().max() <= 3**0.5 * 0.1 + 1e-6
    assert attack.forward_passes == 0
    clipped = create_attack(name, MeanAbove(), eps="16/255", seed=0)(x, torch.zeros(50).long())
    assert (clipped - x).abs().max() <= 16 / 255 + 1e-6


def test_apgd_ce_breaks_a_trained_model_and_keeps_the_global_rng():
    model, x, y = trained_mlp()
    state = torch.get_rng_state()
    attack = create_attack("apgd-ce", model, eps=0.3, steps=20, seed=0)
    x_adv = attack(x, y)
    assert torch.equal(torch.get_rng_state(), state)
    assert accuracy(model, x_adv, y) == 0.0
    assert attack.forward_passes > 20 * len(x)


def test_square_lowers_accuracy_with_few_queries():
    model, x, y = trained_mlp()
    x_adv = create_attack("square", model, eps=0.3, n_queries=300, seed=0)(x, y)
    assert accuracy(model, x_adv, y) <= 0.25


def test_autoattack_standard_runs_and_checks_the_class_count():
    model, x, y = trained_mlp(classes=4)
    attack = create_attack("autoattack", model, eps=0.3, seed=0)
    assert accuracy(model, attack(x, y), y) == 0.0
    three, x3, y3 = trained_mlp(classes=3)
    with pytest.raises(ValueError, match="at least 4 classes"):
        create_attack("autoattack", three, eps=0.3)(x3, y3)


class NoisyInput(nn.Module):
    """A random model: the classifier on x plus fresh Gaussian noise at every call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x + 0.02 * torch.randn_like(x)).clamp(0, 1))


def test_autoattack_rand_on_a_random_model():
    model, x, y = trained_mlp(classes=4)
    noisy = NoisyInput(model)
    attack = create_attack("autoattack", noisy, eps=0.3, version="rand", seed=0)
    assert accuracy(model, attack(x[:4], y[:4]), y[:4]) <= 0.25


class Unreachable(nn.Module):
    def forward(self, x):
        raise AssertionError("a transfer attack must never query the target")


def test_transfer_crafts_on_the_surrogate_only():
    surrogate, x, y = trained_mlp()
    attack = create_attack("transfer", Unreachable(), surrogate=surrogate, eps=0.1, steps=3, seed=2)
    direct = create_attack("pgd", surrogate, eps=0.1, steps=3, seed=2)
    assert torch.equal(attack(x, y), direct(x, y))
    assert attack.forward_passes == direct.forward_passes
    assert attack.settings()["base"] == "pgd" and attack.settings()["steps"] == 3
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        create_attack("transfer", Unreachable(), surrogate=surrogate, base="fgsm", steps=3)
