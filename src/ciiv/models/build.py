"""Build a ready-to-train model (plain, CiiV or smoothed) from a typed config and dataset info.

The training method decides which kind of model it needs (``ModelKind``); the dataset decides the
shapes, the normalisation and the default spike scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from torch import nn

from ciiv._checks import check_bounds, check_choice
from ciiv.sampling import RetinotopicSampler

from .classifier import CiiVClassifier, Classifier
from .registry import create_model
from .smoothing import SmoothedClassifier

if TYPE_CHECKING:
    from ciiv.data import DatasetInfo

__all__ = ["MODEL_KINDS", "ModelConfig", "ModelKind", "build_model"]

ModelKind = Literal["plain", "ciiv", "smoothed"]
MODEL_KINDS: tuple[str, ...] = ("plain", "ciiv", "smoothed")
# ModelConfig fields that go to RetinotopicSampler under the same name (spike_scale aside).
_SAMPLER_FIELDS = (
    "num_views samples_per_view alpha gamma keep_threshold spike_eps per_example_masks "
    "random_centers"
).split()


@dataclass
class ModelConfig:
    """What to build: ``backbone`` (a :func:`ciiv.models.create_model` name) with the factory's
    ``backbone_kwargs``; for CiiV models the :class:`~ciiv.sampling.RetinotopicSampler` settings
    (SPEC section 2; ``spike_scale`` None uses the dataset's: 0.9 CIFAR, 0.8 MNIST and
    mini-ImageNet); for smoothed models the noise std ``smoothing_sigma`` ([0, 1] pixel units)
    and the draws averaged by ``forward`` / voting in ``predict``."""

    backbone: str = "preact_resnet18"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    num_views: int = 9
    samples_per_view: int = 3
    spike_scale: float | None = None
    alpha: float = 10.0
    gamma: float = 0.3
    keep_threshold: float = 0.9
    spike_eps: float = 1e-5
    per_example_masks: bool = False
    random_centers: bool = False
    smoothing_sigma: float = 0.25
    smoothing_draws: int = 10
    smoothing_votes: int = 10

    def __post_init__(self) -> None:
        # Messages are "key: ..."; parsing prefixes the section ("model.alpha: must be > 0").
        counts = ("num_views", "samples_per_view", "smoothing_draws", "smoothing_votes")
        positive = ("alpha", "gamma", "spike_eps", "smoothing_sigma")
        check_bounds(self, **dict.fromkeys(counts, ">= 1"), **dict.fromkeys(positive, "> 0"))
        if not self.random_centers and self.num_views > 9:
            raise ValueError(
                f"num_views: at most 9 views on the 3x3 grid (got {self.num_views}); or set "
                "model.random_centers"
            )
        if self.spike_scale is not None and not self.spike_scale > 0:
            raise ValueError(
                f"spike_scale: must be > 0 or null (the dataset's), got {self.spike_scale}"
            )
        if not 0 < self.keep_threshold <= 1:
            raise ValueError(f"keep_threshold: must be in (0, 1], got {self.keep_threshold}")


def build_model(config: ModelConfig, info: DatasetInfo, kind: ModelKind = "plain") -> nn.Module:
    """A freshly initialised model for ``info``'s images (pixels in [0, 1]), on the CPU: for
    ``kind`` "plain" a :class:`Classifier`, "ciiv" a :class:`CiiVClassifier`, "smoothed" a
    :class:`SmoothedClassifier` around a :class:`Classifier`. Raises ValueError for an unknown
    kind or backbone, or settings the sampler rejects."""
    check_choice("model kind", kind, MODEL_KINDS)
    backbone = create_model(
        config.backbone, info.num_classes, info.in_channels, **config.backbone_kwargs
    )
    if kind == "ciiv":
        spike_scale = info.spike_scale if config.spike_scale is None else config.spike_scale
        settings = {name: getattr(config, name) for name in _SAMPLER_FIELDS}
        sampler = RetinotopicSampler(info.image_size, spike_scale=spike_scale, **settings)
        return CiiVClassifier(backbone, sampler, info.mean, info.std)
    plain = Classifier(backbone, info.mean, info.std)
    if kind == "smoothed":
        return SmoothedClassifier(
            plain,
            sigma=config.smoothing_sigma,
            n_draws=config.smoothing_draws,
            n_votes=config.smoothing_votes,
        )
    return plain
