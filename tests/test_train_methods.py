"""Training methods: every registered objective learns, and each loss is the stated formula."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from ciiv.attacks import create_attack
from ciiv.data import generate_shapes, get_dataset_info
from ciiv.loss import consistency_loss, view_cross_entropy
from ciiv.models import CiiVClassifier, Classifier, SmoothedClassifier, build_model, predict
from ciiv.train import StepContext, create_method, get_method, list_methods, load_config
from ciiv.train.methods import option_names
from ciiv.train.methods.adversarial import craft_pgd, trades_kl
from ciiv.train.methods.standard import quantise

SIZE = 16
INFO = get_dataset_info("shapes", image_size=SIZE)
KINDS = {"plain": Classifier, "ciiv": CiiVClassifier, "smoothed": SmoothedClassifier}


def tiny_config(method: str, **options):
    """A small model and ``method`` (PGD with 2 steps), with ``options`` of the method."""
    return load_config(
        None,
        {
            "method.name": method,
            **({"method.pgd.steps": 2} if "pgd" in option_names(method) else {}),
            **{f"method.{key}": value for key, value in options.items()},
            "model.backbone": "small_cnn",
            "model.backbone_kwargs": {"width": 8},
            "model.num_views": 3,
            "model.samples_per_view": 2,
            "model.smoothing_draws": 2,
            "model.smoothing_votes": 3,
        },
    )


def batch(n: int = 16):
    sample = generate_shapes(n, rho=0.9, seed=1, num_classes=INFO.num_classes, image_size=SIZE)
    return sample.images.float() / 255, sample.labels


def test_registry_lists_every_method_and_rejects_unknown_names():
    assert list_methods() == sorted(
        ["vanilla", "ciiv", "pgd_at", "trades", "rs", "bpfc", "mixup", "ciiv_at", "ciiv_mixup"]
    )
    with pytest.raises(ValueError, match="unknown training method 'civ'.*Did you mean 'ciiv'"):
        get_method("civ")


@pytest.mark.parametrize("method", list_methods())
def test_method_loss_is_finite_and_decreases_on_a_fixed_batch(method):
    """Two-plus optimiser steps on one batch: the loss, evaluated with the same random draws
    before and after, is finite and goes down; gradients reach every parameter."""
    torch.manual_seed(0)
    config = tiny_config(method)
    objective = create_method(config.method)
    model = build_model(config.model, INFO, objective.model_kind)
    assert type(model) is KINDS[objective.model_kind]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = batch()

    def loss_at(seed: int) -> float:
        torch.manual_seed(seed)
        with torch.no_grad():
            return objective(model.train(), x, y, StepContext(epoch=0, step=0)).loss.item()

    before = loss_at(123)
    for step in range(10):
        out = objective(model.train(), x, y, StepContext(epoch=0, step=step))
        assert out.logits.shape == (len(y), INFO.num_classes) and math.isfinite(out.loss.item())
        optimizer.zero_grad()
        out.loss.backward()
        if step == 0:
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            assert not missing, f"no gradient for {missing}"
        optimizer.step()
    after = loss_at(123)
    # A clear drop (mixup's floor is high: the mixed labels keep the loss above ~0.7).
    assert math.isfinite(before) and after < before - 0.05, (before, after)


def test_ciiv_loss_is_weighted_view_ce_plus_scheduled_consistency():
    config = load_config(None, {"method.w_ce": 0.5, "method.w_reg": 0.2, "model.num_views": 3})
    objective = create_method(config.method)
    assert [objective.epoch_values(e)["w_reg"] for e in (0, 24, 25, 50, 75)] == pytest.approx(
        [0.2, 0.2, 2, 20, 200]
    )
    torch.manual_seed(0)
    model = build_model(tiny_config("ciiv").model, INFO, "ciiv").eval()
    x, y = batch(4)
    with model.fixed_randomness(7):
        out = objective(model, x, y, StepContext(epoch=30, step=0))
        views = model.forward_views(x)
        assert torch.allclose(out.logits, model(x))
    expected = 0.5 * view_cross_entropy(views.logits, y) + 2.0 * consistency_loss(
        views.features, views.z
    )
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(out.metrics) == {"ce", "reg"}


def test_bpfc_quantisation_and_weight_schedule():
    torch.manual_seed(0)
    x = torch.rand(8, 3, SIZE, SIZE)
    q = quantise(x, step=32 / 255, noise=8 / 255)
    levels = torch.tensor([0.0] + [(32 * k + 16) / 255 for k in range(8)] + [1.0])
    assert torch.isclose(q[..., None], levels).any(-1).all()  # bin centres, or clipped to 0 / 1
    assert ((q - x).abs() <= (16 + 8) / 255 + 1e-6).all()  # half a bin plus the pre-noise
    assert torch.equal(quantise(x, 32 / 255, 0.0), quantise(x, 32 / 255, 0.0))
    objective = create_method(load_config(None, {"method.name": "bpfc"}).method)
    assert [objective.epoch_values(e)["w_bpfc"] for e in (0, 25, 50, 75)] == pytest.approx(
        [1, 9, 81, 729]
    )


# -- each loss is its formula, computed here by hand with torch ops ------------------------------


def ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy, by hand: -log softmax at the label."""
    log_p = logits - logits.exp().sum(1, keepdim=True).log()
    return -log_p.gather(1, labels[:, None]).mean()


