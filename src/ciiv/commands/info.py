"""`ciiv info`: the sampler's statistics for an image size, and the registered names."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from ciiv.sampling import RetinotopicSampler, grid_centers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-size", type=int, default=32, help="square image size in pixels")
    parser.add_argument("--views", type=int, default=9, help="number of views L")


def run(args: argparse.Namespace) -> int:
    from ciiv.models import list_models

    console = Console()
    sampler = RetinotopicSampler(args.image_size, num_views=args.views)
    keep = sampler.keep_probability()
    table = Table(title=f"Retinotopic sampler, {args.image_size} px, {args.views} views")
    for column in ("view", "centre (row, col)", "min P(keep)", "mean P(keep)", "always kept"):
        table.add_column(column, justify="right")
    for view, center in enumerate(grid_centers(args.image_size, args.image_size)[: args.views]):
        p = keep[view]
        row, col = (int(c) for c in center)
        stats = (f"{p.min():.4f}", f"{p.mean():.4f}", f"{(p >= 1).float().mean():.1%}")
        table.add_row(str(view), f"({row}, {col})", *stats)
    console.print(table)
    console.print(f"all views: mean P(keep) {keep.mean():.4f}, min {keep.min():.4f}")
    console.print(f"backbones: {', '.join(list_models())} (plus tv:<name> and timm:<name>)")
    return 0
