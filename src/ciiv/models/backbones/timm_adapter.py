"""``timm:<name>``: a timm model as a :class:`Backbone` (needs ``pip install ciiv[timm]``).

timm builds the model without classifier (``num_classes=0``, so it returns pooled pre-logits
features) and with ``in_chans`` input channels; ``pretrained=False`` always (no downloads).
"""

from __future__ import annotations

import importlib.util

from torch import nn

from ciiv.deps import require
from ciiv.models.registry import Backbone, register_prefix, unknown_name_message


def _timm(name: str | None = None):
    """The timm module; with ``name``, a ValueError unless timm can build that architecture."""
    timm = require("timm", needed_by="a timm: backbone")
    if name is not None and not timm.is_model(name):
        listing = "See timm.list_models()."
        raise ValueError(unknown_name_message("timm model", name, timm.list_models(), listing))
    return timm


def timm_names() -> list[str]:
    """Architectures timm can build (empty when timm is not installed)."""
    if importlib.util.find_spec("timm") is None:
        return []
    return _timm().list_models()


@register_prefix(
    "timm",
    names=timm_names,
    hint='timm.create_model, needs `pip install "ciiv[timm]"`',
    requires=("timm",),
)
class TimmBackbone(Backbone):
    """timm's ``name`` without classifier (``timm_kwargs`` go to ``timm.create_model``), plus a
    fresh linear ``head``. ``num_features`` is timm's ``head_hidden_size`` when the model defines
    it (the width of the pre-logits output, which differs from ``num_features`` for e.g.
    MobileNetV3), else ``num_features``."""

    def __init__(self, name: str, num_classes: int, in_channels: int, **timm_kwargs) -> None:
        timm = _timm(name)
        if "pretrained" in timm_kwargs:
            raise ValueError("timm: models are always built with pretrained=False (no downloads)")
        model: nn.Module = timm.create_model(
            name, pretrained=False, num_classes=0, in_chans=in_channels, **timm_kwargs
        )
        num_features = getattr(model, "head_hidden_size", None) or model.num_features
        super().__init__(model, num_features=num_features, num_classes=num_classes)
        self.name = name
