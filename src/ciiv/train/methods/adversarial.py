"""Adversarial training: PGD (Madry et al. 2018) and TRADES (Zhang et al. 2019).

Examples are crafted with the shared PGD of :mod:`ciiv.attacks` in eval mode (BatchNorm's running
statistics, not updated); the training pass that follows runs in train mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from ciiv.attacks import create_attack
from ciiv.attacks.threat import check_eps

from .base import Objective, StepContext, StepOutput, check_bounds, register_method

__all__ = ["AdversarialOptions", "PGDOptions", "PGDTraining", "Trades", "craft_pgd", "trades_kl"]


@dataclass(frozen=True)
class PGDOptions:
    """The inner maximisation of adversarial training (``method.pgd``): ``eps`` and ``step_size``
    in [0, 1] pixel units (``8/255`` accepted); ``bpda``/``eot`` only matter for a random (CiiV)
    model. An L2 ``eps`` is checked against the image size once the data are loaded."""

    norm: Literal["Linf", "L2"] = "Linf"
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    bpda: Literal["identity", "smooth"] | None = None
    eot: int = 1

    def __post_init__(self) -> None:
        try:
            check_eps(self.norm, self.eps)
        except ValueError as exc:
            raise ValueError(f"eps: {exc}") from None
        check_bounds(self, step_size="> 0", steps=">= 1", eot=">= 1")


@dataclass(frozen=True)
class AdversarialOptions:
    """Options of a method that trains on PGD examples."""

    pgd: PGDOptions = field(default_factory=PGDOptions)


def craft_pgd(model: nn.Module, x: Tensor, y: Tensor, pgd: PGDOptions, loss: str = "ce") -> Tensor:
    """PGD examples against ``model`` maximising ``loss`` ("ce"; "kl" for TRADES): detached, in
    [0, 1], inside the ball; uniform random start, the last iterate (Madry et al.; the best one
    would cost a forward pass per step), drawn from torch's global generator."""
    # The options are the attack's hyper-parameters of the same names.
    options = dataclasses.asdict(pgd)
    attack = create_attack("pgd", model, **options, random_start=True, loss=loss, keep_best=False)
    return attack(x, y)


@register_method("pgd_at")
class PGDTraining(Objective):
    """Madry et al.: cross-entropy on PGD examples only (Linf 8/255, step 2/255, 10 steps)."""

    Options = AdversarialOptions

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        logits = model(craft_pgd(model, x, y, self.options.pgd))
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
    """TRADES: CE(f(x), y) + beta * KL(p(x) || p(x_adv)), beta = 6. x_adv maximises the KL term
    against the eval-mode model's clean prediction; clean and adversarial images then go through
    the train-mode model in separate passes."""

    @dataclass(frozen=True)
    class Options(AdversarialOptions):
        """``beta``: weight of the KL term (6)."""

        beta: float = 6.0

        def __post_init__(self) -> None:
            check_bounds(self, beta=">= 0")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        x_adv = craft_pgd(model, x, y, self.options.pgd, loss="kl")
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        kl = trades_kl(logits, model(x_adv))
        metrics = {"ce": ce.detach(), "kl": kl.detach()}
        return StepOutput(ce + self.options.beta * kl, logits, metrics=metrics)
