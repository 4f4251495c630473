"""``ciiv certify``: certified L2 radii of a randomized-smoothing run (Cohen et al.'s CERTIFY).

    ciiv certify runs/rs                                  # sigma from the run, n = 100000
    ciiv certify runs/rs --n 10000 --n-examples 100 --alpha 0.001 --batch-size 2000
    ciiv certify runs/vanilla --sigma 0.25                # the run's model as a base classifier

Results go to RUN_DIR/certify/sigma<S>-n<N>/ (examples.jsonl, batches.jsonl, config.json,
summary.json, certified_accuracy.png). Running the same command again resumes.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from ciiv.commands._progress import CertifyProgress, ProgressDisplay
from ciiv.commands._ui import add_options, add_run_arguments

__all__ = ["add_arguments", "run"]


OPTIONS = (  # flag, default, metavar, help
    ("--n0", 100, "N0", "noisy draws per example that pick the predicted class"),
    (
        ("--n", "--n-draws"),
        100_000,
        "N",
        "noisy draws per example that bound its probability; more draws certify larger radii "
        "and cost proportionally more time (under torchrun write --n-draws: torchrun takes --n "
        "for its own options)",
    ),
    ("--alpha", 0.001, "ALPHA", "probability that a certificate is wrong"),
    ("--batch-size", 1000, "B", "noisy images per call of the base classifier"),
    (
        "--examples-per-batch",
        1,
        "E",
        "examples per saved batch; an interrupted run resumes after the last one",
    ),
)


# The options that are certify_run's parameters of the same name.
_SAME_NAMES = (
    "sigma n0 n alpha n_examples batch_size examples_per_batch seed checkpoint data_dir "
    "test_split overwrite"
).split()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ciiv.certify.run import DEFAULT_EXAMPLES

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run written by ciiv train")
    add_run_arguments(parser, DEFAULT_EXAMPLES)
    parser.add_argument(
        "--sigma",
        type=float,
        help="Gaussian noise std in [0, 1] pixel units; larger certifies larger radii at lower "
        "accuracy (default: the rs run's model.smoothing_sigma; required for other runs)",
    )
    add_options(parser, OPTIONS)
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where the results go (default RUN_DIR/certify/sigma<S>-n<N>)",
    )


def _result_table(summary: dict, out_dir) -> Table:
    table = Table(
        title=f"certify sigma={summary['sigma']:g} n={summary['n']} alpha={summary['alpha']:g} "
        f"-> {out_dir}"
    )
    table.add_column("L2 radius", justify="right")
    table.add_column("certified accuracy", justify="right")
    for point in summary["certified_accuracy"]:
        low, high = point["ci95"]
        table.add_row(f"{point['radius']:g}", f"{point['accuracy']:.4f} ({low:.3f}-{high:.3f})")
    table.add_row("abstained", f"{summary['abstain_rate']:.4f}")
    return table


def run(args: argparse.Namespace) -> int:
    from ciiv.certify import certify_run
    from ciiv.distributed import init_distributed, is_main_process
    from ciiv.train.run import resolve_device

    console = Console(stderr=True)
    main_process = is_main_process()
    # Under torchrun the processes share the batches of examples (rank 0 merges and writes).
    dist = init_distributed(use_cuda=resolve_device(args.device).type == "cuda")
    device = resolve_device(args.device, dist.local_rank)
    with ProgressDisplay(console, f"certify {args.run_dir}", enabled=main_process) as display:
        result = certify_run(
            args.run_dir,
            **{name: getattr(args, name) for name in _SAME_NAMES},
            out_dir=args.out,
            device=device,
            progress=CertifyProgress(display) if main_process else None,
        )
    if main_process:
        console.print(_result_table(result.summary, result.out_dir))
    dist.shutdown()
    return 0
