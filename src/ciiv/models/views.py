"""What attacks and the evaluation may rely on in a model, stated once, and the paper's surrogate.

The interfaces are structural (``typing.Protocol``): a model offers them by having the members,
and ``isinstance(model, MultiView)`` (or :class:`SupportsBPDA`, :class:`SupportsIndependentDraws`)
is the one test code uses in place of probing attributes. :class:`CentreView` is the function the
authors' evaluation attacks: the model with its centre view only (view 0 of the sampler).
"""

from __future__ import annotations

import contextlib
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .classifier import ViewOutput

__all__ = [
    "CentreView",
    "MultiView",
    "SupportsBPDA",
    "SupportsIndependentDraws",
    "declared_rows",
    "independent_draws",
]


@runtime_checkable
class SupportsBPDA(Protocol):
    """A model with a BPDA backward: inside ``with model.bpda(surrogate):`` (one of
    :data:`~ciiv.sampling.BPDA_SURROGATES`) a non-differentiable layer back-propagates through
    the substitute; the forward value is unchanged."""

    def bpda(self, surrogate: str) -> contextlib.AbstractContextManager: ...


@runtime_checkable
class SupportsIndependentDraws(Protocol):
    """A model that can make every row of a call draw its own randomness (for stacked draws)."""

    def independent_draws(self) -> contextlib.AbstractContextManager: ...


def independent_draws(model: nn.Module) -> contextlib.AbstractContextManager:
    """``model.independent_draws()`` when the model offers it (rows of a call then draw
    independently, e.g. CiiV's per-example masks), else a no-op context: the one entry point
    that calls it (re-exported as ``ciiv.attacks.independent_draws``)."""
    if isinstance(model, SupportsIndependentDraws):
        return model.independent_draws()
    return contextlib.nullcontext()


def declared_rows(model: nn.Module) -> bool | None:
    """What ``model`` declares: its ``independent_rows`` (True/False), True for a model that
    declares ``stochastic = False`` (equal copies need no independence), else None."""
    declared = getattr(model, "independent_rows", None)
    if declared is not None:
        return bool(declared)
    return True if getattr(model, "stochastic", None) is False else None


@runtime_checkable
class MultiView(SupportsBPDA, Protocol):
    """A model with views, like :class:`~ciiv.models.CiiVClassifier`: BPDA, ``num_views`` (the
    views ``forward`` uses), ``forward_views`` (a :class:`~ciiv.models.ViewOutput`: logits
    [L, B, K], features [L, B, D], z [L] or [L, B]) and ``combine(logits, z)``, with
    ``model(x) == model.combine(out.logits, out.z)`` for one draw ``out = model.forward_views(x)``.
    The adaptive loss, the BPDA suite entries and the paper protocol need it."""

    num_views: int

    def forward_views(
        self, x: Tensor, num_views: int | None = None, generator: torch.Generator | None = None
    ) -> ViewOutput: ...

    def combine(self, logits: Tensor, z: Tensor) -> Tensor: ...


class CentreView(nn.Module):
    """A :class:`MultiView` ``model`` seen through its centre view only: the surrogate the
    paper's protocol attacks.

    ``forward(x)`` is ``model.combine`` of ``model.forward_views(x, num_views=1)`` (logits_0 / z_0
    for CiiV), with fresh randomness on every call. It shares the model's parameters and modes and
    never changes the model, so accuracy can be counted on the model with all its views while
    attacks query this wrapper. BPDA, independent draws and the model's declarations
    (``stochastic``, ``independent_rows``) pass through.
    """

    num_views = 1

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, MultiView):
            raise TypeError(
                f"CentreView needs a model with views (num_views, forward_views, combine, bpda: "
                f"ciiv.models.MultiView); {type(model).__name__} has none"
            )
        self.model = model

    @property
    def stochastic(self) -> bool | None:
        return getattr(self.model, "stochastic", None)

    @property
    def independent_rows(self) -> bool | None:
        return getattr(self.model, "independent_rows", None)

    def forward_views(
        self, x: Tensor, num_views: int | None = None, generator: torch.Generator | None = None
    ) -> ViewOutput:
        """The centre view's outputs (L = 1); ``num_views`` may only be None or 1."""
        if num_views not in (None, 1):
            raise ValueError(f"CentreView has one view, got num_views={num_views}")
        return self.model.forward_views(x, 1, generator)

    def combine(self, logits: Tensor, z: Tensor) -> Tensor:
        return self.model.combine(logits, z)

    def forward(self, x: Tensor) -> Tensor:
        out = self.forward_views(x)
        return self.combine(out.logits, out.z)

    def bpda(self, surrogate: str) -> contextlib.AbstractContextManager:
        return self.model.bpda(surrogate)

    def independent_draws(self) -> contextlib.AbstractContextManager:
        return independent_draws(self.model)
