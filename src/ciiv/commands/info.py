"""`ciiv info`: the retinotopic sampler's statistics for an image size, and the shapes of a CiiV
model built on a backbone (a quick smoke test of an install or of a new backbone).

    ciiv info                                        # 32 px, 9 views, preact_resnet18
    ciiv info --image-size 64 --backbone small_cnn --channels 1 --classes 100
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ciiv.commands._ui import add_options
from ciiv.sampling import RetinotopicSampler, grid_centers

EXAMPLE_BATCH = 2  # images sent through the model to show the shapes
OPTIONS = (  # flag, default, metavar, help
    ("--image-size", 32, "PX", "square image size in pixels"),
    ("--views", 9, "L", "number of views L of the sampler"),
    ("--backbone", "preact_resnet18", "NAME",
     "backbone of the model whose shapes are shown, e.g. small_cnn, tv:resnet18"),
    ("--channels", 3, "C", "image channels: 3 for RGB, 1 for MNIST"),
    ("--classes", 10, "K", "number of classes"),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, OPTIONS)


def _model_table(args: argparse.Namespace, sampler: RetinotopicSampler) -> Table:
    """Build a CiiV model on the backbone and send a random batch through it."""
    import torch

    from ciiv.models import CiiVClassifier, create_model

    backbone = create_model(args.backbone, num_classes=args.classes, in_channels=args.channels)
    model = CiiVClassifier(backbone, sampler, [0.5] * args.channels, [0.25] * args.channels).eval()
    x = torch.rand(EXAMPLE_BATCH, args.channels, args.image_size, args.image_size)
    seen = []  # what the backbone receives: the views folded into its batch
    features = backbone.forward_features

    def recording(images):
        seen.append(images)
        return features(images)

    backbone.forward_features = recording
    try:
        with torch.no_grad():
            views = model.forward_views(x)
            logits = model(x)
    finally:
        del backbone.forward_features  # the class's method again
    params = sum(p.numel() for p in backbone.parameters())
    b, l = EXAMPLE_BATCH, sampler.num_views
    table = Table(title=f"CiiV model on {escape(args.backbone)}, a batch of B = {b} images")
    table.add_column("what")
    table.add_column("shape", justify="right")
    for what, t in (
        ("input x in [0, 1]", x),
        (f"backbone input: L * B = {l * b} views in one batch", seen[0]),
        (f"features phi per view (D = {backbone.num_features})", views.features),
        ("logits per view", views.logits),
        ("sampling density z per view", views.z),
        ("prediction logits (1/L) sum_l logits_l / z_l", logits),
    ):
        table.add_row(what, str(list(t.shape)))
    table.add_row("backbone parameters", f"{params:,}")
    return table


def run(args: argparse.Namespace) -> int:
    from ciiv.models import list_models

    console = Console()
    sampler = RetinotopicSampler(args.image_size, num_views=args.views)
    model_table = _model_table(args, sampler)
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
    console.print(model_table)
    console.print(f"backbones: {', '.join(list_models())} (plus tv:<name> and timm:<name>)")
    return 0
