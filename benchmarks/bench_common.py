"""What the benchmarks share: the device, the test models, and timed steps with peak memory.

throughput.py, eval_throughput.py and gpu_check.py measure through these functions, so they report
the same quantities the same way:
- images per second count *input* images (a CiiV image counts once although its L views go
  through the backbone), over ``steps`` timed iterations after ``warmup`` untimed ones, between
  two device synchronisations;
- peak memory is the CUDA allocator's high-water mark over the timed iterations (MiB; None on
  the CPU, which has no per-measurement counter);
- compile time (for compiled steps) is the first call's wall time minus one steady step.
Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ciiv.attacks import create_attack
from ciiv.evaluate import DEFAULT_EOT
from ciiv.loss import consistency_loss, view_cross_entropy
from ciiv.models import CiiVClassifier, Classifier, create_model
from ciiv.sampling import RetinotopicSampler
from ciiv.train.config import OptimConfig
from ciiv.train.optim import build_optimizer
from ciiv.train.run import resolve_device

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "autocast",
    "build_model",
    "ciiv_loss",
    "device_name",
    "inference_throughput",
    "pgd_eot_throughput",
    "resolve_device",
    "sync",
    "time_steps",
    "train_throughput",
    "view_outputs",
]

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
# The weight of the consistency loss in CiiV's first epochs (the schedule starts at 0.1).
W_REG = 0.1


def device_name(device: torch.device) -> str:
    """The GPU's name, or ``cpu (N threads)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``precision="bf16"``, nothing for ``"fp32"``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; valid: fp32, bf16")


def build_model(
    kind: str,
    backbone: str,
    device: torch.device,
    *,
    views: int = 9,
    samples: int = 3,
    image_size: int = 32,
    classes: int = 10,
    channels_last: bool = False,
) -> nn.Module:
    """A CIFAR-shaped model on ``device``: ``kind`` "ciiv" (L ``views`` x K ``samples``, a = 0.9)
    or "plain". The per-call pixel check is off: it measures the model, not the validation."""
    net = create_model(backbone, num_classes=classes, in_channels=3)
    if kind == "ciiv":
        sampler = RetinotopicSampler(
            image_size, num_views=views, samples_per_view=samples, spike_scale=0.9
        )
        model: nn.Module = CiiVClassifier(net, sampler, CIFAR_MEAN, CIFAR_STD)
    elif kind == "plain":
        model = Classifier(net, CIFAR_MEAN, CIFAR_STD)
    else:
        raise ValueError(f"unknown model kind {kind!r}; valid: ciiv, plain")
    model.check_inputs = False
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def view_outputs(model: CiiVClassifier, x: Tensor, path: str = "batched"):
    """(logits [L,B,K], features [L,B,D], z) by the batched or the naive path.

    ``batched`` is ciiv's: the L views folded into one backbone batch of L * B images.
    ``naive`` is one sampler draw, then L sequential backbone passes of B images each (the way
    the authors' research code runs its views; the masks are not rebuilt per view here, so the
    ratio isolates the folding of the views into the batch).
    """
    if path == "batched":
        out = model.forward_views(x)
        return out.logits, out.features, out.z
    if path != "naive":
        raise ValueError(f"unknown path {path!r}; valid: batched, naive")
    sampled = model.sampler(model.normalise(x))
    features = torch.stack([model.backbone.forward_features(v) for v in sampled.views])
    logits = torch.stack([model.backbone.forward_head(f) for f in features])
    return logits, features, sampled.z


def ciiv_loss(model: CiiVClassifier, x: Tensor, y: Tensor, path: str = "batched") -> Tensor:
    """CiiV's training loss in its first epochs: view CE + 0.1 * consistency (float32)."""
    logits, features, z = view_outputs(model, x, path)
    return view_cross_entropy(logits.float(), y) + W_REG * consistency_loss(features.float(), z)


