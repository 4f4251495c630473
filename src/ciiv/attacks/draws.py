"""How the random draws of a model are laid out in calls: stacked in one call, or one call each.

Stacking E copies of an image into one batch (row d * B + i is draw d of example i) gives E
draws only when every row of a call draws its own randomness; many defences draw once per call
(the official CiiV sampler does). A model may declare ``independent_rows`` and offer
``independent_draws()``; one that declares neither is measured by the spread test
(:func:`measure_rows`) and the verdict passed down with :func:`assume_rows`. Until then, and
whenever the verdict is "shared", every call holds one draw of each example (:func:`draw_calls`).
The rules and the statistic: docs/evaluation.md, "Random models".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ciiv.models.views import declared_rows, independent_draws

__all__ = [
    "RowVerdict",
    "assume_rows",
    "declared_rows",
    "draw_calls",
    "draw_layout",
    "independent_draws",
    "known_rows",
    "measure_rows",
    "row_verdict",
    "rows_independent",
]

Source = Literal["declared", "deterministic", "measured", "unknown"]

# Two forward passes of a deterministic model can differ by float noise (non-deterministic GPU
# kernels); only differences above this fraction of the logit scale count as randomness.
RANDOM_RTOL = 1e-4


@dataclass(frozen=True)
class RowVerdict:
    """Whether copies of an image stacked into one model call are independent draws.

    Attributes:
        independent: the verdict; False means one call per draw.
        source: "declared" (``model.independent_rows`` or ``stochastic = False``),
            "deterministic" (measured: the same input gives the same logits), "measured" (the
            spread test) or "unknown" (not measured: treated as shared).
        spread_ratio: the spread test's median over examples of within-call / across-call
            variance (about 1 for independent rows, near 0 for shared ones); None unless measured.
        p_value: permutation p-value of a ratio that small under independent rows.
        examples, copies, calls: the measurement's size.
        forward_passes: images the measurement sent through the model.
    """

    independent: bool
    source: Source
    spread_ratio: float | None = None
    p_value: float | None = None
    examples: int = 0
    copies: int = 0
    calls: int = 0
    forward_passes: int = 0

    @property
    def layout(self) -> str:
        """How draws go through the model: "stacked" or "one call per draw"."""
        return "stacked" if self.independent else "one call per draw"

    def describe(self) -> str:
        """One line for tables and logs."""
        if self.source == "measured":
            kind = "independent" if self.independent else "shared by the batch"
            return (
                f"draws {kind} (spread ratio {self.spread_ratio:.2f}, p = {self.p_value:.3g}): "
                f"{self.layout}"
            )
        kind = "independent per row" if self.independent else "not known to be independent"
        return f"draws {kind} ({self.source}): {self.layout}"

    def to_dict(self) -> dict[str, Any]:
        out = {"independent": self.independent, "layout": self.layout, **asdict(self)}
        for key in ("spread_ratio", "p_value"):
            out[key] = None if out[key] is None else round(out[key], 4)
        return out


_ASSUMED: ContextVar[tuple[nn.Module, RowVerdict] | None] = ContextVar(
    "ciiv_assumed_rows", default=None
)


def known_rows(model: nn.Module) -> RowVerdict | None:
    """The verdict for ``model`` without measuring: declared, or assumed by an enclosing
    :func:`assume_rows` for this very model; None when nothing is known."""
    declared = declared_rows(model)
    if declared is not None:
        return RowVerdict(independent=declared, source="declared")
    assumed = _ASSUMED.get()
    if assumed is not None and assumed[0] is model:
        return assumed[1]
    return None


def rows_independent(model: nn.Module) -> bool:
    """Whether draws of ``model`` may be stacked into one call (:func:`known_rows`); False when
    nothing is known, so an unknown model gets one call per draw."""
    known = known_rows(model)
    return known is not None and known.independent


@contextlib.contextmanager
def assume_rows(model: nn.Module, verdict: RowVerdict) -> Iterator[RowVerdict]:
    """Inside the block, :func:`rows_independent` answers ``verdict`` for ``model`` (unless the
    model declares its own). The evaluation measures once and runs its batches inside this."""
    token = _ASSUMED.set((model, verdict))
    try:
        yield verdict
    finally:
        _ASSUMED.reset(token)


def draw_calls(batch: int, draws: int, max_batch: int | None, independent: bool) -> list[slice]:
    """Row ranges of ``draws`` stacked copies of a batch (row d * batch + i is draw d of example
    i), one per model call, each of at most ``max_batch`` rows (None: no limit).

    With ``independent`` the ranges run over all rows; otherwise no range holds two draws of the
    same example (one call per draw; other examples share the call).
    """
    if independent or draws == 1:
        total = batch * draws
        chunk = max_batch or total
        return [slice(s, min(s + chunk, total)) for s in range(0, total, chunk)]
    chunk = max_batch or batch
    return [
        slice(d * batch + s, d * batch + min(s + chunk, batch))
        for d in range(draws)
        for s in range(0, batch, chunk)
    ]


def draw_layout(
    model: nn.Module, batch: int, draws: int, max_batch: int | None
) -> tuple[list[slice], contextlib.AbstractContextManager]:
    """The calls of ``draws`` stacked copies of a batch through ``model`` (:func:`draw_calls`:
    stacked only where :func:`rows_independent`) and the context they run in
    (:func:`independent_draws` when stacked, else a no-op): the one layout of an attack's EOT
    draws and the evaluation's prediction draws."""
    stacked = draws > 1 and rows_independent(model)
    context = independent_draws(model) if stacked else contextlib.nullcontext()
    return draw_calls(batch, draws, max_batch, stacked), context


