"""Pieces the audits share: round trips with error accumulation, sample batches, float64 verdicts."""

from __future__ import annotations

import contextlib
import math
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar, cast

import torch
from torch import Tensor

from innaudit.audits.base import AuditContext
from innaudit.core.stats import ErrorAccumulator
from innaudit.linalg import Map
from innaudit.model.contract import InvertibleModel
from innaudit.model.latent import LevelStats
from innaudit.verdict.float64 import EXACT_LIMIT, float64_sentence

T = TypeVar("T")

__all__ = [
    "CHUNK_SHARE",
    "RowChunks",
    "batch_units",
    "block_name",
    "block_names",
    "by_set",
    "full_range_floor",
    "late_rows",
    "level_stats",
    "map_batches",
    "no_autograd",
    "prior_set",
    "progress_counter",
    "recording",
    "round_trip",
    "sample_counts",
    "set_progress",
    "shared_cuts",
    "shared_view",
    "verdict_float64",
]


def prior_set(temperature: float) -> str:
    """The name of the set of prior draws at ``temperature`` (``prior@T=0.7``)."""
    return f"prior@T={temperature:g}"


def round_trip(
    first: Map, second: Map, batches: Iterable[Tensor], floor: float, on_batch: Callable[[int], None] = lambda n: None
) -> ErrorAccumulator:
    """Apply ``second(first(u))`` to every batch and accumulate per-sample errors against ``u``."""
    acc = ErrorAccumulator(floor=floor)
    with torch.no_grad():
        for u in batches:
            middle = first(u)
            acc.add(u, middle, second(middle))
            on_batch(len(u))
    return acc


def verdict_float64(
    f32_bad: float, f64_bad: float, f32_rel: float = 0.0, f64_rel: float = 0.0, limit: float = EXACT_LIMIT
) -> str:
    """A sentence telling precision loss from ill-conditioning from a broken map, from the
    float64 non-finite share and largest relative error (:mod:`innaudit.verdict.float64`); empty
    when float32 already round-trips within ``limit``."""
    if f32_bad == 0 and not f32_rel > limit:
        return ""
    return float64_sentence(f64_bad, f64_rel, limit)


def full_range_floor(numel: int, width: float) -> float:
    """1 % of the norm of a vector spanning the data range in every element.

    The relative error divides by ``max(||x||, floor)``: near the origin (a grid over
    ``[-8, 8]^2`` contains it) ``||x||`` says nothing about the scale the model works at, so
    errors there are measured against 1 % of the range instead of against almost nothing.
    """
    return 1e-2 * math.sqrt(numel) * width


def progress_counter(progress: Callable[[str, int, int], None], name: str, total: int) -> Callable[[int], None]:
    """A callback that adds up processed samples and reports ``(name, done, total)``."""
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        progress(name, done[0], total)

    return step


def sample_counts(ctx: AuditContext) -> list[int]:
    """Samples an audit with a ``samples`` option takes from each set: its first ``samples``,
    capped by ``--samples`` and the set's size (the sizes :func:`batch_units` cuts into batches)."""
    return [min(ctx.option("samples"), ctx.samples, d.size) for d in ctx.datasets]


def batch_units(sizes: Iterable[int], batch_size: int, cuts: Iterable[int] = ()) -> list[tuple[int, int, int]]:
    """``(set index, start, stop)`` of every batch of every set, sets in order, then batches:
    the work units :meth:`AuditContext.map` shares out. The batches are those a single process
    takes (``batch_size`` samples from 0), so each is computed on the same inputs whatever the
    number of ranks; a batch is also ended at each row of ``cuts`` (the rows where the audits
    that share passes end theirs, :func:`shared_cuts`)."""
    step = max(1, batch_size)
    marks = sorted(set(cuts))
    units = []
    for index, size in enumerate(sizes):
        if size <= 0:
            continue
        bounds = sorted({*range(0, size, step), *(c for c in marks if 0 < c < size)})
        units += [(index, start, stop) for start, stop in zip(bounds, [*bounds[1:], size], strict=True)]
    return units


