"""Randomness ciiv does not own: how draws go through a model (ciiv.attacks.draws), the spread
test for models that declare nothing, its effect on EOT attacks, and seeding of Python's and
NumPy's generators.

The foreign models here are plain nn.Modules that declare nothing, as a user's defence would be.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from ciiv.attacks import (
    RowVerdict,
    assume_rows,
    create_attack,
    draw_calls,
    draw_layout,
    independent_draws,
    known_rows,
    measure_rows,
    row_verdict,
    rows_independent,
)
from ciiv.evaluate import evaluate_robustness
from ciiv.evaluate.audit import audit
from ciiv.evaluate.engine import draw_predictions, seeded
from ciiv.models import CiiVClassifier, Classifier, SmoothedClassifier, create_model
from ciiv.sampling import RetinotopicSampler

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 16
PATTERN = torch.randint(0, 2, (3, SIZE, SIZE), generator=torch.Generator().manual_seed(5)) * 2 - 1


class BatchMask(nn.Module):
    """A randomized defence that draws ONE pixel mask per forward call for the whole batch (keep
    probability 1/2, rescaled by 2), in front of a fixed linear two-class score.

    score(x) = mean_i 2 m_i u_i (x_i - 1/2) with the class pattern u in {-1, +1}^D; logits
    (-score, score). Class-1 images are 1/2 + 0.1 u, so their score is about 0.1 whatever the mask
    (D = 768 pixels average it out). The gradient of one draw is u * m: it moves only the pixels
    that one mask kept, half of them, which is what makes shared EOT draws weaker.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("u", PATTERN.float().flatten())

    def forward(self, x: Tensor) -> Tensor:
        mask = (torch.rand(1, *x.shape[1:], device=x.device) < 0.5).to(x.dtype) * 2
        score = ((x - 0.5) * mask).flatten(1) @ self.u / self.u.numel()
        return torch.stack([-score, score], 1)


class PerRowMask(BatchMask):
    """The same defence with one mask per row: stacked copies are independent draws."""

    def forward(self, x: Tensor) -> Tensor:
        mask = (torch.rand(x.shape, device=x.device) < 0.5).to(x.dtype) * 2
        score = ((x - 0.5) * mask).flatten(1) @ self.u / self.u.numel()
        return torch.stack([-score, score], 1)


def mask_data(n: int) -> tuple[Tensor, Tensor]:
    """Class-1 images 1/2 + 0.1 u, class-0 images 1/2 - 0.1 u, each with its own faint noise."""
    y = torch.arange(n) % 2
    sign = (2 * y - 1).float()[:, None, None, None]
    noise = 0.01 * torch.randn(n, *PATTERN.shape, generator=torch.Generator().manual_seed(n))
    return 0.5 + 0.1 * sign * PATTERN.float() + noise, y


FGSM_SUITE = {
    "name": "fgsm-eot",
    "norm": "Linf",
    "budget": {"default": 0.15},
    "entries": [{"name": "fgsm", "attack": "fgsm", "eot": "protocol"}],
}


# -- layout and verdicts -------------------------------------------------------------------------


def test_draw_calls_stack_independent_rows_and_keep_one_draw_per_call_otherwise():
    assert draw_calls(3, 4, None, True) == [slice(0, 12)]
    assert draw_calls(3, 4, 5, True) == [slice(0, 5), slice(5, 10), slice(10, 12)]
    assert draw_calls(3, 2, None, False) == [slice(0, 3), slice(3, 6)]
    assert draw_calls(3, 2, 2, False) == [slice(0, 2), slice(2, 3), slice(3, 5), slice(5, 6)]
    for calls in (draw_calls(5, 3, 4, False), draw_calls(5, 3, None, False)):
        covered = [r for c in calls for r in range(c.start, c.stop)]
        assert covered == list(range(15))
        assert all(len({r % 5 for r in range(c.start, c.stop)}) == c.stop - c.start for c in calls)


def test_draw_layout_stacks_only_declared_independent_rows_inside_their_context():
    backbone = create_model("small_cnn", num_classes=3, in_channels=3, width=4)
    ciiv = CiiVClassifier(backbone, RetinotopicSampler(8, num_views=2), [0.5] * 3, [0.25] * 3)
    calls, context = draw_layout(ciiv, 3, 4, 5)
    assert calls == draw_calls(3, 4, 5, True)
    assert not ciiv.sampler.per_example_masks
    with context:
        assert ciiv.sampler.per_example_masks
    assert not ciiv.sampler.per_example_masks
    calls, context = draw_layout(ciiv, 3, 1, None)  # one draw: nothing to make independent
    assert calls == [slice(0, 3)]
    with context:
        assert not ciiv.sampler.per_example_masks
    calls, _ = draw_layout(BatchMask(), 3, 2, None)  # unknown rows: one call per draw
    assert calls == draw_calls(3, 2, None, False)
    with assume_rows(ciiv, RowVerdict(independent=False, source="measured")):
        assert draw_layout(ciiv, 3, 2, None)[0] == [slice(0, 6)]  # the declaration wins
    with ciiv.fixed_randomness(0):  # declares shared rows
        assert draw_layout(ciiv, 3, 2, None)[0] == draw_calls(3, 2, None, False)


