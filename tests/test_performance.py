"""Speed by construction, checked on the CPU: no host sync inside the attack loop, the input check
once per attack call, the opt-in bf16 attack path, batched prediction draws where they stay
independent, and the training defaults (amp per device, fused SGD, the compiled step)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

import ciiv.models.classifier
from ciiv.attacks import create_attack, rows_independent
from ciiv.evaluate.engine import draw_predictions, seeded
from ciiv.models import Backbone, CiiVClassifier, Classifier, SmoothedClassifier
from ciiv.sampling import RetinotopicSampler
from ciiv.train import ConfigError, OptimConfig, fit, load_config
from ciiv.train.loop import resolve_amp
from ciiv.train.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, CLASSES = 8, 4
aten = torch.ops.aten
# Ops that make the host wait for the device: a scalar read (item, bool, int), nonzero, and what
# is built on them (boolean-mask indexing and selection, equality of whole tensors).
_SCALAR_READS = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.equal}
_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


class SyncCounter(TorchDispatchMode):
    """Records every host-syncing op dispatched inside the block (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        boolean_index = packet in _INDEXING and any(
            isinstance(i, Tensor) and i.dtype == torch.bool for i in args[1] if i is not None
        )
        if packet in _SCALAR_READS or boolean_index:
            self.ops.append(str(packet))
        return func(*args, **(kwargs or {}))


def ciiv_model(seed: int = 0) -> CiiVClassifier:
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 16), nn.Tanh())
    sampler = RetinotopicSampler(SIZE, num_views=3, samples_per_view=2)
    return CiiVClassifier(Backbone(features, 16, CLASSES), sampler, (0.5,) * 3, (0.5,) * 3).eval()


def batch(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIZE, SIZE, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def count_syncs(attack, x, y) -> list[str]:
    with SyncCounter() as counter:
        attack(x, y)
    return counter.ops


def test_the_counter_sees_scalar_reads_and_boolean_indexing():
    with SyncCounter() as counter:
        t = torch.arange(4.0)
        bool(t.sum() > 0)
        t[t > 1] = 0
        torch.nonzero(t)
    assert len(counter.ops) == 3


@pytest.mark.parametrize(
    "hyper",
    [
        {},
        {"eot": 3, "bpda": "identity"},
        {"loss": "adaptive", "eot": 2},
        {"norm": "L2", "targeted": "least_likely"},
        {"max_batch": 4, "eot": 2},
    ],
)
def test_pgd_syncs_once_per_call_whatever_the_number_of_steps(hyper):
    """The syncs of a call are the [0, 1] check of x (the one seen here) and the contract check of
    x_adv on return (one ``tolist`` transfer, below the dispatcher); the loop itself (steps, EOT
    draws, best-iterate bookkeeping, the model's forward and backward) never waits."""
    model, (x, y) = ciiv_model(), batch()
    short = count_syncs(create_attack("pgd", model, steps=1, seed=0, **hyper), x, y)
    long = count_syncs(create_attack("pgd", model, steps=6, seed=0, **hyper), x, y)
    assert short == long == ["aten._local_scalar_dense"]


def test_restarts_sync_once_each_to_pick_the_points_still_standing():
    model, (x, y) = ciiv_model(), batch()
    ops = count_syncs(create_attack("pgd", model, steps=4, restarts=3, seed=0), x, y)
    assert len(ops) <= 1 + 2 * 2  # the input check, then per restart > 0: nonzero (+ none else)
    assert "aten.index" not in ops


def test_attack_checks_the_input_once_not_per_model_call(monkeypatch):
    calls = []
    original = ciiv.models.classifier.check_images
    monkeypatch.setattr(
        ciiv.models.classifier, "check_images", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    model, (x, y) = ciiv_model(), batch()
    attack = create_attack("pgd", model, steps=3, eot=2, seed=0)
    attack(x, y)
    attack.loss_gradient(x, y)
    assert calls == []  # the attack validated x itself, once per call
    assert model.check_inputs is True  # restored
    model(x)
    assert calls == [1]
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        attack.loss_gradient(x + 2, y)


def test_bf16_attack_path_runs_the_model_in_bfloat16_and_returns_float32():
    model, (x, y) = ciiv_model(), batch()
    dtypes = []
    linear = next(m for m in model.backbone.modules() if isinstance(m, nn.Linear))
    linear.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    attack = create_attack("pgd", model, steps=2, eot=2, precision="bf16", seed=0)
    x_adv = attack(x, y)
    assert set(dtypes) == {torch.bfloat16}
    assert x_adv.dtype == torch.float32 and float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert attack.settings()["precision"] == "bf16"
    assert create_attack("pgd", model).settings()["precision"] == "fp32"  # off by default
    assert create_attack("fgsm", model, precision="bf16").settings()["precision"] == "bf16"
    with pytest.raises(ValueError, match="unknown precision"):
        create_attack("pgd", model, precision="fp16")


class _SharedNoise(nn.Module):
    """A foreign random model: one noise draw per call, shared by every row of the batch."""

    stochastic = True

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * SIZE * SIZE, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1)) + torch.randn(1, CLASSES)