def by_set(units: Sequence[tuple[int, int, int]], parts: Sequence[T], count: int) -> list[list[T]]:
    """The results of :func:`batch_units` work units, grouped by set (``count`` sets), in order;
    a unit a budget left unrun (None, :meth:`~innaudit.audits.base.AuditContext.map`) is left out."""
    grouped: list[list[T]] = [[] for _ in range(count)]
    for (index, _, _), part in zip(units, parts, strict=True):
        if part is not None:
            grouped[index].append(part)
    return grouped


def block_name(index: int, block: InvertibleModel) -> str:
    """``"3:AffineCoupling"``: a block's place in ``blocks()`` and its architecture (or class)."""
    return f"{index}:{block.info.architecture or type(block.module).__name__}"


def block_names(blocks: Sequence[InvertibleModel]) -> list[str]:
    """:func:`block_name` of every block, in order."""
    return [block_name(i, b) for i, b in enumerate(blocks)]


def set_progress(ctx: AuditContext, names: Sequence[str], totals: Sequence[int]) -> Callable[[int, int], None]:
    """A :func:`map_batches` progress callback reporting ``ctx.progress(name, done, total)`` per
    set: ``names[i]`` and ``totals[i]`` are set ``i``'s name and sample count."""
    steps = [progress_counter(ctx.progress, n, t) for n, t in zip(names, totals, strict=True)]
    return lambda index, samples: steps[index](samples)


def map_batches(
    ctx: AuditContext,
    sizes: Sequence[int],
    work: Callable[[tuple[int, int, int]], T],
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    paced: bool = False,
    cuts: Iterable[int] = (),
) -> list[list[T]]:
    """``work`` over every batch of every set, the results grouped by set: the audits' one batch loop.

    ``sizes[i]`` samples of set ``i`` are cut into :func:`batch_units` of ``batch_size``
    (default ``ctx.batch_size``); :meth:`AuditContext.map` runs them (shared out over the ranks
    under ``torchrun``, every result handed to every rank in order) and :func:`by_set` groups
    them. ``progress(set index, samples)``, when given, is called after each batch this
    process runs: the one place a batch's completion is reported. ``paced``: a budgeted run may
    stop the audit early with the batches done (:meth:`AuditContext.map`); only for audits whose
    samples a budget may cut. ``cuts``: rows where a batch also ends (:func:`batch_units`).
    """
    units = batch_units(sizes, ctx.batch_size if batch_size is None else batch_size, cuts)

    def run(unit: tuple[int, int, int]) -> T:
        out = work(unit)
        if progress is not None:
            progress(unit[0], unit[2] - unit[1])
        return out

    return by_set(units, ctx.map(units, run, paced=paced), len(sizes))


def level_stats(model: InvertibleModel) -> LevelStats | None:
    """A per-level accumulator for a model with a multi-scale latent, None for a single tensor."""
    latent = model.latent
    return LevelStats(latent) if latent is not None and not latent.single else None


def recording(forward: Map, levels: LevelStats | None) -> Map:
    """``forward``, also feeding each flat latent batch it returns to ``levels`` (when given)."""
    if levels is None:
        return forward

    def call(u: Tensor) -> Tensor:
        z = forward(u)
        levels.add(z)
        return z

    return call


def shared_cuts(ctx: AuditContext) -> tuple[int, ...]:
    """Rows where the audits that share passes end a batch (none without a run's shared passes)."""
    return ctx.passes.cuts if ctx.passes is not None else ()


def shared_view(ctx: AuditContext, model: InvertibleModel, index: int, start: int, stop: int) -> InvertibleModel:
    """``model`` on the batch ``start:stop`` of data set ``index``, its passes shared with the
    run's other audits (a :class:`~innaudit.audits.passes.PassView`, which stands where the model
    does); ``model`` itself without shared passes."""
    if ctx.passes is None:
        return model
    return cast(InvertibleModel, ctx.passes.view(model, ctx.datasets[index].name, start, stop))