def test_the_spread_test_tells_shared_from_independent_rows():
    x, _ = mask_data(8)
    torch.manual_seed(0)
    shared = measure_rows(BatchMask(), x)
    assert not shared.independent and shared.source == "measured"
    assert shared.spread_ratio == 0.0 and shared.p_value == pytest.approx(1 / 1000)
    assert shared.forward_passes == 4 * 4 * 8 and shared.layout == "one call per draw"
    independent = measure_rows(PerRowMask(), x)
    assert independent.independent and 0.5 < independent.spread_ratio < 2
    assert independent.p_value >= 0.01 and independent.layout == "stacked"
    deterministic = measure_rows(nn.Flatten(), x)
    assert deterministic.independent and deterministic.source == "deterministic"


def test_partly_shared_randomness_is_detected_and_independent_rows_rarely_are():
    class Partly(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.flatten(1)[:, :5] + torch.randn(len(x), 5) + 0.5 * torch.randn(1, 5)

    x = torch.rand(8, 1, 4, 4)
    torch.manual_seed(1)
    partly = [measure_rows(Partly(), x, seed=s) for s in range(5)]
    assert not any(v.independent for v in partly)
    assert all(0.5 < v.spread_ratio < 0.95 for v in partly)  # 1 / (1 + 0.25) = 0.8
    # The p-value is exact under independence: about 1 % of verdicts are false alarms.
    alarms = sum(not measure_rows(PerRowMask(), mask_data(8)[0], seed=s).independent
                 for s in range(100))  # fmt: skip
    assert alarms <= 5


def test_declarations_hooks_and_assumed_verdicts():
    torch.manual_seed(0)
    backbone = create_model("small_cnn", num_classes=3, in_channels=3, width=4)
    ciiv = CiiVClassifier(backbone, RetinotopicSampler(8, num_views=2), [0.5] * 3, [0.25] * 3)
    assert known_rows(ciiv) == RowVerdict(independent=True, source="declared")
    assert not ciiv.sampler.per_example_masks
    with independent_draws(ciiv):  # the module-level entry point calls the model's method
        assert ciiv.sampler.per_example_masks
        with ciiv.independent_draws():  # nested: the outer setting survives the inner block
            pass
        assert ciiv.sampler.per_example_masks
    assert not ciiv.sampler.per_example_masks
    with ciiv.fixed_randomness(0):
        assert not rows_independent(ciiv)

    plain = Classifier(backbone, [0.5] * 3, [0.25] * 3)
    assert rows_independent(plain)  # stochastic = False: equal copies need no independence
    assert rows_independent(SmoothedClassifier(plain))
    assert rows_independent(SmoothedClassifier(ciiv))  # what the CiiV base declares
    foreign = BatchMask()
    assert known_rows(foreign) is None and not rows_independent(foreign)
    assert known_rows(SmoothedClassifier(foreign)) is None
    verdict = RowVerdict(independent=True, source="measured", spread_ratio=1.0, p_value=0.5)
    with assume_rows(foreign, verdict):
        assert rows_independent(foreign) and not rows_independent(BatchMask())
        assert row_verdict(foreign, torch.rand(2, 3, SIZE, SIZE)) is verdict
    assert not rows_independent(foreign)


# -- the effect on attacks and on the evaluation -------------------------------------------------


def _calls_with_copies(model: nn.Module) -> list[bool]:
    """Per forward call of ``model``: whether it held two copies of the same image."""
    found: list[bool] = []

    def hook(_m: nn.Module, args: tuple) -> None:
        rows = args[0].flatten(1)
        found.append(len(torch.unique(rows, dim=0)) < len(rows))

    model.register_forward_pre_hook(hook)
    return found


def test_pgd_eot_draws_one_call_per_draw_unless_rows_are_independent():
    x, y = mask_data(6)
    model = BatchMask()
    copies = _calls_with_copies(model)
    attack = create_attack("pgd", model, eps=0.1, steps=2, eot=4, seed=0)
    attack(x, y)
    assert copies and not any(copies)
    assert attack.forward_passes == 6 * 4 * 3  # (steps + final estimate) x E x B, as before
    copies.clear()
    with assume_rows(model, RowVerdict(independent=True, source="measured")):
        attack(x, y)
    assert all(copies)  # stacked: every call holds the E copies


def test_batch_shared_randomness_is_detected_and_attacked_with_independent_draws():
    """Issue 11.1: the EOT draws of a model that draws once per call must be separate calls."""
    x, y = mask_data(24)

    class DeclaresShared(BatchMask):
        independent_rows = False

    class ClaimsIndependent(BatchMask):  # a false claim: the draws get stacked and shared
        independent_rows = True

    results, copies = {}, {}
    for name, cls in (("detected", BatchMask), ("one_call_per_draw", DeclaresShared),
                      ("stacked", ClaimsIndependent)):  # fmt: skip
        model = cls()
        copies[name] = _calls_with_copies(model)
        results[name] = evaluate_robustness(  # max_batch: all E * B draws in one call
            model, x, y, suite=FGSM_SUITE, seed=3, batch_size=12, max_batch=1000, audit=False
        )
    detected = results["detected"].summary
    rows = detected["randomness"]["rows"]
    assert rows["source"] == "measured" and not rows["independent"]
    assert rows["spread_ratio"] == 0.0 and "one call per draw" in detected["randomness"]["draws"]
    assert detected["eot"] == 8 and detected["draws"] == 10
    assert detected["forward_passes_by_source"]["randomness_detection"] == 2 * 8 + 4 * 4 * 8
    # Only the spread test's four calls stacked copies of an image.
    assert sum(copies["detected"]) == 4 and not any(copies["one_call_per_draw"])
    assert sum(copies["stacked"]) > 4
    # The detected model is evaluated exactly as one call per draw is, and the shared draws of
    # stacked EOT leave it looking robust: a single mask moves half of the pixels.
    same = results["one_call_per_draw"]
    assert results["detected"].rows == same.rows
    assert results["detected"].clean_accuracy == 1.0
    assert results["detected"].robust_accuracy == same.robust_accuracy <= 0.1
    assert results["stacked"].robust_accuracy >= 0.9


def test_draw_predictions_follow_the_verdict():
    x, _ = mask_data(5)
    model = BatchMask()
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])))
    draw_predictions(model, x, 3, max_batch=8)
    assert sizes == [5, 5, 5]
    sizes.clear()
    with assume_rows(model, RowVerdict(independent=True, source="measured")):
        draw_predictions(model, x, 3, max_batch=8)
    assert sizes == [8, 7]


