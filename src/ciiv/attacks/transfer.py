"""Black-box transfer: adversarial examples crafted on a surrogate model, evaluated on the target.

    attack = create_attack("transfer", target_model, surrogate=surrogate_model, base="pgd", eps=...)

Any registered attack can be the base; it runs entirely on the surrogate with its own
hyper-parameters. The target model is never queried, so ``forward_passes`` counts the images sent
through the *surrogate* (the cost of crafting), and the target's train/eval flags are not touched.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .base import Attack
from .registry import create_attack, register_attack

__all__ = ["Transfer"]


@register_attack("transfer")
class Transfer(Attack):
    """Run the registered attack ``base`` (not "transfer") with ``**base_hyper`` (eps, steps,
    seed, ...) on ``surrogate`` and return its x_adv for the target ``model`` (never queried)."""

    def __init__(
        self, model: nn.Module, *, surrogate: nn.Module, base: str = "pgd", **base_hyper: Any
    ) -> None:
        if base == "transfer":
            raise ValueError(
                "the base of a transfer attack must be a direct attack, not 'transfer'"
            )
        if not isinstance(surrogate, nn.Module):
            raise ValueError(f"surrogate must be an nn.Module, got {type(surrogate).__name__}")
        self.base = create_attack(base, surrogate, **base_hyper)
        super().__init__(model, seed=self.base.seed, eval_mode=None)
        self.threat = self.base.threat
        self.surrogate = surrogate
        self._record(base=base, surrogate=type(surrogate).__name__, **self.base.settings())

    def _attack(self, x: Tensor, y: Tensor) -> Tensor:
        x_adv = self.base(x, y)
        self.forward_passes = self.base.forward_passes
        return x_adv
