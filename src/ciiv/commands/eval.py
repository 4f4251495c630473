"""``ciiv eval``: attack a trained run with a suite; per-example rows and a summary on disk.

    ciiv eval runs/a --suite standard-linf                 # full protocol (the default)
    ciiv eval runs/a --suite paper-cifar10 --protocol both # the paper's protocol, and the full one
    ciiv eval runs/a --suite quick --n-examples 200 --eot 16 --seed 1
    ciiv eval runs/a --suite my_suite.yaml                 # a suite of your own (Suite.from_dict)
    torchrun --nproc_per_node 4 -m ciiv eval runs/a --suite standard-linf   # examples split
    ciiv eval --model defense.py:build --weights w.pt --dataset cifar10 --out evals/mine

Results go to RUN_DIR/eval/<suite>-<protocol>/ (examples.jsonl, batches.jsonl, config.json,
summary.json); for a user's --model, to DIR/eval/<suite>-<protocol>/ of --out DIR. Running the
same command again resumes an interrupted evaluation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ciiv.commands._progress import EvalProgress, ProgressDisplay
from ciiv.commands._ui import add_target_arguments, load_target, user_protocols
from ciiv.formatting import format_duration, format_rate

__all__ = ["add_arguments", "run"]

DEFAULT_EXAMPLES = 1000
# The options that are evaluate_robustness's parameters of the same name.
_SAME_NAMES = ("eps", "eot", "draws", "seed", "batch_size", "max_batch", "overwrite")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ciiv.evaluate import DEFAULT_DRAWS, DEFAULT_EOT, list_suites

    add_target_arguments(parser, DEFAULT_EXAMPLES)
    parser.add_argument(
        "--suite",
        default="standard-linf",
        metavar="NAME|FILE",
        help=f"the attacks to run: {', '.join(list_suites())} (default standard-linf; --list "
        "describes them), or a YAML file with your own suite (docs/evaluation.md, 'Custom suites')",
    )
    parser.add_argument(
        "--protocol",
        choices=("full", "paper", "both"),
        default="full",
        help="full: the attacks query the model exactly as it predicts, all views, with EOT "
        "(default); paper: the centre view only, as the authors' code; both: one after the "
        "other, into separate directories",
    )
    parser.add_argument(
        "--eot",
        type=int,
        metavar="E",
        help=f"random forward passes averaged into each attack gradient of a random model "
        f"(default {DEFAULT_EOT})",
    )
    parser.add_argument(
        "--draws",
        type=int,
        metavar="R",
        help=f"predictions per input for a random model; it counts as correct only if all R are "
        f"(default {DEFAULT_DRAWS})",
    )
    parser.add_argument(
        "--eps",
        metavar="EPS",
        help="attack budget in place of the suite's, e.g. 4/255 (default: the suite's budget "
        "for the run's dataset)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=128,
        metavar="B",
        help="examples attacked together; results are saved after each batch, so an "
        "interrupted evaluation resumes there (default 128)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        metavar="M",
        help="most images per model call inside gradient attacks (default: 64 on the CPU, "
        "all E * B at once on a GPU)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where the results go (default RUN_DIR/eval/<suite>-<protocol>; one protocol only); "
        "with --model, the model's directory: results go to DIR/eval/<suite>-<protocol>/",
    )
    parser.add_argument(
        "--no-audit",
        action="store_true",
        help="skip the default audit of a random model (randomness and gradient checks, at most "
        "the suite's cost; `ciiv audit` runs the full one)",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="describe the built-in suites and their attacks, then exit",
    )


def _listing() -> None:
    """Every built-in suite: name, threat model, description and attacks, never truncated (long
    lines are left to the terminal to wrap, so names stay whole for copying)."""
    from ciiv.evaluate import get_suite, list_suites

    console = Console(soft_wrap=True, highlight=False)
    for name in list_suites():
        suite = get_suite(name)
        budget = ", ".join(f"{k} {v}" for k, v in suite.budget.items())
        console.print(f"[bold]{escape(name)}[/]  {suite.norm}, eps {escape(budget)}")
        console.print(f"  {escape(suite.description)}")
        console.print(f"  attacks: {escape(', '.join(e.name for e in suite.expanded()))}")
    console.print(
        "A suite of your own: --suite my_suite.yaml (docs/evaluation.md, 'Custom suites')."
    )


def _result_table(summary: dict, out_dir: Path) -> Table:
    table = Table(title=f"{summary['suite']} / {summary['protocol']} -> {out_dir}")
    table.add_column("attack")
    table.add_column("role")
    table.add_column("accuracy", justify="right")
    table.add_row("clean", "", f"{summary['clean_accuracy']:.4f}")
    for name, detail in summary["attacks"].items():
        table.add_row(name, detail["role"], f"{detail['accuracy']:.4f}")
    low, high = summary["robust_accuracy_ci95"]
    table.add_row(
        "[bold]worst case[/]",
        "",
        f"[bold]{summary['robust_accuracy']:.4f}[/] ({low:.3f}-{high:.3f})",
    )
    for name, reason in summary["skipped_attacks"].items():
        table.add_row(name, "skipped", escape(reason))
    randomness = summary.get("randomness") or {}
    if randomness.get("stochastic"):
        layout = randomness["rows"]["layout"]
        table.add_row("draws", "", f"{summary['draws']} per input, {layout}")
    audit = summary.get("audit")
    if audit and audit["passed"] is None:  # why it did not run
        table.add_row("audit", "", escape(audit["detail"]))
    elif audit:
        verdicts = [f"{c['name']} {c['status']}" for c in audit.get("checks", [])]
        verdicts = verdicts or [f"{k} {v}" for k, v in audit["counts"].items()]
        passed = "passed" if audit["passed"] else "[bold red]FAILED[/]"
        table.add_row("audit", "", f"{passed} {', '.join(verdicts)}")
    return table


def _announcing(console: Console, progress):
    """The progress callback, plus a printed line for the plan (forward passes of the suite and
    the default audit, before the long part) and one for the time estimate after the first
    batch."""

    def callback(event: str, info: dict) -> None:
        if event == "plan":
            passes = info["forward_passes"]
            line = f"plan: {info['examples']} examples; suite <= {passes['suite']:,} forward passes"
            if passes["audit"] is not None:
                line += f", default audit ({info['audit']}) <= {passes['audit']:,}"
            console.print(line + " (images through the model)")
        elif event == "estimate":
            rate, left = format_rate(info["images_per_s"]), format_duration(info["suite_s"])
            line = f"first batch {info['batch_s']:.1f} s ({rate} images/s): "
            line += f"about {left} left for the suite" if info["suite_s"] > 0 else "suite done"
            if info["audit_s"] is not None:
                line += f", at most about {format_duration(info['audit_s'])} for the audit"
            console.print(line)
        progress(event, info)

    return callback


def run(args: argparse.Namespace) -> int:
    from ciiv.distributed import init_distributed, is_main_process
    from ciiv.evaluate import evaluate_robustness, get_suite
    from ciiv.evaluate.selection import eval_dir_name
    from ciiv.train.run import resolve_device

    if args.list:
        _listing()
        return 0
    console = Console(stderr=True)
    main_process = is_main_process()
    suite = get_suite(args.suite)  # a bad name or suite file fails before the model loads
    protocols = ("full", "paper") if args.protocol == "both" else (args.protocol,)
    if args.out and len(protocols) > 1 and not args.model:
        raise ValueError("--out takes one protocol; drop it or choose --protocol full|paper")
    dist = init_distributed(use_cuda=resolve_device(args.device).type == "cuda")
    device = resolve_device(args.device, dist.local_rank)
    target = load_target(args, "eval", device)
    if args.model:
        protocols = user_protocols(target.model, target.x[:2].to(device), args.protocol)
    default_split = target.split == next(iter(target.splits.test))
    audit = not args.no_audit
    for protocol in protocols:
        name = eval_dir_name(
            suite.name, protocol, None if default_split else target.split, args.eps
        )
        out_dir = Path(args.out) if args.out and not args.model else target.root / "eval" / name
        title = f"eval {args.model or args.run_dir}"
        with ProgressDisplay(console, title, enabled=main_process) as display:
            progress = EvalProgress(display, f"{suite.name}/{protocol}")
            result = evaluate_robustness(
                target.model,
                target.x,
                target.y,
                suite=suite,
                protocol=protocol,
                **{name: getattr(args, name) for name in _SAME_NAMES},
                out_dir=out_dir,
                dataset=target.dataset,
                indices=target.index.tolist(),
                audit=audit,
                run_info=target.run,
                progress=_announcing(console, progress) if main_process else None,
            )
        # The audit does not depend on the protocol: run it once, store it with both.
        audit = result.summary.get("audit", False)
        if main_process:
            console.print(_result_table(result.summary, out_dir))
    dist.shutdown()
    return 0
