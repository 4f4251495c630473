"""``ciiv train``: train any method on any dataset, resume a run, or run under torchrun (DDP).

ciiv train --dataset shapes --method ciiv --backbone small_cnn --epochs 5 --out runs/a
ciiv train --config paper-cifar10 --set optim.lr=0.05 --out runs/b
ciiv train --resume runs/b                       # continue after a crash, Ctrl-C or SIGTERM
torchrun --nproc_per_node 4 -m ciiv train --config paper-cifar10 --out runs/c
"""

from __future__ import annotations

import argparse
import logging

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ciiv.commands._progress import ProgressDisplay, TrainProgress

__all__ = ["add_arguments", "run"]

# Flags that are shortcuts for config keys (applied after --config, before --set):
# flag -> (config key, metavar, help).
_SHORTCUTS: dict[str, tuple[str, str, str]] = {
    "--dataset": ("data.dataset", "NAME", "what to train on, e.g. cifar10, mnist, shapes"),
    "--method": ("method.name", "NAME", "how to train: ciiv, vanilla, pgd_at, trades, rs, ..."),
    "--backbone": (
        "model.backbone",
        "NAME",
        "the network, e.g. preact_resnet18, small_cnn, tv:resnet18, or timm:resnet18 after pip "
        'install "ciiv[timm]"',
    ),
    "--epochs": ("epochs", "N", "passes over the training set"),
    "--data-dir": ("data.data_dir", "PATH", "where the dataset's files are, or go when downloaded"),
    "--device": (
        "device",
        "auto|cpu|cuda",
        "where to train: auto (default) takes a GPU when there is one",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Precedence: built-in defaults (the paper's CIFAR-10 setting) < --config < the shortcut\n"
        "flags < --set. `ciiv train --list` shows presets, methods, datasets and backbones."
    )
    parser.add_argument(
        "--config",
        metavar="PRESET|FILE",
        help="start from a preset (e.g. paper-cifar10, shapes-fast; see --list) or a YAML file",
    )
    for flag, (key, metavar, text) in _SHORTCUTS.items():
        kind = int if flag == "--epochs" else str
        parser.add_argument(flag, dest=key, type=kind, metavar=metavar, help=f"{text} ({key})")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set optim.lr=0.05 --set method.pgd.eps=8/255",
    )
    parser.add_argument(
        "--out",
        metavar="RUN_DIR",
        help="where the run goes: config, checkpoints, metrics (a new or empty directory)",
    )
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint"
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the config these options give (every key, as YAML) and exit",
    )
    parser.add_argument(
        "--list", action="store_true", help="list presets, methods, datasets and backbones"
    )


def _listing(console: Console) -> None:
    from ciiv.data import list_datasets
    from ciiv.models import list_models
    from ciiv.train import list_methods, list_presets

    table = Table(show_header=False, box=None)
    for name, values in (
        ("presets", list_presets()),
        ("methods", list_methods()),
        ("datasets", list_datasets()),
        ("backbones", list_models() + ["tv:<name>", "timm:<name>"]),
    ):
        table.add_row(f"[bold]{name}[/]", ", ".join(values))
    console.print(table)


def _summary(console: Console, result) -> None:
    table = Table(title=f"run {result.run_dir}", show_header=False)
    last = result.history[-1] if result.history else {}
    best = (
        "n/a (no validation split)"
        if result.best_epoch is None
        else (f"{result.best_val_accuracy:.4f} at epoch {result.best_epoch + 1}")
    )
    table.add_row("best validation accuracy", best)
    if last:
        table.add_row("last epoch", f"{last['epoch'] + 1}: train acc {last['train_acc']:.4f}")
    table.add_row("checkpoints", str(result.run_dir / "checkpoints"))
    table.add_row("metrics", str(result.run_dir / "metrics.jsonl"))
    console.print(table)


def run(args: argparse.Namespace) -> int:
    from ciiv.distributed import is_main_process
    from ciiv.train import (
        ConfigError,
        TrainingInterrupted,
        config_to_dict,
        fit,
        load_config,
        resume,
        saved_config,
    )

    console = Console(stderr=True)
    if args.list:
        _listing(Console())
        return 0
    try:
        if args.resume:
            if args.config or (args.out and args.out != args.resume):
                raise ConfigError(
                    "--resume continues a run with its saved config; do not combine it with "
                    "--config or a different --out"
                )
        elif not args.out and not args.print_config:
            raise ConfigError("--out RUN_DIR is required (or --resume RUN_DIR)")
        # The shortcut flags as (key, value) pairs, then the --set strings.
        given = [(key, getattr(args, key)) for key, *_ in _SHORTCUTS.values()]
        overrides = [(key, value) for key, value in given if value is not None] + args.overrides
        if args.print_config:
            config = load_config(
                saved_config(args.resume) if args.resume else args.config, overrides
            )
            print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
            return 0
        main_process = is_main_process()
        if not main_process:  # under torchrun, rank 0 speaks for all processes
            logging.getLogger().setLevel(logging.WARNING)
        with ProgressDisplay(
            console, f"train {args.resume or args.out}", enabled=main_process
        ) as d:
            callback = TrainProgress(d) if main_process else None
            if args.resume:
                result = resume(args.resume, overrides, progress=callback)
            else:
                result = fit(load_config(args.config, overrides), args.out, progress=callback)
    except TrainingInterrupted as exc:
        console.print(f"[bold yellow]{escape(str(exc))}[/]")
        return exc.exit_code
    except KeyboardInterrupt:  # before the training loop, or a second Ctrl-C while saving
        run_dir = args.resume or args.out
        hint = (
            f"; continue with: ciiv train --resume {escape(run_dir)} (from its last checkpoint, "
            "or from the start if none was written)"
        )
        console.print("[bold yellow]interrupted[/]" + (hint if run_dir else ""))
        return 130
    if main_process:
        _summary(console, result)
    return 0
