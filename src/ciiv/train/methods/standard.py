"""Methods that train a plain (or smoothed) classifier without adversarial examples:
vanilla cross-entropy, mixup, randomized smoothing's noise training and BPFC (SPEC section 5)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ciiv.loss import RegWeightSchedule

from .base import Objective, StepContext, StepOutput, check_bounds, register_method

__all__ = [
    "BPFC",
    "Mixup",
    "MixupBatch",
    "MixupOptions",
    "NoiseTraining",
    "Vanilla",
    "mix",
    "quantise",
]


@register_method("vanilla")
class Vanilla(Objective):
    """Plain cross-entropy."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        logits = model(x)
        return StepOutput(F.cross_entropy(logits, y), logits)


@dataclass
class MixupBatch:
    """A mixed batch: x = lam * x + (1 - lam) * x[perm]; labels y_a = y, y_b = y[perm]."""

    x: Tensor
    y_a: Tensor
    y_b: Tensor
    lam: float

    def loss(self, per_example_ce) -> Tensor:
        """lam * CE(y_a) + (1 - lam) * CE(y_b), for ``per_example_ce(labels) -> scalar``."""
        return self.lam * per_example_ce(self.y_a) + (1 - self.lam) * per_example_ce(self.y_b)

    @property
    def dominant(self) -> Tensor:
        """The labels with the larger weight (for the training accuracy)."""
        return self.y_a if self.lam >= 0.5 else self.y_b


def mix(x: Tensor, y: Tensor, alpha: float) -> MixupBatch:
    """Mixup (Zhang et al. 2018): one lam ~ Beta(alpha, alpha) per batch, a random pairing."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device)
    return MixupBatch(lam * x + (1 - lam) * x[perm], y, y[perm], lam)


@dataclass(frozen=True)
class MixupOptions:
    """``alpha``: the mixing weight is drawn from Beta(alpha, alpha) (1)."""

    alpha: float = 1.0

    def __post_init__(self) -> None:
        check_bounds(self, alpha="> 0")


@register_method("mixup")
class Mixup(Objective):
    """Mixup cross-entropy with Beta(alpha, alpha) mixing weights (alpha = 1)."""

    Options = MixupOptions

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        batch = mix(x, y, self.options.alpha)
        logits = model(batch.x)
        loss = batch.loss(lambda labels: F.cross_entropy(logits, labels))
        return StepOutput(loss, logits, targets=batch.dominant)


@register_method("rs")
class NoiseTraining(Objective):
    """Randomized smoothing's training: CE of the base model on clip(x + sigma n, 0, 1), sigma
    being the :class:`~ciiv.models.SmoothedClassifier`'s (it predicts by majority vote)."""

    model_kind = "smoothed"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        logits = model.base(model.noisy(x))
        return StepOutput(F.cross_entropy(logits, y), logits)


def quantise(x: Tensor, step: float, noise: float) -> Tensor:
    """BPFC's quantisation of pixels x in [0, 1]: add U(-noise, noise), map each value to the
    centre of its bin of width ``step``, clip to [0, 1]. Step 32/255 keeps 3 of 8 bit planes."""
    noisy = x + noise * (2 * torch.rand_like(x) - 1)
    return (torch.floor(noisy / step) * step + step / 2).clamp(0, 1)


@register_method("bpfc")
class BPFC(Objective):
    """Bit-plane feature consistency (Addepalli et al. 2020; SPEC section 5): CE(f(x), y) +
    w(epoch) * mean_batch ||f(x) - f(quantise(x))||_2^2 on the logits (w = 1, x9 after 25, 50, 75).
    Clean and quantised images go through separate passes (own BatchNorm batch statistics)."""

    @dataclass(frozen=True)
    class Options:
        """BPFC's bin width and pre-noise amplitude ([0, 1] pixel units), and the weight of the
        logit-consistency term, multiplied by ``factor`` after each milestone epoch."""

        step: float = 32 / 255
        noise: float = 8 / 255
        weight: float = 1.0
        factor: float = 9.0
        milestones: list[int] = field(default_factory=lambda: [25, 50, 75])

        def __post_init__(self) -> None:
            check_bounds(
                self,
                step="> 0",
                noise=">= 0",
                weight=">= 0",
                factor="> 0",
                milestones="increasing epochs >= 0",
            )

    def __init__(self, options: Options | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.weight = RegWeightSchedule(o.weight, o.factor, tuple(o.milestones))

    def epoch_values(self, epoch: int) -> dict[str, float]:
        return {"w_bpfc": self.weight(epoch)}

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        logits = model(x)
        logits_q = model(quantise(x, self.options.step, self.options.noise))
        ce = F.cross_entropy(logits, y)
        consistency = (logits - logits_q).square().sum(1).mean()
        loss = ce + self.weight(ctx.epoch) * consistency
        return StepOutput(loss, logits, metrics={"ce": ce.detach(), "bpfc": consistency.detach()})
