"""``ciiv audit``: check a trained run's robustness evaluation for obfuscated gradients.

    ciiv audit runs/a                        # full audit at the dataset's Linf budget
    ciiv audit runs/a --eps 4/255 --quick    # the cheap preset ``ciiv eval`` also runs
    ciiv audit runs/a --norm L2 --n-examples 500 --seed 1
    ciiv audit --model defense.py:build --weights w.pt --dataset mnist --out evals/mine

Writes RUN_DIR/audit/audit.json (DIR/audit/audit.json for a user's --model with --out DIR) and
prints one row per check (pass / warn / fail / skip, what was found, what to do next). The exit
status is 1 when any check fails, 2 on a usage error.
Every check is explained in docs/evaluation.md, "The audit checks".
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ciiv._io import write_json_atomic
from ciiv.commands._progress import ProgressDisplay, audit_progress
from ciiv.commands._ui import add_target_arguments, load_target

__all__ = ["DEFAULT_EXAMPLES", "add_arguments", "run"]

DEFAULT_EXAMPLES = 200
_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ciiv.evaluate.audit import list_checks

    add_target_arguments(parser, DEFAULT_EXAMPLES, resumable=False)
    parser.add_argument(
        "--eps",
        metavar="EPS",
        help="attack budget the checks use, e.g. 8/255 (default: the dataset's, as in ciiv eval)",
    )
    parser.add_argument(
        "--norm",
        choices=("Linf", "L2"),
        default="Linf",
        help="threat model: Linf (each pixel moves at most eps) or L2 (default Linf)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the cheap preset ciiv eval runs: shorter attacks, fewer EOT draws (default: full)",
    )
    parser.add_argument(
        "--checks",
        nargs="+",
        metavar="NAME",
        help=f"run only these checks (default: all): {', '.join(list_checks())}",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="B",
        help="most images per model call; lower it when memory runs out (default 64 on the "
        "CPU, 256 on a GPU)",
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="where to write the JSON (default RUN_DIR/audit/audit.json); with --model, the "
        "model's directory DIR: DIR/audit/audit.json",
    )


def result_table(result, title: str) -> Table:
    """A rich table with one row per check of an :class:`~ciiv.evaluate.audit.AuditResult`."""
    table = Table(title=title, show_lines=True)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("s", justify="right")
    table.add_column("finding / what to do next")
    for check in result.checks:
        style = _STYLE[check.status]
        table.add_row(
            check.name,
            f"[{style}]{check.status}[/]",
            f"{check.elapsed_s:.0f}",
            escape(check.detail),
        )
    return table


def run(args: argparse.Namespace) -> int:
    from ciiv.attacks import default_eps
    from ciiv.evaluate.audit import audit, list_checks
    from ciiv.train.run import resolve_device

    console = Console(stderr=True)
    device = resolve_device(args.device)
    target = load_target(args, "audit", device)
    out = Path(args.out) if args.out and not args.model else target.root / "audit" / "audit.json"
    eps = args.eps or default_eps(args.norm, target.dataset)
    overrides = {} if args.batch_size is None else {"batch_size": args.batch_size}
    checks = args.checks or list_checks()
    with ProgressDisplay(console, f"audit {args.model or args.run_dir}") as display:
        result = audit(
            target.model, target.x.to(device), target.y.to(device), eps=eps, norm=args.norm,
            quick=args.quick, seed=args.seed, checks=checks,
            progress=audit_progress(display, checks), **overrides,
        )  # fmt: skip
    # What was audited (the run and checkpoint, or a user model's spec and weights digest).
    write_json_atomic(out, {**result.to_dict(), "run": target.run})
    counts = ", ".join(f"{v} {k}" for k, v in result.counts.items() if v)
    title = (
        f"audit of {escape(args.model or args.run_dir)} ({escape(target.run['method'])}, "
        f"{target.dataset}/{target.split}, {args.norm} eps {float(result.settings['eps']):.4g}, "
        f"{result.n_examples} examples, clean {result.clean_accuracy:.1%})"
    )
    Console().print(result_table(result, title))
    verdict = "[green]passed[/]" if result.passed else "[bold red]FAILED[/]"
    console.print(f"{verdict}: {counts} in {result.elapsed_s:.0f}s -> {escape(str(out))}")
    return 0 if result.passed else 1
