"""Evaluation protocols: which function the attacks query (SPEC section 6; docs/evaluation.md).

``full`` (the default) attacks the evaluated function itself; ``paper`` (the authors') attacks its
centre view with one gradient sample per step, a surrogate that shows what the paper's numbers
measure. On a model without views (anything but CiiV) ``paper`` runs as ``full``
(:meth:`Protocol.effective`) and the summary says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ciiv.models.views import CentreView, MultiView

__all__ = ["PROTOCOLS", "Protocol", "get_protocol"]


@dataclass(frozen=True)
class Protocol:
    """How attacks see the model.

    Attributes:
        name: "full" or "paper".
        description: one line for the summary.
        centre_view_only: attacks query :class:`~ciiv.models.CentreView` of a model with views.
        eot_by_default: entries with ``eot="protocol"`` get E (True) or 1 (False).
    """

    name: str
    description: str
    centre_view_only: bool
    eot_by_default: bool

    def effective(self, traits) -> Protocol:
        """The protocol actually run for a model with ``traits``: ``full`` for a model without
        views (the paper protocol has no surrogate to attack there), else this one."""
        return PROTOCOLS["full"] if self.centre_view_only and not traits.views else self

    def attack_views(self) -> str:
        """ "centre" when attacks see the centre view only, else "all"."""
        return "centre" if self.centre_view_only else "all"

    def unsupported(self, entry) -> str | None:
        """Why ``entry`` cannot run under this protocol on this model, or None."""
        if self.centre_view_only and entry.hyper.get("loss") == "adaptive":
            return "the adaptive loss needs several views; the paper protocol attacks one"
        return None

    def attacked(self, model: nn.Module) -> nn.Module:
        """The function this protocol's attacks query: :class:`~ciiv.models.CentreView` of a
        model with views under ``paper``, else the model itself (never changed)."""
        if self.centre_view_only and isinstance(model, MultiView):
            return CentreView(model)
        return model

    def note(self, traits) -> str:
        """What the protocol meant for this model, for the summary."""
        if self.effective(traits) is not self:
            return (
                "the model has no views, so the paper protocol equals the full one (attacks query "
                "the evaluated function, with EOT); the results are those of the full protocol"
            )
        return self.description


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="full",
            description=(
                "attacks query the evaluated function: all views, fresh randomness per query, "
                "EOT over E draws; accuracy over R prediction draws"
            ),
            centre_view_only=False,
            eot_by_default=True,
        ),
        Protocol(
            name="paper",
            description=(
                "the authors' protocol: attacks query the centre view only (CentreView), one "
                "gradient sample per step except EOT-PGD; accuracy counted with all views"
            ),
            centre_view_only=True,
            eot_by_default=False,
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name`` ("full" or "paper")."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
