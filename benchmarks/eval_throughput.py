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
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import pgd_eot_throughput  # noqa: E402

from ciiv.evaluate import DEFAULT_EOT  # noqa: E402

__all__ = ["pgd_eot_throughput"]


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
