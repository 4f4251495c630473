"""CUDA paths that the CPU suite cannot run: bf16 + channels_last training, fused SGD, a PGD loop
without host syncs, batched prediction draws. All skip without CUDA; ``benchmarks/gpu_check.py``
runs them first (``pytest -m gpu``)."""

from __future__ import annotations

import copy

import pytest
import torch

from ciiv.attacks import create_attack, inputs_checked_once, preserve_mode
from ciiv.evaluate.engine import draw_predictions, seeded
from ciiv.loss import consistency_loss, view_cross_entropy
from ciiv.models import Backbone, CiiVClassifier, create_model
from ciiv.sampling import RetinotopicSampler
from ciiv.train import fit, load_checkpoint, load_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def ciiv_model(backbone: str = "preact_resnet18") -> CiiVClassifier:
    torch.manual_seed(0)
    net: Backbone = create_model(backbone, num_classes=10, in_channels=3)
    return CiiVClassifier(net, RetinotopicSampler(32, spike_scale=0.9), MEAN, STD).cuda()


def test_ciiv_train_step_in_bf16_channels_last_matches_fp32():
    """The CUDA default (bf16 autocast + channels_last): a finite loss within a few percent of
    float32's on the same weights and the same sampler draws, gradients pointing the same way."""
    fp32 = ciiv_model()
    bf16 = copy.deepcopy(fp32).to(memory_format=torch.channels_last)
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.rand(32, 3, 32, 32, device="cuda", generator=g)
    y = torch.randint(0, 10, (32,), device="cuda", generator=g)

    def loss_and_grad(model, xb, autocast):
        with model.fixed_randomness(1), torch.autocast("cuda", torch.bfloat16, enabled=autocast):
            out = model.forward_views(xb)
            loss = view_cross_entropy(out.logits, y) + 0.1 * consistency_loss(out.features, out.z)
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters()])
        return loss.detach().float(), grad

    ref, ref_grad = loss_and_grad(fp32, x, autocast=False)
    low, low_grad = loss_and_grad(bf16, x.contiguous(memory_format=torch.channels_last), True)
    assert torch.isfinite(low) and torch.isfinite(low_grad).all()
    assert abs(low - ref) <= 0.03 * abs(ref) + 0.01
    assert torch.nn.functional.cosine_similarity(low_grad, ref_grad, dim=0) > 0.9


def test_fit_on_cuda_defaults_to_bf16_and_fused_sgd(tmp_path):
    config = load_config(
        None,
        {
            "data.options": {"n_train": 96, "n_test": 8, "image_size": 16},
            "model.backbone": "small_cnn",
            "model.num_views": 3,
            "model.samples_per_view": 2,
            "method.name": "ciiv",
            "batch_size": 16,
            "epochs": 1,
            "device": "cuda",
        },
    )
    assert config.amp == "auto"
    result = fit(config, tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["optimizer"]["param_groups"][0]["fused"] is True


def test_pgd_step_loop_never_syncs_with_the_host():
    """torch.cuda.set_sync_debug_mode("error") raises on any synchronising call: the attack's
    loop (steps, EOT, BPDA, best-iterate bookkeeping) runs without one. The call's single input
    check happens before the loop and is left out here."""
    model = ciiv_model("small_cnn").eval()
    x = torch.rand(8, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (8,), device="cuda")
    for loss in ("ce", "adaptive"):
        attack = create_attack("pgd", model, steps=3, eot=2, bpda="identity", loss=loss, seed=0)
        attack(x, y)  # warm-up: kernels, cuDNN plans, the attack's generator
        with preserve_mode(model), inputs_checked_once(model):
            torch.cuda.set_sync_debug_mode("error")
            try:
                x_adv = attack._attack(x, y)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert x_adv.shape == x.shape


def test_bf16_attack_path_runs_on_cuda():
    model = ciiv_model("small_cnn").eval()
    x = torch.rand(8, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (8,), device="cuda")
    attack = create_attack("pgd", model, steps=3, eot=2, precision="bf16", seed=0)
    x_adv = attack(x, y)
    assert x_adv.dtype == torch.float32
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6


def test_batched_prediction_draws_on_cuda_are_reproducible():
    model = ciiv_model("small_cnn").eval()
    x = torch.rand(16, 3, 32, 32, device="cuda")
    device = torch.device("cuda")
    with seeded(3, device):
        first = draw_predictions(model, x, 5)
    with seeded(3, device):
        second = draw_predictions(model, x, 5)
    assert first.shape == (5, 16) and first.is_cuda
    assert torch.equal(first, second)
    assert model.sampler.per_example_masks is False
