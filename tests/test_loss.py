"""CiiV losses against a direct, loop-based transcription of SPEC section 4."""

import pytest
import torch
import torch.nn.functional as F

from ciiv.loss import RegWeightSchedule, consistency_loss, view_cross_entropy


def _reference_consistency(features, z, kind):
    """SPEC section 4 written out with explicit loops over views, examples and dimensions."""
    num_views, batch, dims = features.shape
    total = 0.0
    for l in range(num_views):
        others = [k for k in range(num_views) if k != l]
        per_example = 0.0
        for b in range(batch):
            zl = z[l] if z.dim() == 1 else z[l, b]
            zbar = sum(z[k] if z.dim() == 1 else z[k, b] for k in others) / len(others)
            phibar = sum(features[k, b] for k in others) / len(others)
            for d in range(dims):
                diff = float(features[l, b, d] * zbar - phibar[d] * zl)
                if kind == "l2":
                    per_example += diff**2
                else:
                    per_example += 0.5 * diff**2 if abs(diff) < 1 else abs(diff) - 0.5
        total += per_example / batch
    return total / num_views


@pytest.mark.parametrize("kind", ["smooth_l1", "l2"])
@pytest.mark.parametrize("per_example", [False, True])
def test_consistency_loss_equals_loop_reference(kind, per_example):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(4, 3, 5, generator=g, dtype=torch.float64) * 2
    shape = (4, 3) if per_example else (4,)
    z = 0.7 + 0.3 * torch.rand(shape, generator=g, dtype=torch.float64)
    got = consistency_loss(features, z, kind).item()
    assert got == pytest.approx(_reference_consistency(features, z, kind), rel=1e-10)


@pytest.mark.parametrize("kind", ["smooth_l1", "l2"])
def test_per_example_consistency_averages_to_the_loss(kind):
    features, z = torch.randn(4, 5, 7), 0.5 + torch.rand(4, 5)
    per = consistency_loss(features, z, kind, reduction="none")
    assert per.shape == (5,)
    torch.testing.assert_close(per.mean(), consistency_loss(features, z, kind))
    for b in range(5):  # each example's value depends on that example alone
        one = consistency_loss(features[:, b : b + 1], z[:, b : b + 1], kind)
        torch.testing.assert_close(per[b], one)


def test_consistency_loss_is_zero_when_features_scale_with_density():
    z = torch.tensor([0.9, 0.8, 0.95])
    base = torch.randn(1, 4, 6)
    assert consistency_loss(base * z[:, None, None], z).item() == pytest.approx(0, abs=1e-6)
    assert consistency_loss(base.expand(3, 4, 6), z).item() > 0


def test_consistency_loss_gradients_and_errors():
    features = torch.randn(3, 2, 4, requires_grad=True)
    consistency_loss(features, torch.rand(3) + 0.5).backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2 views"):
        consistency_loss(torch.randn(1, 2, 4), torch.ones(1))
    with pytest.raises(ValueError, match="z must have shape"):
        consistency_loss(torch.randn(3, 2, 4), torch.ones(2))
    with pytest.raises(ValueError, match="unknown consistency kind"):
        consistency_loss(torch.randn(3, 2, 4), torch.ones(3), kind="l1")


def test_view_cross_entropy_equals_mean_over_views():
    logits, y = torch.randn(5, 4, 3), torch.tensor([0, 2, 1, 1])
    expected = sum(F.cross_entropy(logits[l], y) for l in range(5)) / 5
    torch.testing.assert_close(view_cross_entropy(logits, y), expected)
    per = view_cross_entropy(logits, y, reduction="none")
    assert per.shape == (4,)
    torch.testing.assert_close(per.mean(), expected)


def test_reg_weight_schedule_matches_paper():
    schedule = RegWeightSchedule()
    assert [schedule(e) for e in (0, 24, 25, 49, 50, 74, 75, 109)] == pytest.approx(
        [0.1, 0.1, 1, 1, 10, 10, 100, 100]
    )
    with pytest.raises(ValueError, match="increasing"):
        RegWeightSchedule(milestones=(50, 25))
