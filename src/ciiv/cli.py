"""Command-line entry point: ``ciiv <command> ...``.

Each command lives in ``ciiv.commands.<name>`` and defines ``add_arguments(parser)`` and
``run(args) -> int``; its module docstring (usage examples) is its ``--help`` description. Modules
are imported lazily so that ``ciiv --help`` stays fast. A command raises its usage errors (a
ValueError, a missing run or dataset...: see ``_usage_errors``); ``main`` prints them as one line
and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ciiv import __version__

COMMANDS: dict[str, str] = {
    "demo": "train vanilla and CiiV on the built-in shapes data and compare their robustness",
    "train": "train a model with any method on any dataset",
    "eval": "evaluate a trained run (or your own model) against an attack suite",
    "report": "merge evaluation summaries into tables and plots",
    "audit": "check an evaluation for obfuscated gradients",
    "certify": "certified L2 radii of a randomized-smoothing run (Cohen et al.'s CERTIFY)",
    "experiment": "run a study grid (runs x seeds: train, audit, evaluate) and tabulate it",
    "info": "show the sampler's statistics and a model's shapes (a quick smoke test)",
}

DESCRIPTION = """\
Train image classifiers with CiiV (causal intervention by instrumental variable,
arXiv 2106.09534) or a baseline, and evaluate their robustness honestly: attacks that
query the model as it predicts (EOT, BPDA, adaptive), per-example worst cases, and an
audit for obfuscated gradients.

quick start:
  ciiv demo --out demo-out                           # vanilla vs CiiV on built-in data, CPU minutes
  ciiv train --config shapes-fast --out runs/ciiv    # train CiiV yourself (--list: other choices)
  ciiv eval runs/ciiv --suite quick && ciiv report runs/ciiv     # attack it; table and plot
"""

EPILOG = "`ciiv COMMAND --help` shows a command's options and examples; the guides are in docs/."


def _command_module(name: str):
    return importlib.import_module(f"ciiv.commands.{name.replace('-', '_')}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ciiv",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ciiv {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also print debug messages and tracebacks"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    # Only the chosen command's module is imported: the others just get their one-line help.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, help_text in COMMANDS.items():
        if name == chosen:
            module = _command_module(name)
            p = sub.add_parser(
                name,
                help=help_text,
                description=module.__doc__.replace("``", "`").strip() + "\n",  # no reST markup
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            module.add_arguments(p)
        else:
            sub.add_parser(name, help=help_text, description=help_text)
    return parser


def _usage_errors() -> tuple[type[BaseException], ...]:
    """What a command reports as one line (saying what to do) and exit status 2; anything else
    is a bug and keeps its traceback. (Imported only when an error is raised.)"""
    from ciiv.data import DatasetNotFoundError
    from ciiv.deps import MissingDependency
    from ciiv.train import CheckpointError, RunDirError

    return (
        ValueError,
        CheckpointError,
        RunDirError,
        DatasetNotFoundError,
        FileExistsError,
        FloatingPointError,
        MissingDependency,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.command is None:
        build_parser([]).print_help()
        return 0
    try:
        return int(_command_module(args.command).run(args) or 0)
    except _usage_errors() as exc:
        from rich.console import Console
        from rich.markup import escape

        logging.getLogger(__name__).debug("ciiv %s failed", args.command, exc_info=True)
        # One line (the terminal wraps it), so that a command to copy is never cut.
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
