"""Pre-activation ResNets (He, Zhang, Ren, Sun 2016, "Identity Mappings in Deep Residual Networks").

Every residual unit is BN -> ReLU -> conv (the "full pre-activation" unit), and the shortcut is an
identity, or a 1x1 convolution on the pre-activated input where the shape changes. CIFAR stem: one
3x3 stride-1 convolution and no max-pool, so 32-px images reach the last stage at 4x4. A final
BN -> ReLU precedes global average pooling (pre-activation units leave their sum un-normalised).
Adaptive pooling makes the network accept any input size (28-px MNIST, 32-px CIFAR, 64-px
mini-ImageNet).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ciiv.models.backbones.layers import conv3x3, init_weights
from ciiv.models.registry import Backbone, register_model


class PreActUnit(nn.Module):
    """A full pre-activation unit: BN -> ReLU -> conv per layer (``bn1, conv1, bn2, conv2, ...``).

    Basic: (BN-ReLU-conv3x3) x 2, out_channels = planes. Bottleneck: BN-ReLU-conv1x1,
    BN-ReLU-conv3x3 (strided), BN-ReLU-conv1x1 to ``4 * planes``. The shortcut is the identity,
    or (``shortcut``) a 1x1 projection where the unit changes shape.
    """

    def __init__(self, in_channels: int, planes: int, stride: int, bottleneck: bool) -> None:
        super().__init__()
        out_channels = planes * (4 if bottleneck else 1)
        if bottleneck:
            # Stride on the 3x3, not the first 1x1: a strided 1x1 would ignore 3/4 of the positions.
            convs = [
                nn.Conv2d(in_channels, planes, 1, bias=False),
                conv3x3(planes, planes, stride),
                nn.Conv2d(planes, out_channels, 1, bias=False),
            ]
        else:
            convs = [conv3x3(in_channels, planes, stride), conv3x3(planes, out_channels)]
        for i, conv in enumerate(convs, 1):
            self.add_module(f"bn{i}", nn.BatchNorm2d(conv.in_channels))
            self.add_module(f"conv{i}", conv)
        self.num_layers = len(convs)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        # The projection shares the pre-activation with the residual branch (He et al. 2016).
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        for i in range(2, self.num_layers + 1):
            out = getattr(self, f"conv{i}")(self.relu(getattr(self, f"bn{i}")(out)))
        return out + shortcut


def preact_network(
    bottleneck: bool,
    stages: tuple[tuple[int, int, int], ...],
    num_classes: int,
    in_channels: int,
    stem_width: int,
) -> Backbone:
    """3x3 stem of ``stem_width``, then one stage per (planes, units, stride) of ``stages`` (only
    its first unit strides and changes the width), then BN -> ReLU -> global average pooling;
    D = the last planes (x 4 with bottleneck units)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(stem=conv3x3(in_channels, stem_width))
    width = stem_width
    for i, (planes, units, stride) in enumerate(stages):
        stage = [PreActUnit(width, planes, stride, bottleneck)]
        width = planes * (4 if bottleneck else 1)
        stage += [PreActUnit(width, planes, 1, bottleneck) for _ in range(units - 1)]
        layers[f"layer{i + 1}"] = nn.Sequential(*stage)
    layers["bn"] = nn.BatchNorm2d(width)
    layers["relu"] = nn.ReLU(inplace=True)
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten(1)
    features = nn.Sequential(layers)
    features.apply(init_weights)
    return Backbone(features, num_features=width, num_classes=num_classes)


def preact_resnet(
    bottleneck: bool, stage_blocks: tuple[int, int, int, int], num_classes: int, in_channels: int
) -> Backbone:
    """Pre-activation ResNet with widths 64-128-256-512 (x 4 with bottlenecks), strides 1-2-2-2."""
    stages = tuple(zip((64, 128, 256, 512), stage_blocks, (1, 2, 2, 2), strict=True))
    return preact_network(bottleneck, stages, num_classes, in_channels, stem_width=64)


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int, in_channels: int) -> Backbone:
    """PreAct ResNet-18 (basic units 2-2-2-2); the paper's CIFAR backbone. D = 512."""
    return preact_resnet(False, (2, 2, 2, 2), num_classes, in_channels)


@register_model("preact_resnet50")
def preact_resnet50(num_classes: int, in_channels: int) -> Backbone:
    """PreAct ResNet-50 (bottleneck units 3-4-6-3). D = 2048."""
    return preact_resnet(True, (3, 4, 6, 3), num_classes, in_channels)
