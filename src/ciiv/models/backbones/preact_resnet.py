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


class PreActBlock(nn.Module):
    """Basic unit: (BN-ReLU-conv3x3) x 2; ``out_channels = planes``."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        # The projection shares the pre-activation with the residual branch (He et al. 2016).
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    """Bottleneck unit: BN-ReLU-conv1x1, BN-ReLU-conv3x3 (strided), BN-ReLU-conv1x1 (x4 width)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        # Stride on the 3x3, not the first 1x1: a strided 1x1 would ignore 3/4 of the positions.
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + shortcut


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d | None:
    """1x1 projection shortcut where the unit changes shape, ``None`` (identity) otherwise."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def make_stage(
    block: type[PreActBlock | PreActBottleneck],
    in_channels: int,
    planes: int,
    num_blocks: int,
    stride: int,
) -> nn.Sequential:
    """``num_blocks`` units; only the first one strides and changes the width."""
    units = [block(in_channels, planes, stride)]
    units += [block(planes * block.expansion, planes) for _ in range(num_blocks - 1)]
    return nn.Sequential(*units)


def preact_network(
    block: type[PreActBlock | PreActBottleneck],
    stages: tuple[tuple[int, int, int], ...],
    num_classes: int,
    in_channels: int,
    stem_width: int,
) -> Backbone:
    """3x3 stem of ``stem_width``, then one stage per (planes, units, stride) of ``stages``, then
    BN -> ReLU -> global average pooling; D = the last planes x ``block.expansion``."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(stem=conv3x3(in_channels, stem_width))
    width = stem_width
    for i, (planes, units, stride) in enumerate(stages):
        layers[f"layer{i + 1}"] = make_stage(block, width, planes, units, stride)
        width = planes * block.expansion
    layers["bn"] = nn.BatchNorm2d(width)
    layers["relu"] = nn.ReLU(inplace=True)
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten(1)
    features = nn.Sequential(layers)
    features.apply(init_weights)
    return Backbone(features, num_features=width, num_classes=num_classes)


def preact_resnet(
    block: type[PreActBlock | PreActBottleneck],
    stage_blocks: tuple[int, int, int, int],
    num_classes: int,
    in_channels: int,
) -> Backbone:
    """Pre-activation ResNet with widths 64-128-256-512 (x ``block.expansion``), strides 1-2-2-2."""
    stages = tuple(zip((64, 128, 256, 512), stage_blocks, (1, 2, 2, 2), strict=True))
    return preact_network(block, stages, num_classes, in_channels, stem_width=64)


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int, in_channels: int) -> Backbone:
    """PreAct ResNet-18 (basic units 2-2-2-2); the paper's CIFAR backbone. D = 512."""
    return preact_resnet(PreActBlock, (2, 2, 2, 2), num_classes, in_channels)


@register_model("preact_resnet50")
def preact_resnet50(num_classes: int, in_channels: int) -> Backbone:
    """PreAct ResNet-50 (bottleneck units 3-4-6-3). D = 2048."""
    return preact_resnet(PreActBottleneck, (3, 4, 6, 3), num_classes, in_channels)