def _calls(model: nn.Module) -> list[int]:
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    return sizes


def test_ciiv_prediction_draws_go_through_the_model_as_one_batch_of_independent_rows():
    model, (x, _) = ciiv_model(), batch(5)
    sizes = _calls(model)
    z_seen = []
    model.sampler.register_forward_hook(lambda m, args, out: z_seen.append(out.z))
    with seeded(7, x.device):
        preds = draw_predictions(model, x, 4)
    assert preds.shape == (4, 5) and preds.dtype == torch.int64
    assert sizes == [20]  # R * B rows in one call
    assert z_seen[0].shape == (3, 20)  # per-row masks: every draw of every example its own
    assert model.sampler.per_example_masks is False  # restored
    with seeded(7, x.device):
        assert torch.equal(draw_predictions(model, x, 4), preds)  # seeded, reproducible
    sizes.clear()
    draw_predictions(model, x, 4, max_batch=8)
    assert sizes == [8, 8, 4]


def test_other_models_get_sequential_prediction_draws():
    x, _ = batch(5)
    foreign = _SharedNoise()
    sizes = _calls(foreign)
    assert not rows_independent(foreign)
    assert draw_predictions(foreign, x, 3).shape == (3, 5)
    assert sizes == [5, 5, 5]

    model = ciiv_model()
    sizes = _calls(model)
    with model.fixed_randomness(0):  # a deterministic CiiV model: R equal draws
        assert not rows_independent(model)
        preds = draw_predictions(model, x, 3)
    assert sizes == [5, 5, 5] and bool((preds == preds[0]).all())

    plain = Classifier(ciiv_model().backbone, (0.5,) * 3, (0.5,) * 3)
    assert rows_independent(SmoothedClassifier(plain, n_votes=2))
    assert not rows_independent(SmoothedClassifier(foreign, n_votes=2))


def test_amp_resolves_per_device_and_sgd_is_fused_on_request():
    assert load_config(None).amp == "auto"
    assert resolve_amp("auto", torch.device("cpu")) == "none"
    assert resolve_amp("auto", torch.device("cuda")) == "bf16"
    assert resolve_amp("bf16", torch.device("cpu")) == "bf16"
    params = list(nn.Linear(2, 2).parameters())
    assert not build_optimizer(params, OptimConfig()).param_groups[0].get("fused")
    fused = build_optimizer(params, OptimConfig(), fused=True)
    assert fused.param_groups[0].get("fused") in (True, None)  # None: this torch has no option


@pytest.mark.parametrize("value", [False, True, "backbone", "step"])
def test_compile_accepts_the_backbone_and_the_whole_step(value):
    assert load_config(None, {"compile": value}).compile == value


def test_compile_rejects_other_modes():
    with pytest.raises(ConfigError, match="compile"):
        load_config(None, {"compile": "everything"})


def test_the_whole_compiled_step_trains(tmp_path, monkeypatch):
    """compile: step goes through torch.compile (traced here with the eager backend: inductor
    would take minutes on the CPU); the epoch changes trigger at most a few recompilations."""
    compiled = []
    original = torch.compile

    def traced(module, **kwargs):
        compiled.append(type(module).__name__)
        return original(module, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", traced)
    torch._dynamo.reset()
    config = _tiny_ciiv(n_train=48, batch_size=12, epochs=2, compile="step")
    result = fit(config, tmp_path / "run")
    assert compiled == ["_Step"]
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    torch._dynamo.reset()


def test_fit_on_the_cpu_stays_in_float32(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(
        torch, "autocast", functools.partial(_record_autocast, seen, torch.autocast)
    )
    config = _tiny_ciiv(n_train=24, batch_size=6, epochs=1)
    fit(config, tmp_path / "run")
    assert seen == []  # amp "auto" on the CPU: no autocast at all


def _tiny_ciiv(n_train: int, **settings):
    """A CiiV run of a few steps on 16-px shapes, on the CPU."""
    values = {
        "data.options": {"n_train": n_train, "n_test": 4, "image_size": 16},
        "data.val_fraction": 0.25,
        "model.backbone": "small_cnn",
        "model.backbone_kwargs": {"width": 4},
        "model.num_views": 2,
        "model.samples_per_view": 1,
        "method.name": "ciiv",
        "device": "cpu",
    }
    return load_config(None, {**values, **settings})


def _record_autocast(seen, original, *args, **kwargs):
    seen.append((args, kwargs))
    return original(*args, **kwargs)