def method_and_model(method: str, **options):
    """The objective with ``options`` and a tiny model in train mode, as the loop calls it."""
    config = tiny_config(method, **options)
    objective = create_method(config.method)
    torch.manual_seed(0)
    return objective, build_model(config.model, INFO, objective.model_kind).train()


def test_bpfc_loss_is_ce_plus_scheduled_logit_distance_to_the_quantised_image():
    objective, model = method_and_model("bpfc", step=0.25, noise=0.05)
    x, y = batch(8)
    torch.manual_seed(3)
    out = objective(model, x, y, StepContext(epoch=30, step=0))
    torch.manual_seed(3)  # the same pre-noise: U(-0.05, 0.05) per pixel
    noisy = x + 0.05 * (2 * torch.rand_like(x) - 1)
    quantised = (torch.floor(noisy / 0.25) * 0.25 + 0.125).clamp(0, 1)
    logits, logits_q = model(x), model(quantised)
    distance = ((logits - logits_q) ** 2).sum(1).mean()
    assert out.loss.item() == pytest.approx((ce(logits, y) + 9 * distance).item(), rel=1e-5)
    assert out.metrics["bpfc"].item() == pytest.approx(distance.item(), rel=1e-5)
    assert distance > 0  # the quantisation changed the prediction: the term has work to do


def test_mixup_loss_is_the_weighted_ce_of_both_labels():
    objective, model = method_and_model("mixup", alpha=0.4)
    x, y = batch(16)
    for seed in range(3):
        torch.manual_seed(seed)
        out = objective(model, x, y, StepContext(0, 0))
        torch.manual_seed(seed)  # the same draws: lam ~ Beta(0.4, 0.4), then the pairing
        lam = torch.distributions.Beta(0.4, 0.4).sample().item()
        perm = torch.randperm(16)
        logits = model(lam * x + (1 - lam) * x[perm])
        expected = lam * ce(logits, y) + (1 - lam) * ce(logits, y[perm])
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
        assert torch.allclose(out.logits, logits, atol=1e-6)


def test_mixup_targets_follow_the_larger_weight():
    objective, model = method_and_model("mixup")
    x, y = batch(16)
    weights = []
    for seed in range(8):
        torch.manual_seed(seed)
        out = objective(model, x, y, StepContext(0, 0))
        torch.manual_seed(seed)
        lam = torch.distributions.Beta(1.0, 1.0).sample().item()
        perm = torch.randperm(16)
        assert bool((y != y[perm]).any())  # the two label sets differ: the choice is visible
        assert torch.equal(out.targets, y if lam >= 0.5 else y[perm]), lam
        weights.append(lam)
    assert min(weights) < 0.5 < max(weights)  # both cases were checked


def test_pgd_at_loss_is_the_ce_of_pgd_examples():
    objective, model = method_and_model("pgd_at", pgd={"eps": 0.1, "step_size": 0.03, "steps": 3})
    x, y = batch(8)
    twin = copy.deepcopy(model)  # crafting reads BatchNorm statistics the training pass updates
    torch.manual_seed(4)
    out = objective(model, x, y, StepContext(0, 0))
    torch.manual_seed(4)  # the attack's seed comes from torch's generator
    x_adv = create_attack("pgd", twin, eps=0.1, step_size=0.03, steps=3, keep_best=False)(x, y)
    assert 0 < (x_adv - x).abs().max() <= 0.1 + 1e-6
    logits = twin(x_adv)
    assert torch.allclose(out.logits, logits, atol=1e-5)
    assert out.loss.item() == pytest.approx(ce(logits, y).item(), rel=1e-5)
    assert out.loss > ce(twin(x), y)  # the examples are adversarial


