"""Attacks on a CiiV model: BPDA gradients, EOT variance, independent mask draws, the adaptive
(per-view CE + consistency) loss, fixed randomness, the single-view protocol."""

import pytest
import torch
from torch import nn

from ciiv.attacks import create_attack
from ciiv.models import Backbone, CentreView, CiiVClassifier
from ciiv.sampling import RetinotopicSampler

SIZE, CLASSES = 8, 4


def ciiv_model(per_example_masks: bool = False, seed: int = 0, **sampler_kwargs) -> CiiVClassifier:
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 16), nn.Tanh())
    sampler = RetinotopicSampler(
        SIZE, num_views=3, samples_per_view=2, per_example_masks=per_example_masks, **sampler_kwargs
    )
    return CiiVClassifier(Backbone(features, 16, CLASSES), sampler, (0.5,) * 3, (0.5,) * 3).eval()


def batch(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIZE, SIZE, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def test_bpda_gradient_is_nonzero_where_the_spike_gradient_vanishes():
    """x = 0 normalises to v = -1 and v + 0.9 u < 0 for every u in (-1, 1): ReLU is off, so the
    exact gradient of the spike step is exactly zero; the BPDA substitutes are not."""
    model = ciiv_model()
    x, y = torch.zeros(3, 3, SIZE, SIZE), torch.tensor([0, 1, 2])
    exact = create_attack("pgd", model).loss_gradient(x, y).grad
    assert torch.count_nonzero(exact) == 0
    for surrogate in ("identity", "smooth"):
        grad = create_attack("pgd", model, bpda=surrogate).loss_gradient(x, y).grad
        assert bool(torch.isfinite(grad).all())
        assert bool((grad.flatten(1).abs().sum(1) > 0).all())
    assert model.sampler.surrogate == "exact"  # restored
    # The attack without BPDA cannot move from x; with BPDA it does.
    assert torch.equal(create_attack("pgd", model, eps=0.1, random_start=False)(x, y), x)
    moved = create_attack("pgd", model, eps=0.1, random_start=False, bpda="identity")(x, y)
    assert not torch.equal(moved, x)


def test_eot_reduces_gradient_variance():
    model = ciiv_model()
    x, y = batch()

    def spread(eot: int) -> float:
        attack = create_attack("pgd", model, eot=eot, bpda="smooth")
        grads = torch.stack([attack.loss_gradient(x, y).grad for _ in range(12)])
        return grads.var(0).mean().item()

    torch.manual_seed(0)
    single, averaged = spread(1), spread(8)
    assert averaged < 0.35 * single  # 1 / 8 in expectation


def test_batched_eot_draws_get_independent_masks():
    """Shared masks would be shared by the E repeated copies inside one call: for E > 1 the
    sampler runs with per-example masks during the attack, and is restored afterwards."""
    model = ciiv_model(per_example_masks=False)
    seen = []
    model.sampler.register_forward_pre_hook(
        lambda module, args: seen.append(module.per_example_masks)
    )
    x, y = batch()
    create_attack("pgd", model, eps=0.03, steps=2, eot=3)(x, y)
    assert seen and all(seen)
    assert model.sampler.per_example_masks is False
    seen.clear()
    create_attack("pgd", model, eps=0.03, steps=2, eot=1)(x, y)
    assert seen and not any(seen)  # a single draw queries the deployed function as it is


def test_adaptive_attack_has_a_useful_gradient_and_valid_output():
    model = ciiv_model()
    x, y = batch()
    attack = create_attack(
        "pgd",
        model,
        loss="adaptive",
        adaptive_weight=2.0,
        bpda="identity",
        eot=2,
        steps=3,
        eps=0.05,
    )
    estimate = attack.loss_gradient(x, y)
    assert bool(torch.isfinite(estimate.grad).all()) and estimate.grad.abs().sum() > 0
    x_adv = attack(x, y)
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6
    # The consistency term is part of the objective: a larger weight changes the value.
    other = create_attack("pgd", model, loss="adaptive", adaptive_weight=0.0, bpda="identity")
    with model.fixed_randomness(0):
        weighted = create_attack("pgd", model, loss="adaptive", bpda="identity").loss_gradient(x, y)
        plain = other.loss_gradient(x, y)
    assert bool((weighted.value > plain.value).all())


def test_adaptive_loss_needs_two_views():
    x, y = batch()
    with pytest.raises(ValueError, match="at least 2 views"):
        create_attack("pgd", CentreView(ciiv_model()), loss="adaptive", steps=1)(x, y)


def test_fixed_randomness_makes_attacks_repeatable():
    model = ciiv_model()
    x, y = batch()
    with model.fixed_randomness(3):
        first = create_attack("pgd", model, eps=0.05, steps=3, seed=1, bpda="smooth")(x, y)
        second = create_attack("pgd", model, eps=0.05, steps=3, seed=1, bpda="smooth")(x, y)
    assert torch.equal(first, second)


def test_single_view_protocol_attacks_the_centre_view_only():
    # A steep density (P(keep) = m, gamma 10) keeps pixels near the view's own centre, and on
    # near-white images every spike fires (v > a), so a view shows its masks: which view the
    # attack's queries saw is readable from them.
    model = ciiv_model(per_example_masks=True, keep_threshold=1.0, gamma=10.0)
    views = []
    model.sampler.register_forward_hook(lambda module, args, out: views.append(out.views))
    x, y = torch.ones(16, 3, SIZE, SIZE), torch.arange(16) % CLASSES
    attack = create_attack("pgd", CentreView(model), eps=0.03, steps=2, eot=2)
    attack(x, y)
    assert {v.shape[0] for v in views} == {1}
    assert attack.forward_passes == 3 * 2 * 16  # images, not views
    mean = torch.cat([v[0] for v in views]).mean((0, 1))  # [H, W]
    distance = (model.sampler.keep_probability() - mean).square().sum((1, 2))
    assert distance.argmin() == 0 and distance[0] < distance[1:].min() / 10


def test_attacks_on_the_centre_view_keep_bpda_and_stacked_draws():
    """CentreView passes BPDA through (x = 0: the exact spike gradient is zero, BPDA's is not)
    and the model's declaration that its rows are independent, so EOT draws stay stacked."""
    from ciiv.attacks import rows_independent

    centre = CentreView(ciiv_model())
    x, y = torch.zeros(3, 3, SIZE, SIZE), torch.tensor([0, 1, 2])
    assert torch.count_nonzero(create_attack("pgd", centre).loss_gradient(x, y).grad) == 0
    grad = create_attack("pgd", centre, bpda="identity").loss_gradient(x, y).grad
    assert bool((grad.flatten(1).abs().sum(1) > 0).all())
    assert rows_independent(centre)
