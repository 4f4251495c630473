"""The retinotopic sampler against SPEC section 2: reference values, statistics and errors."""

import pytest
import torch

from ciiv.sampling import RetinotopicSampler, grid_centers, spike


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("size", "expected"), [(32, [16, 5, 27]), (64, [32, 11, 53]), (28, [14, 5, 23])]
)
def test_grid_centers_reproduce_official_constants(size, expected):
    centers = grid_centers(size, size)
    assert centers[:3, 0].tolist() == expected  # rows of views 0-2 cycle through c
    assert centers[::3, 1].tolist() == expected  # cols of views 0, 3, 6 cycle through c
    assert centers[0].tolist() == [expected[0], expected[0]]  # view 0 is the image centre


def test_keep_probability_reference_values_32px():
    p = RetinotopicSampler(32).keep_probability()
    assert p.shape == (9, 32, 32)
    assert p[0].min().item() == pytest.approx(0.8013, abs=5e-5)
    assert p[0].mean().item() == pytest.approx(0.9535, abs=5e-5)
    assert (p[0] >= 1).float().mean().item() == pytest.approx(0.286, abs=5e-4)
    assert p.mean().item() == pytest.approx(0.9444, abs=5e-5)
    assert p.min().item() == pytest.approx(0.7239, abs=5e-5)


def test_keep_probability_reference_values_64px():
    p = RetinotopicSampler(64).keep_probability()
    assert p[0].min().item() == pytest.approx(0.6988, abs=5e-5)
    assert p[0].mean().item() == pytest.approx(0.9236, abs=5e-5)


def test_keep_probability_formula_on_a_non_square_image():
    sampler = RetinotopicSampler((20, 30), alpha=10, gamma=0.3)
    row, col = grid_centers(20, 30)[4].tolist()
    i, j = torch.meshgrid(torch.arange(20.0), torch.arange(30.0), indexing="ij")
    d = ((i - row) ** 2 + (j - col) ** 2).sqrt()
    m = (d.max() - d + 10) ** 0.3
    expected = (m / m.max() + 0.1).clamp(max=1)
    torch.testing.assert_close(sampler.keep_probability()[4], expected)


def test_empirical_mask_frequencies_match_keep_probability():
    # With v far above the spike threshold every spike fires, so a view is the mean of its masks.
    sampler = RetinotopicSampler(32, per_example_masks=True)
    batch = 2000
    out = sampler(torch.full((batch, 1, 32, 32), 10.0), generator=_gen(1))
    freq = out.views[:, :, 0].mean(1)  # [L, H, W], over B * K = 6000 draws
    p = sampler.keep_probability()
    sigma = (p * (1 - p) / (batch * sampler.samples_per_view)).sqrt()
    assert ((freq - p).abs() <= 5 * sigma + 1e-4).all()


def test_shared_masks_are_shared_across_batch_and_channels():
    sampler = RetinotopicSampler(16)
    out = sampler(torch.full((4, 3, 16, 16), 10.0), generator=_gen(2))
    assert out.z.shape == (9,)
    first = out.views[:, :1, :1]
    assert torch.allclose(out.views, first.expand_as(out.views), atol=1e-5)


def test_z_equals_the_mean_kept_fraction():
    for per_example in (False, True):
        sampler = RetinotopicSampler(32, per_example_masks=per_example)
        out = sampler(torch.full((5, 3, 32, 32), 10.0), generator=_gen(3))
        kept = out.views[:, :, 0].mean(dim=(-1, -2))  # [L, B]: spikes all fire -> mean of masks
        expected = kept if per_example else kept[:, 0]
        assert out.z.shape == expected.shape
        torch.testing.assert_close(out.z, expected, atol=1e-5, rtol=0)
        if per_example:
            assert out.z.std(1).min() > 0  # masks differ between examples


