"""The one gradient loop: FGSM, PGD (Linf / L2), EOT-PGD, BPDA-PGD, adaptive and targeted PGD.

Every variant is the same loop with options (MadryLab's design): the threat model supplies the
random start, the step and the projection; the loop supplies the objective, its EOT gradient and
the per-example bookkeeping.

Objective J (maximised, one value per example):
    loss="ce"        untargeted: CE(model(x), y);               targeted: -CE(model(x), t)
    loss="margin"    untargeted: max_{j != y} Z_j - Z_y;         targeted: Z_t - max_{j != t} Z_j
    loss="adaptive"  untargeted: CE_views(y) + w * consistency;  targeted: -CE_views(t) + w * cons.
    loss="kl"        KL(p(x_clean) || p(x)), untargeted only (TRADES' inner maximisation)
where Z are the logits (Carlini and Wagner's margin, which never saturates), CE_views is
``ciiv.loss.view_cross_entropy`` of the per-view logits (reduction "none") and consistency is
CiiV's view-consistency loss per example: maximising it breaks the agreement between views that
CiiV trains for. "adaptive" needs a model with views (:class:`~ciiv.models.MultiView`). For
"kl", p(x_clean) is the model's softmax on the clean batch (one no-grad pass, mean logits over
the E draws), and an iterate succeeds when its prediction differs from the clean one.

EOT: the gradient is the mean of the gradients of J over E random forward passes. The batch is
repeated E times along dim 0 (row e * B + i is draw e of example i) and sent in calls of at most
``max_batch`` images, the E draws stacked into one call only where the model's rows are
independent draws (:mod:`ciiv.attacks.draws`), else one call per draw.

BPDA: with ``bpda="identity" | "smooth"`` the whole attack runs inside ``model.bpda(...)``: the
forward value is unchanged, the spike step's backward is replaced, and the masks are constants
(they never depend on x). It combines with EOT and with either loss.

Best iterate: every visited iterate (start, after each step, final; every restart) is scored per
example by (success rate, J), lexicographically: the fraction of the E draws in which the attack
succeeded (prediction != y, or == target when targeted), then the EOT mean of J. With E = 1 and a
deterministic model: misclassified iterates win, ties go to the higher loss; for a random model
the rate estimates the probability that a prediction is fooled. The scores come with the gradient
evaluations; only each restart's final point costs E extra (no-grad) images. ``keep_best=False``
returns the last iterate (classic FGSM), choosing between restarts by the same score. No host
sync per step (``BestIterate``; docs/evaluation.md, "Speed"). Restart r > 0 attacks only the
examples whose best success rate is still below 1.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ciiv._checks import check_choice
from ciiv.loss import consistency_loss, view_cross_entropy
from ciiv.models.views import MultiView
from ciiv.sampling import BPDA_SURROGATES

from .base import (
    Attack,
    BestIterate,
    bpda_context,
    check_batch,
    inputs_checked_once,
    positive_int,
    preserve_mode,
)
from .draws import draw_layout
from .objectives import TARGET_MODES, choose_targets, margin
from .registry import register_attack
from .threat import parse_eps

__all__ = ["FGSM", "PGD", "GradientEstimate"]

LOSSES: tuple[str, ...] = ("ce", "margin", "adaptive", "kl")
# Precision of the attack's model calls: "bf16" runs them under bfloat16 autocast (opt-in, see
# docs/evaluation.md); objectives, gradients w.r.t. x and iterates stay in float32.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


@dataclass
class GradientEstimate:
    """EOT estimates at a batch of points: grad [B, C, H, W] (None without gradient), value [B]
    (mean objective J), success [B] (fraction of draws in which the attack succeeded, in [0, 1]).
    Per draw (``loss_gradient(..., per_draw=True)``): grad [E, B, C, H, W], value, success [E, B].
    """

    grad: Tensor | None
    value: Tensor
    success: Tensor


@register_attack("pgd")
class PGD(Attack):
    """Projected gradient ascent on a per-example objective (Madry et al. 2018), with options.

    Args (besides :class:`~ciiv.attacks.base.Attack`'s):
        norm: "Linf" or "L2".
        eps: budget in pixel units (float or "8/255"); None = 8/255 (Linf) or 128/255 (L2).
        step_size: step length in the norm (pixel units); None = eps / 4 (2/255 for 8/255).
        steps: gradient steps per restart.
        random_start: start every restart from a uniform draw in the ball (never a coin flip).
        restarts: independent restarts; the per-example best is kept (module doc).
        eot: E, random forward passes averaged per gradient (1 = plain gradient).
        bpda: None, "identity" or "smooth": BPDA backward of CiiV's spike step (``model.bpda``).
        loss: "ce", "margin" (C&W margin on the logits), "adaptive" (CiiV: per-view CE +
            adaptive_weight * view consistency) or "kl" (KL divergence from the clean prediction,
            TRADES; untargeted).
        adaptive_weight: weight of the consistency term for loss="adaptive".
        targeted: None, "random", "most_likely" or "least_likely" (minimise CE to the target).
        keep_best: return the best visited iterate per example (True) or the last one (False).
        precision: "fp32" (default) or "bf16": the model calls run under bfloat16 autocast
            (faster on a GPU; a low-precision attack can be weaker, so it is opt-in).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "Linf",
        eps: float | str | None = None,
        step_size: float | str | None = None,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        eot: int = 1,
        max_batch: int | None = None,
        bpda: Literal["identity", "smooth"] | None = None,
        loss: Literal["ce", "margin", "adaptive", "kl"] = "ce",
        adaptive_weight: float = 1.0,
        targeted: Literal["random", "most_likely", "least_likely"] | None = None,
        keep_best: bool = True,
        precision: Literal["fp32", "bf16"] = "fp32",
        seed: int | None = None,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, seed=seed, max_batch=max_batch, eval_mode=eval_mode)
        self._set_threat(norm, eps)
        self.step_size = self.eps / 4 if step_size is None else parse_eps(step_size)
        self.steps = positive_int("steps", steps)
        self.restarts = positive_int("restarts", restarts)
        self.eot = positive_int("eot", eot)
        check_choice("bpda", bpda, BPDA_SURROGATES, optional=True)
        check_choice("loss", loss, LOSSES)
        check_choice("targeted", targeted, TARGET_MODES, optional=True)
        check_choice("precision", precision, PRECISIONS)
        if loss == "adaptive" and not isinstance(model, MultiView):
            raise ValueError(
                "loss='adaptive' needs a model with views (ciiv.models.MultiView: forward_views, "
                f"combine, num_views, bpda); {type(model).__name__} has none: use loss='ce'"
            )
        if loss == "kl" and targeted is not None:
            raise ValueError("loss='kl' is untargeted (it moves away from the clean prediction)")
        self.random_start = bool(random_start)
        self.bpda = bpda
        self.loss = loss
        self.adaptive_weight = float(adaptive_weight)
        self.targeted = targeted
        self.keep_best = bool(keep_best)
        self.precision = precision
        self._record(
            step_size=self.step_size, steps=self.steps, random_start=self.random_start,
            restarts=self.restarts, eot=self.eot, max_batch=self.max_batch, bpda=bpda, loss=loss,
            adaptive_weight=self.adaptive_weight, targeted=targeted, keep_best=self.keep_best,
            precision=precision,
        )  # fmt: skip

    # -- objective and its EOT gradient ------------------------------------------------------

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def _objective(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """J [N] and success [N] (bool) for one forward draw of the rows x [N, C, H, W].

        ``labels``: classes [N], or for loss="kl" the clean log-probabilities [N, K]."""
        with self._autocast(x.device):
            out = self.views(x) if self.loss == "adaptive" else self.logits(x)
        if self.loss == "adaptive":
            view_logits, features = out.logits.float(), out.features.float()
            logits = self.model.combine(view_logits, out.z)
            ce = view_cross_entropy(view_logits, labels, reduction="none")
            cons = consistency_loss(features, out.z, reduction="none")
            value = (-ce if self.targeted else ce) + self.adaptive_weight * cons
        elif self.loss == "kl":
            logits = out.float()
            value = F.kl_div(logits.log_softmax(1), labels, reduction="none", log_target=True)
            value = value.sum(1)
            labels = labels.argmax(1)  # success: the prediction leaves the clean one
        else:
            logits = out.float()  # a no-op in float32
            if self.loss == "margin":
                value = margin(logits, labels)
            else:
                value = F.cross_entropy(logits, labels, reduction="none")
            value = -value if self.targeted else value
        pred = logits.detach().argmax(1)
        success = pred == labels if self.targeted else pred != labels
        return value, success

    def _estimate(
        self, x: Tensor, labels: Tensor, with_grad: bool, per_draw: bool = False
    ) -> GradientEstimate:
        """EOT estimate over ``self.eot`` draws at x [B, C, H, W] (see the module doc); with
        ``per_draw`` the E draws themselves instead of their mean."""
        batch, draws = x.shape[0], self.eot
        rows = x.detach().repeat(draws, 1, 1, 1) if draws > 1 else x.detach()
        row_labels = labels.repeat(draws, *([1] * (labels.dim() - 1)))
        values, successes, grads = [], [], []
        calls, draws_ctx = draw_layout(self.model, batch, self.eot, self.max_batch)
        with draws_ctx:
            for call in calls:
                part, part_labels = rows[call], row_labels[call]
                if with_grad:
                    part = part.clone().requires_grad_(True)
                    with torch.enable_grad():
                        value, success = self._objective(part, part_labels)
                        (grad,) = torch.autograd.grad(value.sum(), part)
                    grads.append(grad)
                else:
                    with torch.no_grad():
                        value, success = self._objective(part, part_labels)
                values.append(value.detach())
                successes.append(success)
        value = torch.cat(values).view(draws, batch)
        rate = torch.cat(successes).to(value.dtype).view(draws, batch)
        grad = torch.cat(grads).view(draws, *x.shape) if with_grad else None
        if per_draw:
            return GradientEstimate(grad=grad, value=value, success=rate)
        mean = None if grad is None else grad.mean(0)
        return GradientEstimate(grad=mean, value=value.mean(0), success=rate.mean(0))

    def loss_gradient(self, x: Tensor, labels: Tensor, per_draw: bool = False) -> GradientEstimate:
        """The attack's EOT objective and gradient at x (BPDA, loss and eot as configured); with
        ``per_draw`` each of the E draws (the audit's gradient measurements), else their mean.

        ``labels`` are true labels for an untargeted attack and target classes for a targeted
        one. For audits ("gradients are finite and non-zero") and tests; counted in
        ``forward_passes``; the model's modes are restored.
        """
        if self.loss == "kl":
            raise ValueError("loss='kl' is measured from the clean batch of an attack(x, y) call")
        x, labels = check_batch(x, labels)
        with (
            preserve_mode(self.model, self.eval_mode),
            inputs_checked_once(self.model),
            bpda_context(self.model, self.bpda),
        ):
            return self._estimate(x, labels, with_grad=True, per_draw=per_draw)

    def _clean_logits(self, x: Tensor) -> Tensor:
        """The clean logits [B, K] averaged over E draws (laid out in calls as the EOT draws):
        what targets are chosen from, and loss="kl" moves away from."""
        rows = x.repeat(self.eot, 1, 1, 1)
        calls, draws_ctx = draw_layout(self.model, x.shape[0], self.eot, self.max_batch)
        with draws_ctx, self._autocast(x.device), torch.no_grad():
            logits = torch.cat([self.logits(rows[call]) for call in calls])
        return logits.float().view(self.eot, x.shape[0], -1).mean(0)

    # -- the loop ------------------------------------------------------------------------------

    def _attack(self, x: Tensor, y: Tensor) -> Tensor:
        threat, generator = self.threat, self.generator(x.device)
        with bpda_context(self.model, self.bpda):
            if self.loss == "kl":
                labels = self._clean_logits(x).log_softmax(1)
            elif self.targeted:
                labels = choose_targets(self._clean_logits(x), y, self.targeted, generator)
            else:
                labels = y
            best = BestIterate(x)  # scored by (success rate, J)

            # The first restart attacks every example (a slice: no index tensor, no gather).
            idx: slice | Tensor = slice(None)
            for restart in range(self.restarts):
                if restart:
                    # The one host sync of a restart: which examples are still standing.
                    idx = torch.nonzero(best.primary < 1).flatten()
                    if idx.numel() == 0:
                        break
                x0, target = x[idx], labels[idx]
                x_adv = threat.random_init(x0, generator) if self.random_start else x0.clone()
                for step in range(self.steps):
                    est = self._estimate(x_adv, target, with_grad=True)
                    if self.keep_best:
                        best.update(x_adv, est.success, est.value, idx)
                    x_adv = threat.project(threat.step(x_adv, est.grad, self.step_size), x0)
                    self._step_done(restart * self.steps + step + 1, self.restarts * self.steps)
                if self.keep_best or self.restarts > 1:
                    est = self._estimate(x_adv, target, with_grad=False)
                    best.update(x_adv, est.success, est.value, idx)
                else:
                    best.x[idx] = x_adv
        return best.x


@register_attack("fgsm")
class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of length eps from x.

    Linf: x + eps * sign(grad); L2: x + eps * grad / ||grad||; then clamped to [0, 1]. The same
    loop as PGD with steps=1, step_size=eps, no random start, one restart and the last iterate, so
    EOT, BPDA, the adaptive loss and targeted modes work the same way.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "Linf",
        eps: float | str | None = None,
        eot: int = 1,
        max_batch: int | None = None,
        bpda: Literal["identity", "smooth"] | None = None,
        loss: Literal["ce", "margin", "adaptive"] = "ce",
        adaptive_weight: float = 1.0,
        targeted: Literal["random", "most_likely", "least_likely"] | None = None,
        precision: Literal["fp32", "bf16"] = "fp32",
        seed: int | None = None,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(
            model, norm=norm, eps=eps, steps=1, random_start=False, restarts=1,
            eot=eot, max_batch=max_batch, bpda=bpda, loss=loss, adaptive_weight=adaptive_weight,
            targeted=targeted, keep_best=False, precision=precision, seed=seed,
            eval_mode=eval_mode,
        )  # fmt: skip
        self.step_size = self.eps
        # settings() lists only FGSM's own hyper-parameters (the fixed ones are implied).
        for fixed in ("step_size", "steps", "random_start", "restarts", "keep_best"):
            del self._hyper[fixed]
