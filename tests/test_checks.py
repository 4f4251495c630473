"""The one pixel and label check at every edge (models, attacks, evaluation, audit, certify)."""

import pytest
import torch

from ciiv._checks import check_images, check_labels


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
