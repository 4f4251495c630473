"""The one pixel, label and count check at every edge (models, attacks, evaluation, audit,
certify)."""

import numpy as np
import pytest
import torch

from ciiv._checks import check_images, check_labels, positive_int


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (torch.rand(3, 8, 8), {}, r"images must be images \[B, C, H, W\] .* \(3, 8, 8\)"),
        (torch.rand(4), {"image": False}, r"a batch \[B, \.\.\.\]"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), {}, "images has dtype torch.uint8.*uint8"),
        (torch.rand(2, 1, 8, 8), {"channels": 3}, r"expects 3 channel\(s\), got 1"),
        (torch.rand(2, 3, 8, 8), {"size": (16, 16)}, "expects 16x16 images, got 8x8"),
        (torch.rand(0, 3, 8, 8), {"nonempty": True}, "images holds no examples"),
        (torch.rand(2, 3, 8, 8) * 2, {}, r"images: pixels must be finite and in \[0, 1\]"),
        (torch.full((2, 3, 8, 8), float("nan")), {}, "NaN/inf"),
    ],
)
def test_bad_batches_are_refused_by_name(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_images(x, name="images", **kwargs)


def test_valid_batches_pass():
    check_images(torch.rand(2, 3, 8, 8), channels=3, size=(8, 8), nonempty=True)
    check_images(torch.rand(0, 3, 8, 8))  # empty is fine unless refused
    check_images(torch.rand(5, 2), image=False)
    check_images(torch.tensor([[0.0, 1.0]]), image=False)  # both ends of the box are valid


@pytest.mark.parametrize("y", [torch.zeros(3), torch.zeros(2, dtype=torch.long), [0, 1, 2]])
def test_labels_must_be_integer_indices_of_the_batch_size(y):
    with pytest.raises(ValueError, match=r"labels must be integer class indices of shape \[3\]"):
        check_labels(y, 3, name="labels")
    check_labels(torch.zeros(3, dtype=torch.long), 3)


@pytest.mark.parametrize("value", [0, -3, True, 2.0, 2.5, "3", None])
def test_positive_int_refuses_anything_but_an_integer_of_at_least_one(value):
    with pytest.raises(ValueError, match=rf"steps must be a positive integer, got {value!r}"):
        positive_int("steps", value)


def test_positive_int_returns_a_python_int():
    assert positive_int("n", 1) == 1
    value = positive_int("n", np.int64(7))  # numpy integers are integers
    assert value == 7 and type(value) is int


def test_every_edge_uses_the_one_count_check():
    """Models, attacks, certification and the audit settings refuse the same way."""
    from ciiv.attacks import create_attack
    from ciiv.certify import certify
    from ciiv.evaluate.checks import audit_settings
    from ciiv.models import SmoothedClassifier, create_model

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    calls = [
        lambda: create_model("small_cnn", num_classes=True, in_channels=3),
        lambda: create_attack("pgd", net, steps=2.0),
        lambda: SmoothedClassifier(net, n_draws=0),
        lambda: certify(net, torch.rand(1, 3, 2, 2), sigma=0.25, n0=0),
        lambda: audit_settings(0.1, max_eot=0),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="must be a positive integer, got"):
            call()
