"""VGG with BatchNorm (Simonyan & Zisserman 2015; BN after every convolution as in Ioffe &
Szegedy 2015), adapted to small images.

Choices for 28-64 px inputs (documented because they differ from the ImageNet VGG):
- the three 4096-wide fully connected layers are dropped: the features are the 512 channels of
  the last stage after global average pooling (D = 512), followed by the single linear head;
- max-pooling uses ``ceil_mode=True`` so that the five 2x2 poolings never reach an empty map:
  32 px -> 1x1 (same as floor mode), 28 px (MNIST) -> 28-14-7-4-2-1, 64 px -> 2x2, then averaged.
"""

from __future__ import annotations

from torch import nn

from ciiv.models.backbones.layers import conv3x3, init_weights
from ciiv.models.registry import Backbone, register_model

# Configuration "B" of Simonyan & Zisserman (13 weight layers = 10 conv + 3 FC); "M" = 2x2 max-pool.
VGG13_STAGES: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 2), (512, 2), (512, 2))


def vgg_bn(stages: tuple[tuple[int, int], ...], num_classes: int, in_channels: int) -> Backbone:
    """VGG-BN from ``(width, number of convs)`` per stage, each stage ending in a max-pool."""
    layers: list[nn.Module] = []
    width = in_channels
    for out_channels, convs in stages:
        for _ in range(convs):
            layers += [conv3x3(width, out_channels), nn.BatchNorm2d(out_channels), nn.ReLU(True)]
            width = out_channels
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    features = nn.Sequential(*layers)
    features.apply(init_weights)
    return Backbone(features, num_features=width, num_classes=num_classes)


@register_model("vgg13_bn")
def vgg13_bn(num_classes: int, in_channels: int) -> Backbone:
    """VGG-13 with BatchNorm, small-image variant (see module docstring). D = 512."""
    return vgg_bn(VGG13_STAGES, num_classes, in_channels)
