"""Wide ResNet (Zagoruyko & Komodakis 2016, "Wide Residual Networks").

WRN-d-k has (d - 4) / 6 pre-activation basic units per stage, three stages of widths
16k-32k-64k with strides 1-2-2 after a 3x3 stem of width 16, then BN -> ReLU -> global average
pooling. WRN-34-10 (d = 34, k = 10, D = 640) is the backbone of Madry-style adversarial training
and TRADES on CIFAR. No dropout inside the units (the adversarial-training setting). The units are
the pre-activation basic units of :mod:`ciiv.models.backbones.preact_resnet`.
"""

from __future__ import annotations

from ciiv._checks import positive_int
from ciiv.models.backbones.preact_resnet import preact_network
from ciiv.models.registry import Backbone, register_model


@register_model("wrn34_10")
def wide_resnet(
    num_classes: int, in_channels: int, depth: int = 34, widen_factor: int = 10
) -> Backbone:
    """WRN-``depth``-``widen_factor`` with ``depth`` = 6n + 4 (10, 16, ..., 34, 40, ...); the
    defaults give WRN-34-10. D = 64 * widen_factor (640)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4 with n >= 1 (e.g. 10, 16, 28, 34), got {depth!r}")
    positive_int("widen_factor", widen_factor)
    units = (depth - 4) // 6
    stages = tuple(
        (base * widen_factor, units, stride) for base, stride in ((16, 1), (32, 2), (64, 2))
    )
    return preact_network(False, stages, num_classes, in_channels, stem_width=16)