def vanilla_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Plain cross-entropy (float32)."""
    return nn.functional.cross_entropy(model(x).float(), y)


def time_steps(
    step: Callable[[], object], *, batch: int, steps: int, warmup: int, device: torch.device
) -> dict:
    """Run ``step`` ``warmup`` untimed times (the first one timed apart), then ``steps`` times.

    Returns images_per_s (``batch`` per step), step_s, first_step_s (the first warm-up call,
    including any compilation; None without warm-up) and peak_memory_mib (CUDA: the high-water
    mark of the timed steps; None on the CPU).
    """
    first = None
    if warmup:
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        first = round(time.perf_counter() - start, 3)
    for _ in range(warmup - 1):
        step()
    cuda = device.type == "cuda"
    if cuda:
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return {
        "images_per_s": round(steps * batch / seconds, 2),
        "step_s": round(seconds / steps, 5),
        "first_step_s": first,
        "peak_memory_mib": None if peak is None else round(peak, 1),
    }


def train_throughput(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    loss: str = "ciiv",
    path: str = "batched",
    precision: str = "fp32",
    compile_mode: str | None = None,
    compile_backend: str | None = None,
    steps: int = 3,
    warmup: int = 1,
) -> dict:
    """Training images/s: forward + loss + backward + the optimiser step (SGD, momentum 0.9,
    weight decay 5e-4, built like the training loop's: fused on CUDA).

    Args:
        model: from :func:`build_model` (a CiiV model for ``loss="ciiv"``).
        x, y: one batch [B, 3, H, W] in [0, 1] and labels [B], on the model's device.
        loss: "ciiv" (:func:`ciiv_loss`, by ``path``) or "vanilla" (cross-entropy).
        precision: "fp32" or "bf16" (autocast).
        compile_mode: None (eager), or a ``torch.compile`` mode ("default", "reduce-overhead",
            ...) for the whole loss computation (sampler, folded backbone, losses; AOTAutograd
            compiles the backward with it), as ``compile: step`` does in training.
        compile_backend: ``torch.compile``'s backend (None: inductor; "eager" only traces, for
            smoke runs on the CPU).
        steps, warmup: timed and untimed iterations.
    """
    device = x.device
    optimiser = build_optimizer(
        model.parameters(), OptimConfig(lr=0.01), fused=device.type == "cuda"
    )
    if loss == "ciiv":

        def compute(m: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
            return ciiv_loss(m, xb, yb, path)

    elif loss == "vanilla":
        compute = vanilla_loss
    else:
        raise ValueError(f"unknown loss {loss!r}; valid: ciiv, vanilla")
    if compile_mode is not None:
        mode = None if compile_mode == "default" else compile_mode
        compute = torch.compile(compute, mode=mode, backend=compile_backend or "inductor")
    cudagraphs = compile_mode is not None and "reduce-overhead" in compile_mode
    model.train()

    def step() -> None:
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(device, precision):
            value = compute(model, x, y)
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()

    result = time_steps(step, batch=x.shape[0], steps=steps, warmup=warmup, device=device)
    if compile_mode is not None and warmup:
        result["compile_s"] = round(result["first_step_s"] - result["step_s"], 2)
    return result


def inference_throughput(
    model: nn.Module,
    x: Tensor,
    *,
    path: str = "batched",
    precision: str = "fp32",
    steps: int = 3,
    warmup: int = 1,
) -> dict:
    """Prediction images/s without gradients: CiiV's z-weighted prediction by ``path``, or a
    plain model's argmax."""
    device = x.device
    model.eval()

    @torch.no_grad()
    def step() -> None:
        with autocast(device, precision):
            if isinstance(model, CiiVClassifier):
                logits, _, z = view_outputs(model, x, path)
                CiiVClassifier.combine(logits.float(), z).argmax(1)
            else:
                model(x).argmax(1)

    return time_steps(step, batch=x.shape[0], steps=steps, warmup=warmup, device=device)


def pgd_eot_throughput(
    device: str | torch.device = "cpu",
    *,
    backbone: str = "preact_resnet18",
    batch_size: int = 32,
    steps: int = 20,
    eot: int = DEFAULT_EOT,
    views: int = 9,
    samples_per_view: int = 3,
    max_batch: int | None = None,
    bpda: str | None = None,
    precision: str = "fp32",
    repeats: int = 1,
    seed: int = 0,
) -> dict:
    """Images per second of PGD-``steps`` with EOT ``eot`` on a CiiV model (CIFAR-shaped input):
    the full protocol's attack (all L views, E draws per gradient).

    Args:
        device: where the model and the data live.
        backbone: a ``ciiv.models`` backbone name (random weights).
        batch_size: B, images attacked per call.
        steps: PGD iterations; eot: E, draws per gradient.
        views, samples_per_view: the sampler's L and K.
        max_batch: images per model call inside the attack (None: all E * B rows at once).
        bpda: None, "identity" or "smooth" (the BPDA variant).
        precision: "fp32" (the default attack) or "bf16" (the opt-in autocast attack path).
        repeats: timed attack calls (after one untimed warm-up call of one step).
        seed: seeds the weights, the data and the attack.

    Returns:
        A JSON-ready dict: ``images_per_s`` (input images per second), ``view_passes_per_s``
        (backbone images per second, forward + backward), ``peak_memory_mib`` (CUDA), the
        settings and the device.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    model = build_model("ciiv", backbone, device, views=views, samples=samples_per_view).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    hyper = {
        "eps": 8 / 255,
        "eot": eot,
        "max_batch": max_batch,
        "bpda": bpda,
        "precision": precision,
        "seed": seed,
    }
    create_attack("pgd", model, steps=1, **hyper)(x, y)  # warm-up (kernels, allocator)
    attack = create_attack("pgd", model, steps=steps, **hyper)
    timed = time_steps(
        lambda: attack(x, y), batch=batch_size, steps=repeats, warmup=0, device=device
    )
    seconds = timed["step_s"] * repeats
    return {
        "device": device_name(device),
        "backbone": backbone,
        "batch_size": batch_size,
        "steps": steps,
        "eot": eot,
        "views": views,
        "samples_per_view": samples_per_view,
        "max_batch": max_batch,
        "bpda": bpda,
        "precision": precision,
        "seconds": round(seconds, 3),
        "images_per_s": round(repeats * batch_size / seconds, 3),
        "view_passes_per_s": round(attack.forward_passes * views / seconds, 1),
        "forward_passes": attack.forward_passes,
        "peak_memory_mib": timed["peak_memory_mib"],
        "torch": torch.__version__,
    }
