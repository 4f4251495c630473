"""The gradient loop (FGSM / PGD): analytic steps on a linear model, success on a trained model,
targeted modes, EOT batching and chunking, forward-pass counting, restarts and the best iterate."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ciiv.attacks import choose_targets, create_attack, get_threat_model
from ciiv.models import Backbone, Classifier

SIZE, CLASSES = 8, 4
DIM = 3 * SIZE * SIZE


def linear_model(seed: int = 0) -> Classifier:
    """logits = W x + b on the raw pixels (mean 0, std 1): the input gradient is analytic."""
    torch.manual_seed(seed)
    return Classifier(Backbone(nn.Flatten(), DIM, CLASSES), (0.0,) * 3, (1.0,) * 3).eval()


def input_grad(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d CE / d x = W^T (softmax(Wx + b) - onehot(y)), per example."""
    head = model.backbone.head
    with torch.no_grad():
        probs = F.softmax(model(x), 1) - F.one_hot(y, CLASSES).float()
        return (probs @ head.weight).view_as(x)


def synthetic(n: int, seed: int):
    """Class k: a fixed random pattern in [0.3, 0.7] plus small noise; linearly separable."""
    protos = torch.rand(CLASSES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(99))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = 0.3 + 0.4 * protos[y] + 0.05 * torch.randn(n, 3, SIZE, SIZE, generator=g)
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained():
    model = linear_model(seed=1)
    x, y = synthetic(256, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    x_test, y_test = synthetic(64, seed=1)
    with torch.no_grad():
        assert (model(x_test).argmax(1) == y_test).float().mean() > 0.95
    return model, x_test, y_test


def inner_batch(n: int = 4, seed: int = 0):
    """Pixels in [0.2, 0.8], so that steps of up to 0.2 never hit the [0, 1] box."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.6 * torch.rand(n, 3, SIZE, SIZE, generator=g)
    return x, torch.randint(0, CLASSES, (n,), generator=g)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_fgsm_linf_is_eps_times_gradient_sign():
    model = linear_model()
    x, y = inner_batch()
    x_adv = create_attack("fgsm", model, eps=0.1)(x, y)
    torch.testing.assert_close(x_adv, x + 0.1 * input_grad(model, x, y).sign())


def test_fgsm_l2_is_eps_times_normalised_gradient():
    model = linear_model()
    x, y = inner_batch()
    x_adv = create_attack("fgsm", model, norm="L2", eps=0.5)(x, y)
    g = input_grad(model, x, y)
    expected = x + 0.5 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(x_adv, expected)


def test_pgd_iterates_match_a_manual_computation():
    model = linear_model()
    x, y = inner_batch()
    attack = create_attack(
        "pgd", model, eps=0.1, step_size=0.06, steps=3, random_start=False, keep_best=False
    )
    expected = x.clone()
    for _ in range(3):
        step = expected + 0.06 * input_grad(model, expected, y).sign()
        expected = x + (step - x).clamp(-0.1, 0.1)
    torch.testing.assert_close(attack(x, y), expected)


@pytest.mark.parametrize("norm, eps", [("Linf", 0.3), ("L2", 3.0)])
def test_pgd_at_large_eps_breaks_a_trained_model(trained, norm, eps):
    model, x, y = trained
    x_adv = create_attack("pgd", model, norm=norm, eps=eps, steps=20, seed=0)(x, y)
    assert accuracy(model, x_adv, y) <= 0.03
    weaker = create_attack("pgd", model, norm=norm, eps=eps / 30, steps=20, seed=0)(x, y)
    assert accuracy(model, weaker, y) > 0.5


def test_choose_targets():
    logits = torch.tensor([[5.0, 1.0, 3.0, -2.0], [0.0, 4.0, 2.0, 1.0]])
    y = torch.tensor([0, 2])
    assert choose_targets(logits, y, "most_likely").tolist() == [2, 1]
    assert choose_targets(logits, y, "least_likely").tolist() == [3, 0]
    y = torch.randint(0, 4, (4000,), generator=torch.Generator().manual_seed(0))
    t = choose_targets(torch.zeros(4000, 4), y, "random", torch.Generator().manual_seed(1))
    assert bool((t != y).all())
    counts = torch.bincount((t - y) % 4, minlength=4)  # offsets 1, 2, 3 equally likely
    assert counts[0] == 0 and counts[1:].min() > 1200
    with pytest.raises(ValueError, match="valid: random"):
        choose_targets(logits, y[:2], "nearest")


@pytest.mark.parametrize("mode", ["random", "most_likely", "least_likely"])
def test_targeted_pgd_reaches_its_target(trained, mode):
    model, x, y = trained
    x, y = x[:16], y[:16]
    with torch.no_grad():
        logits = model(x)
    targets = choose_targets(logits, y, mode, torch.Generator().manual_seed(4))
    attack = create_attack("pgd", model, eps=0.4, steps=30, targeted=mode, seed=4)
    x_adv = attack(x, y)
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == targets).float().mean() >= 0.9


def test_forward_passes_count_images():
    model = linear_model()
    x, y = inner_batch(n=4)
    pgd = create_attack("pgd", model, eps=0.01, steps=3, eot=2)
    pgd(x, y)
    assert pgd.forward_passes == (3 + 1) * 2 * 4  # every iterate (and the last) x E draws x B
    pgd(x, y)
    assert pgd.forward_passes == 2 * (3 + 1) * 2 * 4  # cumulative
    fgsm = create_attack("fgsm", model, eps=0.01, eot=3)
    fgsm(x, y)
    assert fgsm.forward_passes == 3 * 4
    targeted = create_attack("pgd", model, eps=0.01, steps=3, eot=2, targeted="most_likely")
    targeted(x, y)
    assert targeted.forward_passes == (3 + 1 + 1) * 2 * 4  # + the clean pass choosing targets


def test_eot_batching_and_chunking_give_the_same_gradient_and_count():
    """On a deterministic model E draws are identical, and chunking never changes the function."""
    model = linear_model()
    x, y = inner_batch(n=5)
    reference = create_attack("pgd", model).loss_gradient(x, y)
    for eot, max_batch in [(4, None), (4, 3), (1, 2)]:
        attack = create_attack("pgd", model, eot=eot, max_batch=max_batch)
        estimate = attack.loss_gradient(x, y)
        torch.testing.assert_close(estimate.grad, reference.grad)
        torch.testing.assert_close(estimate.value, reference.value)
        assert attack.forward_passes == eot * 5


def test_margin_loss_is_the_cw_margin_and_its_gradient_is_analytic():
    """loss="margin": J = max_{j != y} z_j - z_y, so on a linear model dJ/dx = W_j* - W_y (and
    targeted J = z_t - max_{j != t} z_j); per_draw returns the E draws, whose mean is the EOT."""
    model = linear_model(seed=4)
    x, y = inner_batch(n=6)
    weight = model.backbone.head.weight
    with torch.no_grad():
        logits = model(x)
    runner_up = logits.scatter(1, y[:, None], float("-inf")).argmax(1)
    estimate = create_attack("pgd", model, loss="margin").loss_gradient(x, y)
    expected = logits.gather(1, runner_up[:, None])[:, 0] - logits.gather(1, y[:, None])[:, 0]
    torch.testing.assert_close(estimate.value, expected)
    torch.testing.assert_close(estimate.grad, (weight[runner_up] - weight[y]).view_as(x))
    targeted = create_attack("pgd", model, loss="margin", targeted="random")
    best_other = logits.scatter(1, runner_up[:, None], float("-inf")).amax(1)
    toward = logits.gather(1, runner_up[:, None])[:, 0] - best_other
    torch.testing.assert_close(targeted.loss_gradient(x, runner_up).value, toward)
    draws = create_attack("pgd", model, loss="margin", eot=3).loss_gradient(x, y, per_draw=True)
    assert draws.grad.shape == (3, *x.shape) and draws.value.shape == draws.success.shape == (3, 6)
    torch.testing.assert_close(draws.grad.mean(0), estimate.grad)


def test_restarts_only_attack_points_still_standing(trained):
    model, x, y = trained
    x, y = x[:4], y[:4]
    easy = create_attack("pgd", model, eps=0.5, step_size=0.5, steps=1, restarts=3)
    easy(x, y)
    assert easy.forward_passes == 2 * 4  # every point fooled by the first restart
    hard = create_attack("pgd", model, eps=1e-4, steps=1, restarts=3)
    hard(x, y)
    assert hard.forward_passes == 3 * 2 * 4


def test_best_iterate_is_never_worse_than_the_last(trained):
    model, x, y = trained
    kwargs = dict(eps=0.05, step_size=0.1, steps=5, seed=2)  # steps > eps: iterates oscillate
    best = create_attack("pgd", model, **kwargs)(x, y)
    last = create_attack("pgd", model, keep_best=False, **kwargs)(x, y)
    assert not torch.equal(best, last)  # same trajectory (same seed), different pick
    with torch.no_grad():
        lb, ll = model(best), model(last)
    fooled_best, fooled_last = lb.argmax(1) != y, ll.argmax(1) != y
    assert bool((fooled_best >= fooled_last).all())
    same = fooled_best == fooled_last
    loss_best = F.cross_entropy(lb, y, reduction="none")
    loss_last = F.cross_entropy(ll, y, reduction="none")
    assert bool((loss_best[same] >= loss_last[same] - 1e-6).all())


def test_random_start_is_always_applied():
    """A constant model gives no gradient: only the random start can move the points."""
    model = linear_model()
    nn.init.zeros_(model.backbone.head.weight)
    x, y = inner_batch(n=8)
    x_adv = create_attack("pgd", model, eps=0.05, steps=2, seed=0)(x, y)
    assert bool((x_adv != x).flatten(1).any(1).all())
    x_fixed = create_attack("pgd", model, eps=0.05, steps=2, random_start=False)(x, y)
    assert torch.equal(x_fixed, x)


def test_attack_works_inside_no_grad_and_leaves_parameters_alone(trained):
    model, x, y = trained
    with torch.no_grad():
        x_adv = create_attack("pgd", model, eps=0.3, steps=5)(x[:8], y[:8])
    assert accuracy(model, x_adv, y[:8]) == 0.0
    assert all(p.grad is None for p in model.parameters())


def test_adaptive_loss_needs_a_ciiv_model():
    with pytest.raises(ValueError, match="forward_views"):
        create_attack("pgd", linear_model(), loss="adaptive")


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_kl_loss_is_trades_inner_maximisation(norm):
    """loss="kl" maximises KL(p(x) || p(x_adv)) summed over classes from a random start (its
    gradient is 0 at x itself): the same iterates as TRADES' projected ascent written by hand."""
    model = linear_model(seed=3)
    x, y = inner_batch(6, seed=2)
    eps, step = (0.1, 0.03) if norm == "Linf" else (1.0, 0.3)
    attack = create_attack("pgd", model, norm=norm, eps=eps, step_size=step, steps=3,
                           loss="kl", keep_best=False, seed=5)  # fmt: skip
    x_adv = attack(x, y)

    def kl(point: torch.Tensor) -> torch.Tensor:
        clean = model(x).detach().log_softmax(1)
        return F.kl_div(model(point).log_softmax(1), clean, reduction="none", log_target=True)

    threat = get_threat_model(norm, eps)
    point = threat.random_init(x, torch.Generator().manual_seed(5))  # the attack's own draw
    start = point.clone()
    for _ in range(3):
        point.requires_grad_(True)
        (grad,) = torch.autograd.grad(kl(point).sum(), point)
        point = threat.project(threat.step(point.detach(), grad, step), x)
    assert torch.allclose(x_adv, point, atol=1e-6)
    with torch.no_grad():
        assert (kl(x_adv).sum(1) > kl(start).sum(1)).all()
    with pytest.raises(ValueError, match="untargeted"):
        create_attack("pgd", model, loss="kl", targeted="random")
    with pytest.raises(ValueError, match="clean batch"):
        attack.loss_gradient(x, y)
