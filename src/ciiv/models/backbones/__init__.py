"""Built-in backbone families; importing this package registers them in
:mod:`ciiv.models.registry` (one module per family)."""

from ciiv.models.backbones import (  # noqa: F401 (register)
    preact_resnet,
    small_cnn,
    timm_adapter,
    torchvision_adapter,
    vgg,
    wide_resnet,
)
