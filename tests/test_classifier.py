"""CiiVClassifier and Classifier: batched views equal per-view passes; errors are clear."""

import pytest
import torch

from ciiv.data import get_dataset_info
from ciiv.models import (
    CentreView,
    CiiVClassifier,
    Classifier,
    ModelConfig,
    MultiView,
    SmoothedClassifier,
    SupportsBPDA,
    SupportsIndependentDraws,
    build_model,
    create_model,
    predict,
)
from ciiv.sampling import RetinotopicSampler

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _ciiv(size=16, channels=3, **sampler_kwargs) -> CiiVClassifier:
    torch.manual_seed(0)
    backbone = create_model("small_cnn", num_classes=4, in_channels=channels)
    sampler = RetinotopicSampler(size, **sampler_kwargs)
    return CiiVClassifier(backbone, sampler, MEAN[:channels], STD[:channels]).eval()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("per_example", [False, True])
def test_batched_views_equal_sequential_per_view_passes(per_example):
    model = _ciiv(per_example_masks=per_example)
    x = torch.rand(3, 3, 16, 16)
    out = model.forward_views(x, generator=_gen(7))
    v = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    sampled = model.sampler(v, generator=_gen(7))
    for view in range(9):
        features = model.backbone.forward_features(sampled.views[view])
        torch.testing.assert_close(out.features[view], features, atol=1e-5, rtol=1e-4)
        logits = model.backbone.forward_head(features)
        torch.testing.assert_close(out.logits[view], logits, atol=1e-5, rtol=1e-4)
    z = sampled.z if per_example else sampled.z[:, None]
    expected = (torch.stack([out.logits[v] / z[v, :, None] for v in range(9)])).mean(0)
    torch.testing.assert_close(CiiVClassifier.combine(out.logits, out.z), expected)


def test_forward_is_random_unless_randomness_is_fixed():
    model, x = _ciiv(), torch.rand(2, 3, 16, 16)
    assert not torch.equal(model(x), model(x))
    with model.fixed_randomness(3):
        torch.testing.assert_close(model(x), model(x))
    assert model._fixed_seed is None
    torch.testing.assert_close(model.forward_expected(x), model.forward_expected(x))


def test_centre_view_is_the_model_on_its_centre_view_only():
    model, x = _ciiv(), torch.rand(2, 3, 16, 16)
    centre = CentreView(model)
    out = centre.forward_views(x)
    assert out.logits.shape == (1, 2, 4) and out.z.shape == (1,)
    assert centre.num_views == 1 and model.num_views == 9  # the model itself is unchanged
    # Its logits are the model's prediction rule on view 0: logits_0 / z_0 of the same draws.
    with model.fixed_randomness(5):
        single = model.forward_views(x, num_views=1)
        torch.testing.assert_close(centre(x), single.logits[0] / single.z[0])
        assert not torch.allclose(centre(x), model(x))  # not the nine-view prediction
    with pytest.raises(ValueError, match="one view"):
        centre.forward_views(x, num_views=2)
    # Which view: on a white image every spike fires (v > a), so a view shows its masks; with a
    # steep density (P(keep) = m, gamma 10) they cluster around the view's own centre.
    model = _ciiv(keep_threshold=1.0, gamma=10.0, per_example_masks=True)
    views = []
    model.sampler.register_forward_hook(lambda module, args, out: views.append(out.views))
    CentreView(model)(torch.ones(64, 3, 16, 16))
    assert views[0].shape[0] == 1
    mean = torch.cat(views, 1)[0].mean((0, 1))  # [H, W]
    distance = (model.sampler.keep_probability() - mean).square().sum((1, 2))
    assert distance.argmin() == 0 and distance[0] < distance[1:].min() / 10