# -- randomness ciiv does not seed -----------------------------------------------------------------


class PythonAndNumpyRandom(nn.Module):
    """A foreign defence drawing a shift with Python's ``random`` and noise with ``numpy.random``
    (the authors' CiiV code draws its centres with ``random``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3 * SIZE * SIZE, 2)

    def forward(self, x: Tensor) -> Tensor:
        shifted = torch.roll(x, random.randrange(3), dims=-1)
        noise = torch.from_numpy(np.random.standard_normal((x.shape[0], 2))).to(x.dtype)  # noqa: NPY002
        return self.linear(shifted.flatten(1)) + 0.3 * noise


def test_models_drawing_from_random_and_numpy_are_reproducible_under_a_seed():
    x, y = mask_data(16)
    model = PythonAndNumpyRandom()
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    kwargs = {"suite": FGSM_SUITE, "eot": 2, "draws": 3, "batch_size": 8, "audit": False}
    first = evaluate_robustness(model, x, y, seed=1, **kwargs)
    # The caller's generators are where they were: nothing drew from them.
    assert random.getstate() == python_state
    restored = np.random.get_state()  # noqa: NPY002
    assert all(np.array_equal(a, b) for a, b in zip(restored, numpy_state, strict=True))
    random.random(), np.random.random()  # noqa: NPY002 (move them: the seed must not care)
    second = evaluate_robustness(model, x, y, seed=1, **kwargs)
    assert first.summary["model"]["stochastic"]
    assert first.rows == second.rows
    other = evaluate_robustness(model, x, y, seed=2, **kwargs)
    assert other.rows != first.rows  # the seed, not luck, makes them equal
    with seeded(7, x.device):
        a = model(x)
    with seeded(7, x.device):
        assert torch.equal(model(x), a)


def test_the_audit_says_when_a_model_is_not_reproducible():
    x, y = mask_data(16)
    settings = {"steps": 2, "eot_grid": (1, 2), "max_eot": 2, "grad_examples": 8, "draws": 2}

    class PrivateGenerator(PythonAndNumpyRandom):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng()

        def forward(self, x: Tensor) -> Tensor:
            noise = torch.from_numpy(self.rng.standard_normal((x.shape[0], 2))).to(x.dtype)
            return self.linear(x.flatten(1)) + 0.3 * noise

    for model, reproducible in ((PythonAndNumpyRandom(), True), (PrivateGenerator(), False)):
        result = audit(model, x, y, eps=0.05, checks=["randomness"], raise_errors=True, **settings)
        check = result.check("randomness")
        assert check.numbers["reproducible_with_seed"] is reproducible
        assert ("not reproducible" in check.detail) is not reproducible
        if not reproducible:
            assert check.status in ("warn", "fail")