_INFERENCE: weakref.WeakKeyDictionary[InvertibleModel, bool] = weakref.WeakKeyDictionary()


def no_autograd(ctx: AuditContext) -> contextlib.AbstractContextManager[object]:
    """``torch.inference_mode()`` for passes that need no gradient, where the model runs under it;
    ``torch.no_grad()`` where it does not.

    Inference mode records nothing for autograd (no graph, no version counters), but a model that
    takes gradients inside its own forward (a residual block's log-det series under
    ``torch.enable_grad()``) cannot run under it. Which one a model gets is decided once per model
    by a probe: a forward and an inverse of one sample at the middle of its data domain under both
    modes; inference mode is kept when it runs and gives the same values bit for bit.
    """
    model = ctx.model
    if model not in _INFERENCE:
        _INFERENCE[model] = _inference_works(model, ctx.device)
    return torch.inference_mode() if _INFERENCE[model] else torch.no_grad()


def _inference_works(model: InvertibleModel, device: torch.device) -> bool:
    dom = model.info.domain
    x = torch.full((1, *dom.shape), 0.5 * (dom.low + dom.high), dtype=model.dtype, device=device)
    try:
        with torch.no_grad():
            z = model.forward(x)
            back = model.inverse(z)
        with torch.inference_mode():
            z_inf = model.forward(x)
            back_inf = model.inverse(z_inf)
    except Exception:
        return False
    return _same(z, z_inf) and _same(back, back_inf)


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal element for element, NaN where the other is NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    nan = a.isnan()
    return bool(nan.equal(b.isnan()) and a[~nan].equal(b[~nan]))


# -- budgets inside a batch --------------------------------------------------------------------
def late_rows(ctx: AuditContext, unit: tuple[int, int, int], minimal: int = 1) -> int:
    """Rows of the batch ``unit`` to run: all of them, or ``minimal`` when the batch is the first
    of its set and the audit is already past its deadline (:attr:`AuditContext.overdue`).

    A paced map still begins every set after the deadline (:meth:`AuditContext.map`), so that
    each set is measured; its first batch then costs one minimal unit, not a whole batch."""
    _, start, stop = unit
    return min(stop - start, minimal) if start == 0 and ctx.overdue() else stop - start


CHUNK_SHARE = 0.5
"""Share of the time left before the deadline one sub-batch of :class:`RowChunks` may take."""


class RowChunks:
    """Row ranges ``(lo, hi)`` of a batch, sized to the time left before the audit's deadline.

    Without a budget one range covers the batch (the work is what it is without chunks). Under
    one, each range is sized from the seconds per row the ranges before it took (carried across
    the audit's batches; the first range of the audit is one row) to take at most
    :data:`CHUNK_SHARE` of the time left (:attr:`AuditContext.left`), one row at least; once the
    deadline has passed no range after a batch's first is given (:attr:`AuditContext.overdue`
    is asked), so work that runs a batch's rows through several passes stops within about one
    range of its deadline. The caller counts the rows it ran (``hi`` of the last range)."""

    def __init__(
        self, ctx: AuditContext, share: float = CHUNK_SHARE, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.ctx, self.share, self.clock = ctx, share, clock
        self.per_row: float | None = None

    def __call__(self, rows: int) -> Iterator[tuple[int, int]]:
        done = 0
        while done < rows:
            if done and self.ctx.overdue():
                return
            size = self._size(rows - done)
            began = self.clock()
            yield done, done + size
            self.per_row = (self.clock() - began) / size
            done += size

    def _size(self, rest: int) -> int:
        left = self.ctx.left()
        if not math.isfinite(left):
            return rest
        if self.per_row is None:
            return 1
        return max(1, min(rest, int(self.share * max(0.0, left) / max(self.per_row, 1e-9))))
