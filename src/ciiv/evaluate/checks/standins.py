"""Deterministic stand-ins for a CiiV model: the same backbone without the random sampler.

They answer "is the backbone itself easy to break?" (check 8) and serve as the surrogate of the
transfer attack (check 6).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["BackboneOnImages", "ExpectedSampler", "stand_ins"]


class ExpectedSampler(nn.Module):
    """``model.forward_expected``: every spike replaced by its firing probability and every mask by
    its keep-probability (the sampler's expectation), one smooth view per centre."""

    stochastic = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_expected(x)


class BackboneOnImages(nn.Module):
    """The backbone on the normalised images, the sampler replaced by the identity (no views)."""

    stochastic = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.backbone(self.model.normalise(x))


def stand_ins(model: nn.Module) -> dict[str, nn.Module]:
    """{"expected": ..., "backbone": ...} for a model with a sampler; {} for any other model."""
    out: dict[str, nn.Module] = {}
    if callable(getattr(model, "forward_expected", None)):
        out["expected"] = ExpectedSampler(model)
        if hasattr(model, "backbone") and callable(getattr(model, "normalise", None)):
            out["backbone"] = BackboneOnImages(model)
    return out
