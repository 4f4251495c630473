"""Throughput of CiiV: the batched-views path against the naive one-view-at-a-time path.

Measures, for CiiV on a backbone (default pre-activation ResNet-18) with CIFAR-shaped input:
- training images/s: forward + CiiV loss (view CE + consistency) + backward + SGD step;
- inference images/s: the z-weighted prediction (no gradients);
- attack images/s: the full-protocol PGD with EOT (all L views, E draws per gradient batched into
  one call; see eval_throughput.py, which also compares it with one draw per call);
the first two for two implementations of the same function:
- ``batched``: the L views folded into one backbone batch of L * B images (ciiv's path);
- ``naive``: one sampler draw, then L sequential backbone passes of B images each (the way the
  authors' research code runs its views; the masks are not rebuilt per view here, so the ratio
  isolates the folding of the views into the batch).
On CUDA both run in fp32 and in bf16 autocast with channels_last. One JSON line per configuration
goes to stdout (and to --out when given), followed by a table with the speed-up ratios.

Usage: python benchmarks/throughput.py [--device auto|cpu|cuda] [--batch-size 128] [--steps 3]
           [--attack-steps 20] [--attack-batch-size B] [--eot 8]
The attack defaults to PGD-20 on a batch of 128 on CUDA and 2 images on the CPU (minutes there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from ciiv.evaluate import DEFAULT_EOT
from ciiv.loss import consistency_loss, view_cross_entropy
from ciiv.models import CiiVClassifier, create_model
from ciiv.sampling import RetinotopicSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import pgd_eot_throughput  # noqa: E402

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def build(backbone: str, views: int, samples: int, device: torch.device) -> CiiVClassifier:
    model = CiiVClassifier(
        create_model(backbone, num_classes=10, in_channels=3),
        RetinotopicSampler(32, num_views=views, samples_per_view=samples, spike_scale=0.9),
        CIFAR_MEAN,
        CIFAR_STD,
    )
    model.check_inputs = False  # measure the model, not the input validation
    return model.to(device)


def view_outputs(model: CiiVClassifier, x: torch.Tensor, path: str):
    """(logits [L,B,K], features [L,B,D], z) by the batched or the naive path."""
    if path == "batched":
        out = model.forward_views(x)
        return out.logits, out.features, out.z
    sampled = model.sampler(model.normalise(x))
    features = torch.stack([model.backbone.forward_features(v) for v in sampled.views])
    logits = torch.stack([model.backbone.forward_head(f) for f in features])
    return logits, features, sampled.z


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model, x, y, path, train, steps, warmup, precision) -> float:
    """Images per second (input images, not views) over ``steps`` timed iterations."""
    device = x.device
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train(train)

    def step() -> None:
        if train:
            with autocast:
                logits, features, z = view_outputs(model, x, path)
                loss = view_cross_entropy(logits.float(), y) + 0.1 * consistency_loss(
                    features.float(), z
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        else:
            with torch.no_grad(), autocast:
                logits, _, z = view_outputs(model, x, path)
                CiiVClassifier.combine(logits.float(), z).argmax(1)

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * x.shape[0] / (time.perf_counter() - start)


def emit(row: dict, out: Path | None) -> None:
    """One JSON line to stdout, and appended to ``out`` when given."""
    line = json.dumps(row)
    print(line, flush=True)
    if out:
        with out.open("a") as f:
            f.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--backbone", default="preact_resnet18")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--views", type=int, default=9)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--attack-steps", type=int, default=20, help="PGD steps (0: skip)")
    parser.add_argument("--attack-batch-size", type=int, help="default 128 on CUDA, 2 on the CPU")
    parser.add_argument("--eot", type=int, default=DEFAULT_EOT, help="EOT draws per gradient")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    rows = []
    for precision in precisions:
        model = build(args.backbone, args.views, args.samples, device)
        xx = x
        if precision == "bf16":
            model = model.to(memory_format=torch.channels_last)
            xx = x.contiguous(memory_format=torch.channels_last)
        for train in (True, False):
            for path in ("batched", "naive"):
                ips = measure(model, xx, y, path, train, args.steps, args.warmup, precision)
                row = {
                    "device": torch.cuda.get_device_name(device)
                    if device.type == "cuda"
                    else f"cpu ({torch.get_num_threads()} threads)",
                    "backbone": args.backbone,
                    "batch_size": args.batch_size,
                    "views": args.views,
                    "samples_per_view": args.samples,
                    "precision": precision + ("+channels_last" if precision == "bf16" else ""),
                    "phase": "train" if train else "inference",
                    "path": path,
                    "images_per_s": round(ips, 2),
                    "torch": torch.__version__,
                }
                rows.append(row)
                emit(row, args.out)
    if args.attack_steps:
        attack_batch = args.attack_batch_size or (128 if device.type == "cuda" else 2)
        row = pgd_eot_throughput(
            device,
            backbone=args.backbone,
            batch_size=attack_batch,
            steps=args.attack_steps,
            eot=args.eot,
            views=args.views,
            samples_per_view=args.samples,
        )
        row["phase"] = f"attack: PGD-{args.attack_steps} EOT {args.eot}, full protocol"
        emit(row, args.out)
        print(f"\n{row['phase']}: {row['images_per_s']:.3f} img/s (batch {attack_batch}, fp32)")
    print("\nspeed-up of batched over naive:")
    for precision in {r["precision"] for r in rows}:
        for phase in ("train", "inference"):
            ips = {
                r["path"]: r["images_per_s"]
                for r in rows
                if r["precision"] == precision and r["phase"] == phase
            }
            ratio = ips["batched"] / ips["naive"]
            print(
                f"  {precision:>20} {phase:>9}: batched {ips['batched']:8.1f} img/s, "
                f"naive {ips['naive']:8.1f} img/s, x{ratio:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
