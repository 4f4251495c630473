"""``ciiv report``: merge evaluation summaries into one table (markdown or JSON) and plots.

    ciiv report runs/vanilla runs/ciiv --out reports/shapes
    ciiv report runs/ciiv/eval/standard-linf-full runs/ciiv/eval/standard-linf-paper --format json
    ciiv report evals/mine --card --card-info card.yaml   # + OUT/cards/*.json, *.md

Each RUN_DIR may be a run directory (all its eval/*/summary.json), an evaluation directory or a
summary.json file. Only the summary files are read.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", metavar="RUN_DIR", nargs="+", help="run dirs, evaluation dirs or summary files"
    )
    parser.add_argument(
        "--out",
        default="report",
        metavar="DIR",
        help="where the report and its plots go (default ./report)",
    )
    parser.add_argument(
        "--format",
        choices=("markdown", "json", "both"),
        default="markdown",
        help="report.md, report.json or both (plots are written in every case)",
    )
    parser.add_argument(
        "--card",
        action="store_true",
        help="also write a model card per evaluation to OUT/cards/ (RobustBench-style JSON + .md)",
    )
    parser.add_argument(
        "--card-info",
        metavar="FILE",
        help="YAML/JSON with name, link, authors, venue, architecture, additional_data, "
        "reported, footnote for the cards",
    )


def run(args: argparse.Namespace) -> int:
    from ciiv.report import write_report

    console = Console(stderr=True)
    written = write_report(args.paths, args.out, args.format)
    if args.card or args.card_info:
        from ciiv.card import load_card_info, write_cards

        info = load_card_info(args.card_info) if args.card_info else None
        written += write_cards(args.paths, f"{args.out}/cards", info)
    if args.format in ("markdown", "both"):
        Console(soft_wrap=True).print(
            written[0].read_text(encoding="utf-8"), markup=False, highlight=False
        )
    for path in written:
        console.print(f"wrote {escape(str(path))}")
    return 0
