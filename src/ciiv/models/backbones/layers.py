"""Small building blocks shared by the native backbone families."""

from __future__ import annotations

from torch import nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm always follows or precedes it)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def init_weights(module: nn.Module) -> None:
    """He-normal (fan-out, ReLU) init for convolutions, identity init for BatchNorm.

    Use with ``model.apply(init_weights)``. Linear layers keep PyTorch's default init.
    He et al. (2015) derive this scale for ReLU networks; fan-out keeps backward variance stable.
    """
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