def test_spike_firing_frequency_matches_formula():
    a = 0.9
    sampler = RetinotopicSampler(32, spike_scale=a, samples_per_view=3, num_views=1)
    values = torch.linspace(-1.5, 1.5, 31)
    v = values[:, None, None, None].expand(31, 3, 32, 32).contiguous()
    always_kept = sampler.keep_probability()[0] >= 1
    rates = torch.stack([sampler(v, generator=_gen(s)).views[0] for s in range(8)])
    rate = rates[..., always_kept].mean(dim=(0, 2, 3))  # over draws, channels, pixels
    n = 8 * 3 * 3 * int(always_kept.sum())
    expected = ((values + a) / (2 * a)).clamp(0, 1)
    assert ((rate - expected).abs() <= 5 * (0.25 / n) ** 0.5 + 1e-4).all()


def test_spike_backward_surrogates():
    pre = torch.tensor([-0.5, -1e-3, 1e-6, 0.3], requires_grad=True)
    values = {}
    for surrogate in ("exact", "identity", "smooth"):
        s = spike(pre, 1e-5, surrogate)
        (grad,) = torch.autograd.grad(s.sum(), pre)
        values[surrogate] = (s.detach(), grad)
    for surrogate in ("identity", "smooth"):
        torch.testing.assert_close(values[surrogate][0], values["exact"][0])
    exact = values["exact"][1]
    assert exact[:2].eq(0).all()  # relu is off: the true gradient vanishes
    assert exact[2] > 1e4  # just above threshold: huge
    torch.testing.assert_close(values["identity"][1], torch.ones(4))
    assert (values["smooth"][1] > 0).all()


def test_generator_reproducibility_and_fresh_draws():
    sampler = RetinotopicSampler(16)
    v = torch.randn(2, 3, 16, 16)
    a, b = sampler(v, generator=_gen(5)), sampler(v, generator=_gen(5))
    torch.testing.assert_close(a.views, b.views)
    assert not torch.equal(sampler(v).views, sampler(v).views)


def test_a_single_view_is_the_centre_view():
    """Views of a bright image show their masks (every spike fires: v > a). With a steep density
    (gamma 10, P(keep) = m) the kept pixels cluster around the view's centre, so the single view
    must match the keep probability of view 0, the image centre, and of no other view."""
    sampler = RetinotopicSampler(16, keep_threshold=1.0, gamma=10.0, per_example_masks=True)
    out = sampler(torch.full((64, 3, 16, 16), 2.5), num_views=1, generator=_gen(0))
    assert out.views.shape == (1, 64, 3, 16, 16)
    distance = (sampler.keep_probability() - out.views[0].mean((0, 1))).square().sum((1, 2))
    assert distance.argmin() == 0 and distance[0] < distance[1:].min() / 10


def test_num_views_override_and_random_centers():
    sampler = RetinotopicSampler(16)
    v = torch.randn(2, 3, 16, 16)
    assert sampler(v, num_views=1).views.shape == (1, 2, 3, 16, 16)
    rc = RetinotopicSampler(16, num_views=12, random_centers=True, per_example_masks=True)
    out = rc(v)
    assert out.views.shape == (12, 2, 3, 16, 16) and out.z.shape == (12, 2)
    assert ((out.views >= 0) & (out.views <= 1)).all()


@pytest.mark.parametrize(
    ("kwargs", "shape", "match"),
    [
        ({"image_size": 32}, (3, 32, 32), "B, C, H, W"),
        ({"image_size": 32}, (1, 3, 28, 28), "built for 32x32"),
        ({"image_size": 4}, None, "smaller than"),
        ({"image_size": 32, "num_views": 10}, None, "9 centres"),
        ({"image_size": 32, "surrogate": "straight"}, None, "unknown surrogate"),
        ({"image_size": 32, "samples_per_view": 0}, None, "samples_per_view"),
    ],
)
def test_bad_input_gives_clear_errors(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        sampler = RetinotopicSampler(**kwargs)
        sampler(torch.zeros(shape))
