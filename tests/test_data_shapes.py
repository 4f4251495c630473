"""The synthetic shapes generator: balance, confounding statistics, rendering, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from ciiv.data import generate_shapes
from ciiv.data.shapes import PALETTE, shapes_crop_padding


def _agreement(labels: torch.Tensor, colors: torch.Tensor) -> float:
    return (labels == colors).double().mean().item()


def test_output_types_and_class_balance():
    images, labels, colors = generate_shapes(1001, num_classes=4, seed=0)
    assert images.shape == (1001, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == colors.dtype == torch.int64
    counts = torch.bincount(labels, minlength=4)
    assert counts.max() - counts.min() <= 1
    assert int(colors.min()) >= 0 and int(colors.max()) < 4


@pytest.mark.parametrize("rho", [0.9, 0.6])
def test_colour_agrees_with_class_with_probability_rho(rho):
    n = 4000
    _, labels, colors = generate_shapes(n, rho=rho, seed=1)
    tolerance = 4 * math.sqrt(rho * (1 - rho) / n)
    assert abs(_agreement(labels, colors) - rho) < tolerance
    # A disagreeing colour is uniform over the other classes' colours.
    wrong = colors[labels != colors]
    share = torch.bincount(wrong, minlength=4).double() / wrong.numel()
    assert (share - 0.25).abs().max() < 0.06


def test_shifted_colour_is_independent_of_class():
    num_classes, n = 5, 5000
    _, labels, colors = generate_shapes(n, rho=1 / num_classes, num_classes=num_classes, seed=2)
    joint = torch.zeros(num_classes, num_classes)
    joint.index_put_((labels, colors), torch.ones(n), accumulate=True)
    conditional = joint / joint.sum(1, keepdim=True)  # P(colour | class)
    expected_sd = math.sqrt(0.2 * 0.8 / (n / num_classes))
    assert (conditional - 1 / num_classes).abs().max() < 4 * expected_sd


def test_rho_extremes():
    _, labels, colors = generate_shapes(300, rho=1.0, seed=3)
    assert torch.equal(labels, colors)
    _, labels, colors = generate_shapes(300, rho=0.0, seed=3)
    assert not (labels == colors).any()


def test_deterministic_for_a_seed():
    a = generate_shapes(64, seed=7)
    b = generate_shapes(64, seed=7)
    c = generate_shapes(64, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.images, c.images)


def test_background_shows_the_dominant_colour():
    images, _, colors = generate_shapes(200, rho=0.5, num_classes=6, seed=4)
    x = images.double() / 255
    background = x.amax(1) > 0  # the shape is pure black
    mean_colour = (x * background[:, None]).sum((2, 3)) / background.sum((1, 2))[:, None]
    nearest = torch.cdist(mean_colour.float(), PALETTE).argmin(1)
    assert torch.equal(nearest, colors)


@pytest.mark.parametrize("image_size", [32, 48])
def test_shapes_are_large_and_keep_the_crop_margin(image_size):
    images, labels, _ = generate_shapes(300, num_classes=6, image_size=image_size, seed=5)
    shape = images.amax(1) == 0  # [N, S, S]
    area = shape.double().mean((1, 2))
    assert area.min() > 0.03  # recognisable: several dozen pixels at 32 px
    margin = shapes_crop_padding(image_size)
    border = torch.ones(image_size, image_size, dtype=torch.bool)
    border[margin:-margin, margin:-margin] = False
    assert not (shape & border).any()  # fully inside, never touched by the crop
    for k in range(6):  # every class draws something
        assert (labels == k).any() and area[labels == k].min() > 0


def test_shapes_differ_between_classes():
    # Mean silhouette per class (same centre and size) must differ clearly between any two classes.
    n = 600
    images, labels, _ = generate_shapes(n, num_classes=6, seed=6)
    shape = (images.amax(1) == 0).double()
    fill = torch.stack([shape[labels == k].mean(0).mean() for k in range(6)])
    profile = torch.stack([shape[labels == k].mean((0, 1)) for k in range(6)])  # column profile
    descriptors = torch.cat([fill[:, None] * 10, profile], 1)
    distances = torch.cdist(descriptors, descriptors) + torch.eye(6) * 1e9
    assert distances.min() > 0.05


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 1}, {"num_classes": 7}, {"image_size": 8}, {"rho": 1.5}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        generate_shapes(10, **kwargs)
