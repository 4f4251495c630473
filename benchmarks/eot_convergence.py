"""Robust accuracy of a CiiV model against PGD-20 as the EOT sample count E grows.

The full protocol averages each PGD gradient over E random forward passes. E is large enough when
the robust accuracy has stopped falling: more samples then buy no stronger attack. This script
measures that curve on a trained run (same examples, same seed, R prediction draws per input) for
plain EOT-PGD and BPDA-PGD, and justifies ciiv's default E (``ciiv.evaluate.DEFAULT_EOT``).

Usage:
    python benchmarks/eot_convergence.py RUN_DIR [--eot 1 2 4 8 16 32] [--n-examples 200]
        [--steps 20] [--eps 8/255] [--draws 10] [--seed 0] [--device auto] [--out FILE.json]

One JSON line per (variant, E) goes to stdout (and to --out as a JSON list), then a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ciiv.evaluate import DEFAULT_EOT, evaluate_robustness
from ciiv.evaluate.selection import select_examples
from ciiv.train import load_data, load_run

VARIANTS = {"pgd": {}, "bpda-pgd": {"bpda": "identity"}}


def suite_for(variant: str, steps: int, eps: str, eot: int) -> dict:
    """A one-attack worst-case suite: PGD-``steps`` (step eps / 4) with E fixed to ``eot``."""
    return {
        "name": f"eot-{variant}-{eot}",
        "description": f"{variant}-{steps} with EOT {eot}",
        "norm": "Linf",
        "budget": {"default": eps},
        "entries": [
            {
                "name": f"{variant}-{steps}",
                "attack": "pgd",
                "hyper": {"steps": steps, "random_start": True, **VARIANTS[variant]},
                "step_fraction": 0.25,
                "eot": eot,
            }
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a CiiV run written by `ciiv train`")
    parser.add_argument("--eot", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--n-examples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eps", default="8/255")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="also write the results as a JSON list")
    args = parser.parse_args(argv)

    run = load_run(args.run_dir, device=None if args.device == "auto" else args.device)
    data = next(iter(load_data(run.config.data).test.values()))
    index = select_examples(len(data), args.n_examples, args.seed)
    x, y = data.images[index].float() / 255, data.labels[index]
    results = []
    for variant in args.variants:
        for eot in args.eot:
            start = time.perf_counter()
            result = evaluate_robustness(
                run.model,
                x,
                y,
                suite=suite_for(variant, args.steps, args.eps, eot),
                draws=args.draws,
                seed=args.seed,
                batch_size=args.batch_size,
                dataset=run.dataset,
                audit=False,  # the seconds measure the attacks alone
            )
            row = {
                "variant": variant,
                "eot": eot,
                "robust_accuracy": result.robust_accuracy,
                "ci95": result.summary["robust_accuracy_ci95"],
                "per_draw": result.summary["robust_accuracy_per_draw"]["mean"],
                "clean_accuracy": result.clean_accuracy,
                "forward_passes": result.forward_passes,
                "seconds": round(time.perf_counter() - start, 2),
                "n_examples": result.n_examples,
                "draws": args.draws,
                "steps": args.steps,
                "eps": args.eps,
                "run": str(args.run_dir),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nrobust accuracy vs E (default E = {DEFAULT_EOT}); * = the default", file=sys.stderr)
    print(f"{'variant':>10} {'E':>4} {'robust':>8} {'95% CI':>15} {'s':>8}", file=sys.stderr)
    for row in results:
        mark = "*" if row["eot"] == DEFAULT_EOT else " "
        low, high = row["ci95"]
        print(
            f"{row['variant']:>10} {row['eot']:>4}{mark}{row['robust_accuracy']:>7.3f} "
            f"[{low:.3f}, {high:.3f}] {row['seconds']:>8.1f}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