def _spread_ratio(distances: Tensor, within: Tensor, across: Tensor) -> Tensor:
    """Median over examples of W / A from the squared logit distances [..., n, R, R] of each
    example's R rows; ``within`` / ``across`` [R, R] mark pairs in one call / of one copy slot in
    two calls (a variance is half the mean squared distance of its pairs; NaN ratios dropped)."""
    w = (distances * within).sum((-2, -1)) / within.sum()
    a = (distances * across).sum((-2, -1)) / across.sum()
    return (w / a).nanmedian(-1).values


@torch.no_grad()
def measure_rows(
    model: nn.Module,
    x: Tensor,
    *,
    copies: int = 4,
    calls: int = 4,
    alpha: float = 0.01,
    permutations: int = 999,
    seed: int = 0,
) -> RowVerdict:
    """The spread test on x [n, C, H, W] in [0, 1] (n = 8 is plenty): ``calls`` calls, each of
    ``copies`` copies of x, inside :func:`independent_draws`. Per example, W = the variance of
    its logits across the copies inside a call, A = across calls; the statistic is the median
    over examples of W / A (about 1 for independent rows, near 0 for rows that share a draw). Its
    p-value is exact: ``permutations`` seeded reassignments of each example's rows to (call,
    copy) slots. Shared when the p-value is below ``alpha``. The model's randomness comes from
    wherever it draws it: seed the generators around the call for a reproducible verdict.
    """
    if copies < 2 or calls < 2:
        raise ValueError(f"the spread test needs copies >= 2 and calls >= 2, got {copies}, {calls}")
    n, rows = x.shape[0], calls * copies
    stacked = x.detach().repeat(copies, 1, 1, 1)
    with independent_draws(model):
        out = torch.stack([model(stacked) for _ in range(calls)])
    logits = out.detach().double().cpu().view(rows, n, -1)  # row r = call r // copies
    size = {"examples": n, "copies": copies, "calls": calls, "forward_passes": rows * n}
    scale = logits.abs().amax().item()
    if (logits - logits[:1]).abs().amax().item() <= RANDOM_RTOL * (1.0 + scale):
        return RowVerdict(independent=True, source="deterministic", **size)
    per_example = logits.transpose(0, 1)  # [n, R, K]
    distances = torch.cdist(per_example, per_example).square()  # [n, R, R]
    call, slot = torch.arange(rows) // copies, torch.arange(rows) % copies
    same_call, same_slot = call[:, None] == call[None], slot[:, None] == slot[None]
    within = (same_call & ~same_slot).double()
    across = (same_slot & ~same_call).double()
    observed = _spread_ratio(distances, within, across).item()
    if observed != observed:  # NaN: no example varies across calls, only within them
        return RowVerdict(independent=True, source="measured", spread_ratio=float("inf"),
                          p_value=1.0, **size)  # fmt: skip
    # Per example, a random reassignment of its R rows to the (call, copy) slots.
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.rand(permutations, n, rows, generator=generator).argsort(-1)  # [P, n, R]
    example = torch.arange(n)[None, :, None, None]
    null = _spread_ratio(distances[example, order[..., :, None], order[..., None, :]], within,
                         across)  # fmt: skip
    p_value = (1 + (null <= observed).sum().item()) / (permutations + 1)
    return RowVerdict(
        independent=p_value >= alpha,
        source="measured",
        spread_ratio=observed,
        p_value=p_value,
        **size,
    )


def row_verdict(
    model: nn.Module, x: Tensor, *, stochastic: bool | None = None, seed: int = 0
) -> RowVerdict:
    """The verdict for ``model``: known (:func:`known_rows`), else trivially independent for a
    deterministic model (``stochastic=False``), else the spread test on the first 8 images of x.

    Draws from torch's global generators when it measures: seed them around the call.
    """
    known = known_rows(model)
    if known is not None:
        return known
    if stochastic is False:
        return RowVerdict(independent=True, source="deterministic")
    return measure_rows(model, x[:8], seed=seed)
