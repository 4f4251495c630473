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
(images/s, and the peak memory on CUDA) goes to stdout (and to --out when given), followed by a
table with the speed-up ratios. The measuring code is shared with eval_throughput.py and
gpu_check.py (bench_common.py); gpu_check.py is the one command for a GPU (docs/performance.md).

Usage: python benchmarks/throughput.py [--device auto|cpu|cuda] [--batch-size 128] [--steps 3]
           [--attack-steps 20] [--attack-batch-size B] [--eot 8]
The attack defaults to PGD-20 on a batch of 128 on CUDA and 2 images on the CPU (minutes there).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402
    build_model,
    device_name,
    inference_throughput,
    pgd_eot_throughput,
    resolve_device,
    train_throughput,
)

from ciiv.evaluate import DEFAULT_EOT  # noqa: E402


def measure(model, x, y, path, train, steps, warmup, precision) -> dict:
    """Images per second (input images, not views) over ``steps`` timed iterations, and the peak
    memory (see bench_common.py)."""
    kwargs = {"path": path, "precision": precision, "steps": steps, "warmup": warmup}
    if train:
        return train_throughput(model, x, y, **kwargs)
    return inference_throughput(model, x, **kwargs)


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

    device = resolve_device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    rows = []
    for precision in precisions:
        channels_last = precision == "bf16"
        model = build_model(
            "ciiv", args.backbone, device, views=args.views, samples=args.samples,
            channels_last=channels_last,
        )  # fmt: skip
        xx = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        for train in (True, False):
            for path in ("batched", "naive"):
                timed = measure(model, xx, y, path, train, args.steps, args.warmup, precision)
                row = {
                    "device": device_name(device),
                    "backbone": args.backbone,
                    "batch_size": args.batch_size,
                    "views": args.views,
                    "samples_per_view": args.samples,
                    "precision": precision + ("+channels_last" if precision == "bf16" else ""),
                    "phase": "train" if train else "inference",
                    "path": path,
                    "images_per_s": timed["images_per_s"],
                    "peak_memory_mib": timed["peak_memory_mib"],
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
