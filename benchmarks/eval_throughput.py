"""Throughput of the full-protocol attack: PGD with EOT against a CiiV model.

Every PGD step of the full protocol forwards and back-propagates E random draws of each image,
each through all L views. ``pgd_eot_throughput`` measures how many input images per second such an
attack processes, with the E draws batched into one model call (ciiv's path, ``max_batch=None``)
or sent one draw at a time (``max_batch=batch_size``, for comparison).

Usage: python benchmarks/eval_throughput.py [--device auto|cpu|cuda] [--batch-size B]
           [--steps 20] [--eot E] [--backbone preact_resnet18]
The defaults on the CPU are small (the full PGD-20 with E = 8 on pre-activation ResNet-18 takes
minutes per batch on two cores); images/s scale as 1 / steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ciiv.attacks import create_attack
from ciiv.evaluate import DEFAULT_EOT
from ciiv.models import CiiVClassifier, create_model
from ciiv.sampling import RetinotopicSampler

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    repeats: int = 1,
    seed: int = 0,
) -> dict:
    """Images per second of PGD-``steps`` with EOT ``eot`` on a CiiV model (CIFAR-shaped input).

    Args:
        device: where the model and the data live.
        backbone: a ``ciiv.models`` backbone name (random weights: speed does not depend on them).
        batch_size: B, images attacked per call.
        steps: PGD iterations; eot: E, draws per gradient.
        views, samples_per_view: the sampler's L and K.
        max_batch: images per model call inside the attack (None: all E * B rows at once).
        bpda: None, "identity" or "smooth" (the BPDA variant).
        repeats: timed attack calls (after one untimed warm-up call of one step).
        seed: seeds the weights, the data and the attack.

    Returns:
        A JSON-ready dict: ``images_per_s`` (input images per second), ``view_passes_per_s``
        (backbone images per second, forward + backward), the settings and the device.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    model = CiiVClassifier(
        create_model(backbone, num_classes=10, in_channels=3),
        RetinotopicSampler(32, num_views=views, samples_per_view=samples_per_view),
        CIFAR_MEAN,
        CIFAR_STD,
    ).to(device)
    model.eval()
    model.check_inputs = False  # measure the attack, not the input validation
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    hyper = {"eps": 8 / 255, "eot": eot, "max_batch": max_batch, "bpda": bpda, "seed": seed}
    create_attack("pgd", model, steps=1, **hyper)(x, y)  # warm-up (kernels, allocator)
    attack = create_attack("pgd", model, steps=steps, **hyper)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        attack(x, y)
    _sync(device)
    seconds = time.perf_counter() - start
    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "backbone": backbone,
        "batch_size": batch_size,
        "steps": steps,
        "eot": eot,
        "views": views,
        "samples_per_view": samples_per_view,
        "max_batch": max_batch,
        "bpda": bpda,
        "seconds": round(seconds, 3),
        "images_per_s": round(repeats * batch_size / seconds, 3),
        "view_passes_per_s": round(attack.forward_passes * views / seconds, 1),
        "forward_passes": attack.forward_passes,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--backbone", default="preact_resnet18")
    parser.add_argument("--batch-size", type=int, help="default 128 on CUDA, 4 on the CPU")
    parser.add_argument("--steps", type=int, help="default 20 on CUDA, 2 on the CPU")
    parser.add_argument("--eot", type=int, default=DEFAULT_EOT)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    cuda = device.type == "cuda"
    batch = args.batch_size or (128 if cuda else 4)
    steps = args.steps or (20 if cuda else 2)
    rows = []
    for max_batch in (None, batch):  # batched EOT, then one draw per call
        row = pgd_eot_throughput(
            device,
            backbone=args.backbone,
            batch_size=batch,
            steps=steps,
            eot=args.eot,
            max_batch=max_batch,
            repeats=args.repeats,
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    batched, sequential = rows
    print(
        f"\nPGD-{steps} EOT {args.eot} on {batched['device']}: batched "
        f"{batched['images_per_s']:.2f} img/s, one draw per call "
        f"{sequential['images_per_s']:.2f} img/s "
        f"(x{batched['images_per_s'] / sequential['images_per_s']:.2f})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
