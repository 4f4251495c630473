"""Command-line entry point: `ciiv <command> ...`. Wiring only.

Each command lives in ``ciiv.commands.<name>`` and defines ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported lazily so that ``ciiv --help`` stays fast.
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


def _command_module(name: str):
    return importlib.import_module(f"ciiv.commands.{name.replace('-', '_')}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ciiv", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ciiv {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported: the others just get their one-line help.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _command_module(name).add_arguments(p)
    return parser


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
    return int(_command_module(args.command).run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