def test_trades_loss_is_ce_plus_beta_kl_from_the_clean_prediction():
    objective, model = method_and_model("trades", beta=2.5, pgd={"eps": 0.1, "steps": 3})
    x, y = batch(8)
    twin = copy.deepcopy(model)
    torch.manual_seed(5)
    out = objective(model, x, y, StepContext(0, 0))
    torch.manual_seed(5)
    x_adv = create_attack(
        "pgd", twin, eps=0.1, step_size=2 / 255, steps=3, loss="kl", keep_best=False
    )(x, y)
    logits, logits_adv = twin(x), twin(x_adv)
    p, q = logits.softmax(1), logits_adv.softmax(1)
    kl = (p * (p.log() - q.log())).sum(1).mean()  # KL(p(x) || p(x_adv)), batch mean
    expected = ce(logits, y) + 2.5 * kl
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert out.metrics["kl"].item() == pytest.approx(kl.item(), rel=1e-4) and kl > 0


def test_trades_inner_maximisation_stays_in_the_ball_and_raises_the_kl():
    torch.manual_seed(0)
    config = tiny_config("trades")
    model = build_model(config.model, INFO, "plain").train()
    x, y = batch(8)
    x_adv = craft_pgd(model, x, y, config.method.options.pgd, loss="kl")  # what Trades crafts
    assert model.training  # mode restored
    assert (x_adv - x).abs().max() <= config.method.options.pgd.eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        clean = model.eval()(x)
        kl_adv = trades_kl(clean, model(x_adv))
        kl_noise = trades_kl(clean, model((x + 0.5 * (x_adv - x)).clamp(0, 1)))
    assert kl_adv > kl_noise


def test_smoothed_classifier_forward_and_vote():
    torch.manual_seed(0)
    base = build_model(tiny_config("rs").model, INFO, "plain").eval()
    model = SmoothedClassifier(base, sigma=0.25, n_draws=4, n_votes=5)
    assert model.stochastic
    x, _ = batch(6)
    g = torch.Generator().manual_seed(3)
    log_mean = model(x, generator=g)
    g = torch.Generator().manual_seed(3)
    draws = torch.stack([base(model.noisy(x, g)) for _ in range(4)])
    # the batched pass draws all noise at once: same generator, same numbers, same order
    g = torch.Generator().manual_seed(3)
    noisy = model.noisy(x.unsqueeze(0).expand(4, *x.shape).flatten(0, 1), g)
    batched = base(noisy).view(4, 6, -1)
    assert torch.allclose(draws, batched, atol=1e-5)
    expected = batched.softmax(-1).mean(0).log()
    assert torch.allclose(log_mean, expected, atol=1e-5)
    assert torch.allclose(log_mean.exp().sum(-1), torch.ones(6), atol=1e-5)
    # the vote: the most frequent argmax over the draws
    g = torch.Generator().manual_seed(5)
    votes = model.predict(x, generator=g)
    g = torch.Generator().manual_seed(5)
    noisy = model.noisy(x.unsqueeze(0).expand(5, *x.shape).flatten(0, 1), g)
    counts = F.one_hot(base(noisy).view(5, 6, -1).argmax(-1), INFO.num_classes).sum(0)
    assert (counts.gather(1, votes[:, None]).squeeze(1) == counts.max(1).values).all()
    assert predict(model, x).shape == (6,)
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        SmoothedClassifier(base, sigma=0)
    with pytest.raises(ValueError, match="n_votes must be a positive integer"):
        SmoothedClassifier(base, n_votes=0)


def test_smoothed_vote_breaks_ties_by_mean_probability():
    class Fixed(torch.nn.Module):
        """Draw i of 4 predicts class [0, 1, 1, 0][i] (softmax mass 0.6 vs 0.9)."""

        def forward(self, x):  # x: 4 draws x 2 images
            logits = torch.zeros(4, 2, 3)
            logits[[0, 3], :, 0] = math.log(0.6 / 0.2)
            logits[[1, 2], :, 1] = math.log(0.9 / 0.05)
            return logits.view(8, 3)

    model = SmoothedClassifier(Fixed(), sigma=0.1, n_votes=4)
    assert model.predict(torch.rand(2, 3, 4, 4)).tolist() == [1, 1]
