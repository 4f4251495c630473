"""CiiV's objective (SPEC section 4) and its two variants: with PGD examples and with mixup.

loss = w_ce * (1/L) sum_l CE(logits_l, y) + w_reg(epoch) * L_reg(phi, z), computed from one
``forward_views`` pass of the CiiV model (all L views folded into the batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from ciiv.loss import ConsistencyKind, RegWeightSchedule, consistency_loss, view_cross_entropy
from ciiv.models import CiiVClassifier

from .adversarial import PGDOptions, craft_pgd
from .base import Objective, StepContext, StepOutput, check_bounds, register_method
from .standard import MixupBatch, MixupOptions, mix

__all__ = ["CiiV", "CiiVAdversarial", "CiiVMixup"]


@register_method("ciiv")
class CiiV(Objective):
    """w_ce * per-view CE + w_reg(epoch) * view-consistency loss (0.1, x10 after 25/50/75)."""

    model_kind = "ciiv"

    @dataclass(frozen=True)
    class Options:
        """CiiV's loss weights (SPEC section 4): w_reg is multiplied by ``w_reg_factor`` after
        each milestone epoch."""

        w_ce: float = 1.0
        w_reg: float = 0.1
        w_reg_factor: float = 10.0
        w_reg_milestones: list[int] = field(default_factory=lambda: [25, 50, 75])
        consistency: ConsistencyKind = "smooth_l1"

        def __post_init__(self) -> None:
            check_bounds(
                self,
                w_ce=">= 0",
                w_reg=">= 0",
                w_reg_factor="> 0",
                w_reg_milestones="increasing epochs >= 0",
            )

    def __init__(self, options: Options | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.w_reg = RegWeightSchedule(o.w_reg, o.w_reg_factor, tuple(o.w_reg_milestones))

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
        reg = consistency_loss(out.features, out.z, self.options.consistency)
        loss = self.options.w_ce * ce + self.w_reg(epoch) * reg
        logits = CiiVClassifier.combine(out.logits, out.z)
        metrics = {"ce": ce.detach(), "reg": reg.detach()}
        return StepOutput(loss, logits, targets=targets, metrics=metrics)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        return self.ciiv_loss(model, x, y, ctx.epoch)


@register_method("ciiv_at")
class CiiVAdversarial(CiiV):
    """CiiV loss on PGD examples crafted against the CiiV model itself (all views, fresh
    randomness per step; ``method.pgd.bpda`` / ``eot`` select BPDA and EOT gradients)."""

    @dataclass(frozen=True)
    class Options(CiiV.Options):
        """CiiV's options and ``pgd``, the PGD examples' settings."""

        pgd: PGDOptions = field(default_factory=PGDOptions)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        return self.ciiv_loss(model, craft_pgd(model, x, y, self.options.pgd), y, ctx.epoch)


@register_method("ciiv_mixup")
class CiiVMixup(CiiV):
    """CiiV with mixup: mixup cross-entropy of every view (alpha = 1) + w_reg * L_reg."""

    @dataclass(frozen=True)
    class Options(MixupOptions, CiiV.Options):
        """CiiV's options and mixup's ``alpha``."""

        def __post_init__(self) -> None:
            CiiV.Options.__post_init__(self)
            MixupOptions.__post_init__(self)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        batch = mix(x, y, self.options.alpha)
        return self.ciiv_loss(model, batch.x, batch, ctx.epoch)
