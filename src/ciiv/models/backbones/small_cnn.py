"""A small CNN for MNIST, synthetic shapes and CPU demos/tests.

conv3x3 stride 2 -> conv3x3 -> max-pool -> conv3x3 (2x width) -> max-pool, each conv followed by
BN -> ReLU, then global average pooling and one hidden fully connected layer (+ ReLU) whose output
is the feature vector (D = 4 * width). The strided first convolution is what keeps it fast: a
full-resolution first layer costs about as much as the rest of the network (measured on CPU).
32 px -> 16 -> 8 -> 4; 28 px -> 14 -> 7 -> 3.
"""

from __future__ import annotations

from torch import nn

from ciiv._checks import positive_int
from ciiv.models.backbones.layers import conv3x3, init_weights
from ciiv.models.registry import Backbone, register_model


@register_model("small_cnn")
def small_cnn(num_classes: int, in_channels: int, width: int = 32) -> Backbone:
    """Small CNN of base ``width`` channels; D = 4 * width (128 by default)."""
    positive_int("width", width)
    features = nn.Sequential(
        conv3x3(in_channels, width, stride=2),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        conv3x3(width, width),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        conv3x3(width, 2 * width),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(2 * width, 4 * width),
        nn.ReLU(inplace=True),
    )
    features.apply(init_weights)
    return Backbone(features, num_features=4 * width, num_classes=num_classes)
