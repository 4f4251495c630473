"""Adversarial training: PGD (Madry et al. 2018) and TRADES (Zhang et al. 2019).

Adversarial examples are crafted with the project's shared PGD (:mod:`ciiv.attacks`) and threat
models (:mod:`ciiv.attacks.threat`), in eval mode: BatchNorm uses its running statistics and the
inner maximisation does not update them. The training pass that follows runs in train mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ciiv.attacks import create_attack, get_threat_model, preserve_mode

from .base import Objective, StepContext, StepOutput, register_method

if TYPE_CHECKING:
    from ciiv.train.config import MethodConfig, PGDConfig

__all__ = ["PGDTraining", "Trades", "craft_pgd", "trades_kl"]


def craft_pgd(model: nn.Module, x: Tensor, y: Tensor, pgd: PGDConfig) -> Tensor:
    """PGD examples against ``model``: detached, in [0, 1], inside the ball.

    ``pgd`` holds norm, eps, step_size, steps, bpda and eot (a :class:`~ciiv.train.PGDConfig`).
    The shared attack runs the model in eval mode and restores its modes; it starts uniformly in
    the ball and returns the last iterate (Madry et al.), not the best one, which would cost an
    extra forward pass per step. Its seed comes from torch's global generator, so a seeded run
    crafts the same examples.
    """
    attack = create_attack(
        "pgd",
        model,
        norm=pgd.norm,
        eps=pgd.eps,
        step_size=pgd.step_size,
        steps=pgd.steps,
        random_start=True,
        eot=pgd.eot,
        bpda=pgd.bpda,
        keep_best=False,
    )
    return attack(x, y)


@register_method("pgd_at")
class PGDTraining(Objective):
    """Madry et al.: cross-entropy on PGD examples only (Linf 8/255, step 2/255, 10 steps)."""

    def __init__(self, pgd: PGDConfig) -> None:
        self.pgd = pgd

    @classmethod
    def from_config(cls, config: MethodConfig) -> PGDTraining:
        return cls(config.pgd)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        logits = model(craft_pgd(model, x, y, self.pgd))
        return StepOutput(F.cross_entropy(logits, y), logits)


def trades_kl(logits_clean: Tensor, logits_adv: Tensor) -> Tensor:
    """KL(p(x) || p(x_adv)) summed over classes and averaged over the batch -> scalar."""
    return F.kl_div(
        logits_adv.log_softmax(1),
        logits_clean.log_softmax(1),
        reduction="batchmean",
        log_target=True,
    )


@register_method("trades")
class Trades(Objective):
    """TRADES: CE(f(x), y) + beta * KL(p(x) || p(x_adv)), beta = 6.

    x_adv maximises the KL term (not the cross-entropy) by projected steps of the shared threat
    model from a uniform random start in the ball, against the clean prediction of the eval-mode
    model. Clean and adversarial images then go through the train-mode model in separate passes.
    """

    def __init__(self, pgd: PGDConfig, beta: float = 6.0) -> None:
        self.pgd, self.beta = pgd, beta

    @classmethod
    def from_config(cls, config: MethodConfig) -> Trades:
        return cls(config.pgd, config.trades_beta)

    def craft(self, model: nn.Module, x: Tensor) -> Tensor:
        """The KL-maximising x_adv [B, C, H, W] in the ball around x, detached (eval mode)."""
        threat = get_threat_model(self.pgd.norm, self.pgd.eps)
        with preserve_mode(model):
            with torch.no_grad():
                target = model(x)
            x_adv = threat.random_init(x)
            for _ in range(self.pgd.steps):
                with torch.enable_grad():  # also under an outer no_grad (e.g. a validation pass)
                    x_adv.requires_grad_(True)
                    (grad,) = torch.autograd.grad(trades_kl(target, model(x_adv)), x_adv)
                x_adv = threat.project(threat.step(x_adv.detach(), grad, self.pgd.step_size), x)
        return x_adv.detach()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        x_adv = self.craft(model, x)
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        kl = trades_kl(logits, model(x_adv))
        metrics = {"ce": ce.detach(), "kl": kl.detach()}
        return StepOutput(ce + self.beta * kl, logits, metrics=metrics)