def test_centre_view_passes_bpda_draws_and_declarations_through():
    model = _ciiv()
    centre = CentreView(model)
    with centre.bpda("smooth"):
        assert model.sampler.surrogate == "smooth"
    with centre.independent_draws():
        assert model.sampler.per_example_masks
    assert model.sampler.surrogate == "exact" and not model.sampler.per_example_masks
    assert centre.stochastic is True and centre.independent_rows is True
    with model.fixed_randomness(0):
        assert centre.independent_rows is False  # what the model declares, when it is asked
    assert all(p is q for p, q in zip(centre.parameters(), model.parameters(), strict=True))
    centre.train()
    assert model.training  # one module tree: modes are shared
    with pytest.raises(TypeError, match="MultiView"):
        CentreView(Classifier(create_model("small_cnn", num_classes=4, in_channels=3), MEAN, STD))


def test_the_interfaces_are_what_the_models_offer():
    ciiv = _ciiv()
    plain = Classifier(create_model("small_cnn", num_classes=4, in_channels=3), MEAN, STD)
    smoothed = SmoothedClassifier(plain)
    offered = {
        "ciiv": (ciiv, (MultiView, SupportsBPDA, SupportsIndependentDraws)),
        "centre": (CentreView(ciiv), (MultiView, SupportsBPDA, SupportsIndependentDraws)),
        "plain": (plain, ()),
        "smoothed": (smoothed, (SupportsIndependentDraws,)),
    }
    for name, (model, protocols) in offered.items():
        for protocol in (MultiView, SupportsBPDA, SupportsIndependentDraws):
            assert isinstance(model, protocol) == (protocol in protocols), (name, protocol)


def test_gradients_reach_input_and_every_parameter():
    model = _ciiv().train()
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    with model.bpda("identity"):
        model(x).sum().backward()
    assert model.sampler.surrogate == "exact"  # restored
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_exact_gradient_vanishes_where_bpda_does_not():
    # Black pixels normalise far below -a: the spike's relu is always off, so the true gradient is 0
    # there; the straight-through substitute still passes a gradient.
    model = _ciiv(spike_scale=0.9)
    x = torch.rand(2, 3, 16, 16)
    x[..., :8] = 0  # left half black
    x.requires_grad_(True)
    (exact,) = torch.autograd.grad(model(x).sum(), x)
    with model.bpda("identity"):
        (bpda,) = torch.autograd.grad(model(x).sum(), x)
    assert exact[..., :8].abs().max() == 0 and exact[..., 8:].abs().max() > 0
    assert bpda[..., :8].abs().max() > 0


def test_one_channel_input_and_plain_classifier():
    model = _ciiv(channels=1)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 4)
    plain = Classifier(create_model("small_cnn", num_classes=4, in_channels=3), MEAN, STD)
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(predict(plain.eval(), x), plain(x).argmax(1))
    assert not plain.stochastic and model.stochastic


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.rand(3, 16, 16), r"\[B, C, H, W\]"),
        (torch.rand(2, 1, 16, 16), "3 channel"),
        (torch.rand(2, 3, 16, 16) * 2, r"in \[0, 1\]"),
        (torch.full((2, 3, 16, 16), float("nan")), "NaN"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "divide uint8"),
        (torch.rand(2, 3, 12, 12), "16x16"),
    ],
)
def test_bad_input_gives_clear_errors(x, match):
    with pytest.raises(ValueError, match=match):
        _ciiv()(x)


def test_bad_surrogate_and_normalisation():
    with pytest.raises(ValueError, match="unknown surrogate"), _ciiv().bpda("straight"):
        pass
    with pytest.raises(ValueError, match="std > 0"):
        Classifier(create_model("small_cnn", num_classes=2, in_channels=1), (0.5,), (0.0,))


def test_build_model_refuses_an_unknown_kind_listing_the_valid_ones():
    info = get_dataset_info("shapes")
    with pytest.raises(ValueError, match="unknown model kind 'cnn'; valid: plain, ciiv, smoothed"):
        build_model(ModelConfig(backbone="small_cnn"), info, kind="cnn")
