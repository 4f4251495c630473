"""CiiV's objective (SPEC section 4) and its two variants: with PGD examples and with mixup.

loss = w_ce * (1/L) sum_l CE(logits_l, y) + w_reg(epoch) * L_reg(phi, z), computed from one
``forward_views`` pass of the CiiV model (all L views folded into the batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from ciiv.loss import RegWeightSchedule, consistency_loss, view_cross_entropy
from ciiv.models import CiiVClassifier

from .adversarial import craft_pgd
from .base import Objective, StepContext, StepOutput, register_method
from .standard import MixupBatch, mix

if TYPE_CHECKING:
    from ciiv.train.config import MethodConfig, PGDConfig

__all__ = ["CiiV", "CiiVAdversarial", "CiiVMixup"]


@register_method("ciiv")
class CiiV(Objective):
    """w_ce * per-view CE + w_reg(epoch) * view-consistency loss (0.1, x10 after 25/50/75)."""

    model_kind = "ciiv"

    def __init__(self, w_ce: float, w_reg: RegWeightSchedule, consistency: str) -> None:
        self.w_ce, self.w_reg, self.consistency = w_ce, w_reg, consistency

    @classmethod
    def from_config(cls, config: MethodConfig) -> CiiV:
        schedule = RegWeightSchedule(
            config.w_reg, config.w_reg_factor, tuple(config.w_reg_milestones)
        )
        return cls(config.w_ce, schedule, config.consistency)

    def epoch_values(self, epoch: int) -> dict[str, float]:
        return {"w_reg": self.w_reg(epoch)}

    def ciiv_loss(
        self, model: nn.Module, x: Tensor, labels: Tensor | MixupBatch, epoch: int
    ) -> StepOutput:
        """The CiiV loss on x; ``labels`` is y [B], or a MixupBatch for the mixup CE per view."""
        out = model.forward_views(x)
        if isinstance(labels, Tensor):
            ce = view_cross_entropy(out.logits, labels)
            targets = None
        else:
            ce = labels.loss(lambda y: view_cross_entropy(out.logits, y))
            targets = labels.dominant
        reg = consistency_loss(out.features, out.z, self.consistency)
        loss = self.w_ce * ce + self.w_reg(epoch) * reg
        logits = CiiVClassifier.combine(out.logits, out.z)
        metrics = {"ce": ce.detach(), "reg": reg.detach()}
        return StepOutput(loss, logits, targets=targets, metrics=metrics)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        return self.ciiv_loss(model, x, y, ctx.epoch)


@register_method("ciiv_at")
class CiiVAdversarial(CiiV):
    """CiiV loss on PGD examples crafted against the CiiV model itself (all views, fresh
    randomness per step; ``method.pgd.bpda`` / ``eot`` select BPDA and EOT gradients)."""

    def __init__(
        self, w_ce: float, w_reg: RegWeightSchedule, consistency: str, pgd: PGDConfig
    ) -> None:
        super().__init__(w_ce, w_reg, consistency)
        self.pgd = pgd

    @classmethod
    def from_config(cls, config: MethodConfig) -> CiiVAdversarial:
        base = CiiV.from_config(config)
        return cls(base.w_ce, base.w_reg, base.consistency, config.pgd)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        return self.ciiv_loss(model, craft_pgd(model, x, y, self.pgd), y, ctx.epoch)


@register_method("ciiv_mixup")
class CiiVMixup(CiiV):
    """CiiV with mixup: mixup cross-entropy of every view (alpha = 1) + w_reg * L_reg."""

    def __init__(self, w_ce: float, w_reg: RegWeightSchedule, consistency: str, alpha: float):
        super().__init__(w_ce, w_reg, consistency)
        self.alpha = alpha

    @classmethod
    def from_config(cls, config: MethodConfig) -> CiiVMixup:
        base = CiiV.from_config(config)
        return cls(base.w_ce, base.w_reg, base.consistency, config.mixup_alpha)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        batch = mix(x, y, self.alpha)
        return self.ciiv_loss(model, batch.x, batch, ctx.epoch)
