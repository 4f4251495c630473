"""``tv:<name>``: any torchvision classification model as a :class:`Backbone`.

The model is built with ``weights=None`` (random init, never a download). Its classifier is found
generally, as the last ``nn.Linear`` in module order (resnet ``fc``, vgg/efficientnet/mobilenet/
convnext ``classifier[-1]``, densenet ``classifier``, vit ``heads.head``, swin ``head``), and
replaced by an identity so the model returns features; a fresh ``head`` of the requested size is
put on top. For ``in_channels != 3`` the first ``nn.Conv2d`` in module order (the stem) is
rebuilt with the requested number of input channels (freshly initialised).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from ciiv.models.registry import Backbone, register_prefix, unknown_name_message

# torchvision's builders make ImageNet classifiers unless told otherwise; the located layer must
# have this many outputs, which guards against picking some inner Linear by mistake.
_IMAGENET_CLASSES = 1000


def torchvision_names() -> list[str]:
    """Classification builders of ``torchvision.models`` (e.g. ``resnet18``, ``vit_b_16``); the
    squeezenets are listed but rejected at build time (their classifier is a convolution)."""
    return torchvision.models.list_models(module=torchvision.models)


@register_prefix("tv", names=torchvision_names, hint="any torchvision.models classifier")
class TorchvisionBackbone(Backbone):
    """torchvision's ``name`` with its last ``nn.Linear`` replaced by ``head`` (see the module
    docstring). ``builder_kwargs`` go to the builder, e.g. ``image_size=32`` for ViTs,
    ``aux_logits=False`` for googlenet / inception_v3."""

    def __init__(self, name: str, num_classes: int, in_channels: int, **builder_kwargs) -> None:
        valid = torchvision_names()
        if name not in valid:
            raise ValueError(unknown_name_message("torchvision model", name, valid))
        if "weights" in builder_kwargs:
            raise ValueError("tv: models are always built with weights=None (no downloads)")
        model = torchvision.models.get_model(name, weights=None, **builder_kwargs)
        if getattr(model, "aux_logits", False):
            # Auxiliary heads make the model return a tuple in training mode and would keep
            # 1000-way classifiers that the CiiV head never uses.
            raise ValueError(f"tv:{name} has auxiliary classifiers; pass aux_logits=False")
        num_features = _strip_classifier(model, name)
        if in_channels != 3:
            _replace_stem(model, name, in_channels)
        super().__init__(model, num_features=num_features, num_classes=num_classes)
        self.name = name

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] -> features [N, D] (the input of the removed classifier)."""
        f = self.features(x)
        if f.dim() != 2:
            raise RuntimeError(
                f"tv:{self.name} produced features of shape {tuple(f.shape)}, expected [N, D]"
            )
        return f


def _strip_classifier(model: nn.Module, name: str) -> int:
    """Replace the last ``nn.Linear`` by ``nn.Identity``; return its ``in_features``."""
    linears = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"tv:{name} has no nn.Linear classifier (e.g. squeezenet ends in a convolution); "
            "use a model whose classifier is a linear layer"
        )
    path, linear = linears[-1]
    if linear.out_features != _IMAGENET_CLASSES:
        raise ValueError(
            f"tv:{name}: the last nn.Linear ({path}) has {linear.out_features} outputs, not the "
            f"{_IMAGENET_CLASSES}-way classifier expected; cannot locate the classifier"
        )
    model.set_submodule(path, nn.Identity())
    return linear.in_features


def _replace_stem(model: nn.Module, name: str, in_channels: int) -> None:
    """Rebuild the first ``nn.Conv2d`` with ``in_channels`` inputs, other settings unchanged."""
    path, conv = next(
        ((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None)
    )
    if conv is None or conv.groups != 1:
        raise ValueError(f"tv:{name}: cannot adapt the stem to {in_channels} input channels")
    stem = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    model.set_submodule(path, stem)
