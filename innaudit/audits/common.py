"""Pieces the audits share: round trips with error accumulation, sample batches, float64 verdicts."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

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
    "batch_units",
    "block_name",
    "block_names",
    "by_set",
    "full_range_floor",
    "level_stats",
    "map_batches",
    "prior_set",
    "progress_counter",
    "recording",
    "round_trip",
    "sample_counts",
    "set_progress",
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


def batch_units(sizes: Iterable[int], batch_size: int) -> list[tuple[int, int, int]]:
    """``(set index, start, stop)`` of every batch of every set, sets in order, then batches:
    the work units :meth:`AuditContext.map` shares out. The batches are those a single process
    takes (``batch_size`` samples from 0), so each is computed on the same inputs whatever the
    number of ranks."""
    step = max(1, batch_size)
    return [
        (index, start, min(start + step, size)) for index, size in enumerate(sizes) for start in range(0, size, step)
    ]


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
) -> list[list[T]]:
    """``work`` over every batch of every set, the results grouped by set: the audits' one batch loop.

    ``sizes[i]`` samples of set ``i`` are cut into :func:`batch_units` of ``batch_size``
    (default ``ctx.batch_size``); :meth:`AuditContext.map` runs them (shared out over the ranks
    under ``torchrun``, every result handed to every rank in order) and :func:`by_set` groups
    them. ``progress(set index, samples)``, when given, is called after each batch this
    process runs: the one place a batch's completion is reported. ``paced``: a budgeted run may
    stop the audit early with the batches done (:meth:`AuditContext.map`); only for audits whose
    samples a budget may cut.
    """
    units = batch_units(sizes, ctx.batch_size if batch_size is None else batch_size)

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
