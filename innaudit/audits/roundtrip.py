"""The ``roundtrip`` audit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import torch

from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import (
    full_range_floor,
    level_stats,
    map_batches,
    no_autograd,
    recording,
    round_trip,
    set_progress,
    shared_cuts,
    shared_view,
    verdict_float64,
)
from innaudit.config.settings import Threshold
from innaudit.core.metrics import neither, rate, worse
from innaudit.core.stats import ErrorAccumulator
from innaudit.model.contract import InverseKind, InvertibleModel
from innaudit.model.latent import LevelStats
from innaudit.verdict.float64 import EXACT_LIMIT

__all__ = ["RoundTrip"]


@register
class RoundTrip(Audit):
    r"""Round trip ``x -> z = F(x) -> x' = F^-1(z)`` on the in-distribution and OOD sets.

    Property: a numerically invertible model reconstructs its input up to float32 rounding,
    amplified by at most ``Lip(F^-1)`` (Behrmann et al. 2021, section 2). An exploding inverse
    shows as large errors or as NaN/Inf in ``x'`` (or already in ``z``).

    Per sample: ``err = ||x - x'||_2`` over all elements (unnormalized, as in the paper) and
    ``rel = err / max(||x||_2, 0.01 * sqrt(D) * (high - low))`` (1 % of a full-range vector, so
    inputs near the origin are not divided by almost nothing). A sample is non-finite when
    ``z`` or ``x'`` holds any NaN or Inf; its error counts as ``inf``.

    Metrics per set: ``n``; ``nonfinite_fraction`` (NaN or Inf anywhere), ``nan_fraction``,
    ``inf_fraction``, ``latent_nonfinite_fraction`` (already non-finite in ``z``: the forward
    pass overflows); ``error_l2`` and ``rel_error_l2`` with ``median``, ``p99``, ``max``,
    ``mean`` over finite samples; ``worst_indices``. With ``--float64-check`` the same on a
    float64 copy under ``float64``, and the message says which of three it is: finite and within
    the warn level there (float32 precision is the limit), finite but wrong (ill-conditioned or
    not invertible: more precision does not help), or non-finite (the map itself breaks).

    For an iterative inverse (``inverse_kind`` "iterative", e.g. the zoo's residual flows) whose
    module counts them in ``inverse_cap_hits``, ``inverse_cap_hits`` is the number of (sample,
    block) fixed-point solves on the set that stopped at ``inverse_max_iter`` without meeting
    ``inverse_tolerance``: their reconstruction error is not the converged one.

    For a multi-scale latent (a list of levels), ``levels.<i>`` gives level ``i``'s
    ``nonfinite_fraction`` (share of samples whose level-``i`` latent ``z_i`` is non-finite) and
    ``norm`` (``min``/``max`` of ``||z_i||`` over finite samples): the level that overflows first.

    Reading a failure: non-finite on noise but not on data is the paper's OOD finding (affine
    coupling is only locally bi-Lipschitz); non-finite on data means the model is unusable as a
    bijection even where it was trained; a large finite error is the early stage of the same.
    Gate defaults: any non-finite sample fails; a relative error above 1e-4 (about 1000 times
    float32 rounding) warns and above 1e-2 (a visibly wrong reconstruction) fails.

    References:
        Behrmann, Vicol, Wang, Grosse, Jacobsen, "Understanding and Mitigating Exploding
        Inverses in Invertible Neural Networks", AISTATS 2021 (PMLR 130),
        https://arxiv.org/abs/2006.09347
    """

    id = "roundtrip"
    title = "Round trip x -> F(x) -> F^-1(F(x)) on data and held-out sets"
    thresholds = {
        "nonfinite_fraction": Threshold(warn=None, fail=0.0),
        "rel_error_l2.max": Threshold(warn=1e-4, fail=1e-2),
    }
    metrics = (
        neither("n", doc="samples"),
        rate("nonfinite_fraction", "round trips with a NaN or Inf"),
        rate("nan_fraction", "round trips with a NaN"),
        rate("inf_fraction", "round trips with an Inf"),
        rate("latent_nonfinite_fraction", "forward passes with a NaN or Inf latent"),
        worse("error_l2", doc="||F^-1(F(x)) - x||_2"),
        worse("rel_error_l2", doc="error / ||x||"),
        rate("float64.nonfinite_fraction", "round trips non-finite in float64"),
        worse("float64.error_l2"),
        worse("float64.rel_error_l2"),
        worse("inverse_cap_hits", doc="iterative inverses stopped by the iteration cap"),
        rate("levels.*.nonfinite_fraction", "samples whose level-i latent is non-finite"),
        neither("levels.*.norm", doc="range of the level's latent norms"),
    )

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped only when there is no data set at all."""
        return None if ctx.datasets else "no data sets to round-trip"

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement per data set; the sets' batches are the work units of a sharded run."""
        domain = ctx.model.info.domain
        floor = full_range_floor(domain.numel, domain.width)
        sizes = [d.size for d in ctx.datasets]
        wide: list[InvertibleModel] = []  # the float64 copy, made once on first use

        def work(unit: tuple[int, int, int]) -> _Part:
            index, start, stop = unit
            ds = ctx.datasets[index]
            hits = _cap_hits(ctx)
            levels = level_stats(ctx.model)
            x = ds.make(start, stop).to(device=ctx.device, dtype=ctx.model.dtype)
            model = shared_view(ctx, ctx.model, index, start, stop)  # precision, layers, logdet read it again
            with no_autograd(ctx):
                acc = round_trip(recording(model.forward, levels), model.inverse, [x], floor)
            hit = cast(int, _cap_hits(ctx)) - hits if hits is not None else None  # counted before, so still counted
            acc64 = None
            if ctx.float64_check:
                if not wide:
                    wide.append(ctx.model.copy_as(torch.float64))
                with no_autograd(ctx):
                    acc64 = round_trip(
                        wide[0].forward,
                        wide[0].inverse,
                        [ds.make(start, stop).to(device=ctx.device, dtype=torch.float64)],
                        floor,
                    )
            return _Part(acc, levels, hit, acc64)

        progress = set_progress(ctx, [d.name for d in ctx.datasets], sizes)
        for ds, mine in zip(
            ctx.datasets,
            map_batches(ctx, sizes, work, progress=progress, paced=True, cuts=shared_cuts(ctx)),
            strict=True,
        ):
            acc = ErrorAccumulator(floor=floor)
            levels = level_stats(ctx.model)
            for part in mine:
                acc.extend(part.acc)
                if levels is not None and part.levels is not None:
                    levels.extend(part.levels)
            metrics = acc.metrics("latent")
            if levels is not None:
                metrics["levels"] = levels.metrics()
            if _cap_hits(ctx) is not None:
                metrics["inverse_cap_hits"] = sum(p.hits or 0 for p in mine)
            message = ""
            if ctx.float64_check:
                acc64 = ErrorAccumulator(floor=floor)
                for part in mine:
                    acc64.extend(cast(ErrorAccumulator, part.acc64))
                m64 = acc64.metrics("latent")
                metrics["float64"] = {k: m64[k] for k in ("nonfinite_fraction", "error_l2", "rel_error_l2")}
                warn = ctx.settings.thresholds_for(ds.name).get("rel_error_l2.max")
                message = verdict_float64(
                    cast(float, metrics["nonfinite_fraction"]),
                    cast(float, m64["nonfinite_fraction"]),
                    cast(dict, metrics["rel_error_l2"])["max"],
                    cast(dict, m64["rel_error_l2"])["max"],
                    warn.warn if warn is not None and warn.warn is not None else EXACT_LIMIT,
                )
            yield Measurement(ds.name, metrics, message, {"error_histogram": acc.histogram()})


@dataclass(frozen=True)
class _Part:
    """What one batch gave: its errors, per-level latents, capped solves, float64 errors."""

    acc: ErrorAccumulator
    levels: LevelStats | None
    hits: int | None
    acc64: ErrorAccumulator | None


def _cap_hits(ctx: AuditContext) -> int | None:
    """The model's cumulative count of capped fixed-point solves, or None when it keeps none."""
    if ctx.model.info.inverse_kind is not InverseKind.ITERATIVE:
        return None
    count = getattr(ctx.model.module, "inverse_cap_hits", None)
    return int(count) if isinstance(count, (int, float)) else None
