"""The ``precision`` audit: at which floating-point precision does the model stop being invertible?"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import (
    RowChunks,
    full_range_floor,
    late_rows,
    map_batches,
    no_autograd,
    prior_set,
    set_progress,
    shared_cuts,
    shared_view,
)
from innaudit.audits.cost import AuditCost, Cost, jacobian_costs
from innaudit.audits.passes import PassView
from innaudit.audits.roundtrip import RoundTrip
from innaudit.config.choices import PRECISION_NAMES, check_choice
from innaudit.config.settings import Threshold
from innaudit.core.metrics import Metric, neither, rate, worse
from innaudit.core.stats import ErrorAccumulator, relative_error, summarize
from innaudit.data import Dataset
from innaudit.linalg import extreme_singular_values, jacobian_singular_values
from innaudit.model.contract import InverseKind, InvertibleModel

__all__ = ["LADDER", "PRECISIONS", "Lane", "Precision", "PrecisionAudit", "lowest_invertible"]


@dataclass(frozen=True)
class Precision:
    """One way of running the model: a true cast of model and data, or ``torch.autocast``.

    Attributes:
        name: ``float32``, ``bfloat16``, ``autocast_float16``...
        dtype: the compute dtype (the cast, or the autocast dtype).
        autocast: whether the model stays in float32 under ``torch.autocast(device, dtype)``.
    """

    name: str
    dtype: torch.dtype
    autocast: bool = False

    @property
    def unit_roundoff(self) -> float:
        """``u = eps / 2``: 2^-53, 2^-24, 2^-11 (float16), 2^-8 (bfloat16)."""
        return float(torch.finfo(self.dtype).eps) / 2


PRECISIONS = (
    Precision("float64", torch.float64),
    Precision("float32", torch.float32),
    Precision("float16", torch.float16),
    Precision("bfloat16", torch.bfloat16),
    Precision("autocast_float16", torch.float16, True),
    Precision("autocast_bfloat16", torch.bfloat16, True),
)
"""Every precision measured, in report order."""

LADDER = ("float64", "float32", "float16", "bfloat16")
"""The true casts by decreasing precision (increasing unit roundoff); ``lowest_invertible`` is
an index into it."""

_BY_NAME = {p.name: p for p in PRECISIONS}
if tuple(_BY_NAME) != PRECISION_NAMES:  # the CLI and the config list the names without torch
    raise RuntimeError(f"PRECISIONS {tuple(_BY_NAME)} differ from config.choices {PRECISION_NAMES}")
EXACT_COND_DIM = 1024
"""Largest dimension whose condition number comes from exact Jacobians (Lanczos above)."""

LANES_COST = 18.0
"""The six lanes' round trips of one sample, in float32 round trips: float64 runs at about half
float32's speed, and float16 and bfloat16 without native kernels (most CPUs) several times slower
still; measured on a 3072-dimensional coupling flow on a CPU (``benchmarks/scale.py``)."""

FLOAT64_COST = 1.5
"""A float64 Jacobian-vector product of one point, in float32 ones of the planner's measure."""

_SKIPPABLE = (RuntimeError, NotImplementedError, TypeError, ValueError)
_RT_FAIL = {m: t.fail for m, t in RoundTrip.thresholds.items()}


def _per_precision(p: str) -> tuple[Metric, ...]:
    return (
        rate(f"{p}.nonfinite_fraction", f"round trips with a NaN or Inf in {p}"),
        rate(f"{p}.latent_nonfinite_fraction", f"latents F(x) with a NaN or Inf in {p}"),
        rate(f"{p}.sample_nonfinite_fraction", f"samples F^-1(z) with a NaN or Inf in {p}"),
        worse(f"{p}.rel_error_l2", doc=f"round-trip error / ||input|| in {p}"),
        *(
            []
            if p == "float64"
            else [  # the reference has no gap to itself
                worse(f"{p}.reference_gap", doc=f"||middle - middle in float64|| / ||middle in float64|| in {p}")
            ]
        ),
        worse(f"{p}.predicted_rel_error", doc=f"cond(J) * unit roundoff of {p}"),
        neither(f"{p}.unit_roundoff"),
        neither(f"{p}.invertible", doc="1 when invertible at this precision"),
    )


@register
class PrecisionAudit(Audit):
    r"""Round trips under float64, float32, float16, bfloat16 and autocast, with float64 as reference.

    Property: rounding in the forward pass is amplified by the inverse, by up to ``Lip(F^-1)``
    (Behrmann et al. 2021, https://arxiv.org/abs/2006.09347, section 2), so the round-trip
    relative error is about ``cond(J_F(x)) * u`` for unit roundoff ``u`` (2^-24 in float32,
    2^-11 in float16, 2^-8 in bfloat16). Halving the mantissa multiplies the damage; a narrower
    range (float16 max 65504) adds overflow.

    Per set (the round-trip sets in-distribution and OOD, plus ``prior@T=1``, the sampling
    direction ``z -> F^-1(z) -> F(F^-1(z))``), for each precision ``p``: a true cast (a deep
    copy of the model and the data in ``p``) for float64, float32, float16, bfloat16, and
    ``torch.autocast(device, p)`` on the model in float32 for ``autocast_float16`` and
    ``autocast_bfloat16``. Metrics under ``p.``: ``nonfinite_fraction``,
    ``latent_nonfinite_fraction`` (``sample_nonfinite_fraction`` for the prior set),
    ``rel_error_l2`` (``||u' - u|| / max(||u||, floor)`` as in ``roundtrip``, summarized),
    ``reference_gap`` (the middle ``z`` or ``x`` against the float64 one, relative),
    ``unit_roundoff``, ``predicted_rel_error`` (``cond(J) * u``, median and max over
    ``spectrum_samples`` points, where the spectrum can be computed: exact Jacobians in
    float64 up to 1024 dimensions, Lanczos above), ``invertible`` (1 or 0: no non-finite
    round trip and ``rel_error_l2.max`` at most the ``roundtrip`` audit's fail level, 1e-2).
    Per set: ``n``, ``cond`` (``sigma_max / sigma_min`` of ``J_F``), ``lowest_invertible``
    (index into float64, float32, float16, bfloat16: the last precision that is invertible
    together with every wider one, -1 when not even float64 is; its name is in the message).
    A combination the device or the model cannot run (an op without a float16 kernel, autocast
    unavailable) is skipped with its reason in the message. So is a precision whose unit
    roundoff exceeds an iterative inverse's declared tolerance (``inverse_tolerance`` 1e-6 in
    float16): the solve cannot converge there and every call would run to its iteration cap;
    ``force_iterative: true`` measures it anyway (slowly).

    Options: ``samples`` caps the samples per set (256; ``--samples`` caps it too),
    ``spectrum_samples`` the points where ``cond(J)`` is computed (4), ``prior`` adds the
    sampling direction (true). Cost per sample: two model evaluations per precision.

    Gate: ``required`` (``--require-precision``; default ``float32``) names the precision the
    model must be invertible at; its ``nonfinite_fraction`` and ``rel_error_l2.max`` are copied
    to ``required.*`` and fail above 0 and 1e-2. The default gates float32 only, as the
    ``roundtrip`` audit does, and the other precisions are informational; a required precision
    that could not be measured fails (NaN).

    Under ``--budget``, a batch runs in sub-batches sized to the time left and stops at the
    deadline (:class:`~innaudit.audits.common.RowChunks`), a set begun after it is measured on
    one sample, and ``cond(J)``'s Lanczos stops between iterations (its values are then lower
    bounds, as the message says); ``budget_cut_fraction`` (present only then) is the share of the
    samples of the batches begun that were left unmeasured, and above 0 it warns, so a cut
    sweep is never a pass (a failure found on the samples measured still fails).

    Reading a failure: an error near ``cond(J) * u`` is conditioning, predictable from the
    spectrum; non-finite values in float16 with a finite float32 are range (overflow at 65504);
    an error far above the prediction means the sampled points miss where the map is worst or
    something other than conditioning (an iterative inverse's tolerance) dominates.

    References:
        Behrmann, Vicol, Wang, Grosse, Jacobsen, "Understanding and Mitigating Exploding
        Inverses in Invertible Neural Networks", AISTATS 2021 (PMLR 130),
        https://arxiv.org/abs/2006.09347
    """

    id = "precision"
    title = "Round trips at float64, float32, float16, bfloat16 and autocast"
    thresholds = {
        "required.nonfinite_fraction": Threshold(warn=None, fail=_RT_FAIL["nonfinite_fraction"]),
        "required.rel_error_l2.max": Threshold(warn=None, fail=_RT_FAIL["rel_error_l2.max"]),
        "budget_cut_fraction": Threshold(warn=0.0, fail=None),
    }
    options = {"required": "float32", "samples": 256, "spectrum_samples": 4, "prior": True, "force_iterative": False}
    shrinkable = {"spectrum_samples": 1}
    metrics = (
        neither("n", doc="samples"),
        worse("cond", doc="condition number of J_F (float64)"),
        neither("lowest_invertible", doc="index into float64, float32, float16, bfloat16"),
        rate("required.nonfinite_fraction", "non-finite round trips at the required precision"),
        worse("required.rel_error_l2", doc="relative round-trip error at the required precision"),
        *(m for p in PRECISIONS for m in _per_precision(p.name)),
        rate("budget_cut_fraction", "samples of the batches begun that the budget left unmeasured"),
    )

    @classmethod
    def set_names(cls, datasets: Sequence[Dataset], options: Mapping[str, Any]) -> tuple[str, ...]:
        """The data sets, then ``prior@T=1`` when ``prior`` is on."""
        return (*super().set_names(datasets, options), *((prior_set(1.0),) if options["prior"] else ()))

    @classmethod
    def costs(cls, dim: int, options: Mapping[str, Any]) -> Mapping[str, AuditCost]:
        """Per sample: a forward and an inverse in each lane, counted in float32 round trips
        (:data:`LANES_COST`); per set: ``cond(J_F)`` at ``spectrum_samples`` points in float64
        (:data:`FLOAT64_COST` times the float32 Jacobian work of the chosen method)."""
        method = "exact" if dim <= EXACT_COND_DIM else "matrix-free"
        # its Lanczos stops at a loose tolerance (1e-3), about half of its 32 iterations
        cond = jacobian_costs(dim, 32, share=0.5)[method].per_sample * (FLOAT64_COST * int(options["spectrum_samples"]))
        return {"": AuditCost(Cost(forward=LANES_COST, inverse=LANES_COST), cond)}

    @classmethod
    def capacities(cls, datasets: Sequence[Dataset], options: Mapping[str, Any], samples: int) -> list[int]:
        """Every data set, then the prior draws when ``prior`` is on."""
        return [*super().capacities(datasets, options, samples), *([samples] if options["prior"] else [])]

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """``required`` is one of :data:`innaudit.config.choices.PRECISION_NAMES`."""
        check_choice("precision.required", options["required"], PRECISION_NAMES)

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped only when there is no data set and the prior set is off."""
        return None if ctx.datasets or ctx.option("prior") else "no data sets and prior: false"

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement per round-trip set, then the prior set; the sets' batches (each
        through every lane) are the work units of a sharded run."""
        required = str(ctx.option("required"))
        if required not in _BY_NAME:
            raise ValueError(f"precision.required is {required!r}; expected one of {', '.join(_BY_NAME)}")
        lanes, skipped = build_lanes(ctx.model, ctx.device, bool(ctx.option("force_iterative")))
        wide = lanes[0].model if lanes and lanes[0].precision.name == "float64" else None
        cap = max(1, min(int(ctx.option("samples")), ctx.samples))
        domain = ctx.model.info.domain
        data_floor = full_range_floor(domain.numel, domain.width)
        sets = [_Set(ds.name, min(cap, ds.size), data_floor, True) for ds in ctx.datasets]
        if ctx.option("prior"):
            sets.append(_Set(prior_set(1.0), cap, 1e-6 * math.sqrt(math.prod(ctx.latent_shape)), False))

        def inputs(index: int, start: int, stop: int) -> Tensor:
            if index < len(ctx.datasets):
                return ctx.datasets[index].make(start, stop).to(ctx.device, torch.float64)
            z = torch.randn(
                (stop - start, *ctx.latent_shape), generator=ctx.generator("prior", start), dtype=torch.float64
            )
            return z.to(ctx.device)

        def cond(index: int, u: Tensor) -> tuple[np.ndarray, str, bool]:
            """cond(J) at the first ``spectrum_samples`` points of a set's first batch."""
            return condition_numbers(
                wide,
                u.cpu()[: int(ctx.option("spectrum_samples"))],
                sets[index].forward,
                ctx.generator("cond", sets[index].name),
                stop=ctx.overdue,
            )

        chunks = RowChunks(ctx)  # under a budget, sub-batches that stop at the deadline

        def work(unit: tuple[int, int, int]) -> _Part:
            index, start, stop = unit
            u = inputs(index, start, stop)
            pieces = []
            for lo, hi in chunks(late_rows(ctx, unit)):
                # the lane in the model's own dtype reads the passes roundtrip ran on this batch
                at = (index, start + lo, start + hi)
                shared = shared_view(ctx, ctx.model, *at) if index < len(ctx.datasets) else None
                pieces.append(
                    _batch(
                        lanes,
                        skipped,
                        u[lo:hi],
                        sets[index].floor,
                        sets[index].forward,
                        shared if isinstance(shared, PassView) else None,
                        lambda: no_autograd(ctx),
                    )
                )
            part = _pieces(pieces)
            if not ctx.shard.single:  # the ranks gather host data
                part = replace(part, gaps={k: _host(v) for k, v in part.gaps.items()})
            return replace(part, cond=cond(index, u[: part.n]) if start == 0 else None, begun=stop - start)

        for index, (at, parts) in enumerate(
            zip(
                sets,
                map_batches(
                    ctx,
                    [s.n for s in sets],
                    work,
                    progress=set_progress(ctx, [s.name for s in sets], [s.n for s in sets]),
                    paced=True,
                    cuts=shared_cuts(ctx),
                ),
                strict=True,
            )
        ):
            reasons = dict(skipped)  # this set's, with the lanes that raised on it
            sweep = _merge(lanes, reasons, parts, at.floor)
            first = next((p.cond for p in parts if p.cond is not None), None)  # the set's first batch
            values, note, cond_cut = first if first is not None else cond(index, torch.zeros(0))
            metrics = _set_metrics(sweep, values, required, "latent" if at.forward else "sample")
            begun = sum(p.begun for p in parts)
            message = _message(metrics, reasons, required, note)
            if begun > sweep.n or cond_cut:  # the deadline passed inside this set's work
                metrics["budget_cut_fraction"] = (begun - sweep.n) / begun if begun else 0.0
            if begun > sweep.n:
                message += (
                    f"; the budget stopped this set's sub-batches at {sweep.n} of the {begun} sample(s) of the "
                    "batches begun (the rest are not measured)"
                )
            yield Measurement(at.name, metrics, message, {"precisions": _series(metrics)})


@dataclass(frozen=True)
class _Set:
    """A set the lanes round-trip: its name, samples, error floor and direction (data: ``x -> z
    -> x'``; prior draws: ``z -> x -> z'``)."""

    name: str
    n: int
    floor: float
    forward: bool


@dataclass(frozen=True)
class Lane:
    """A precision and the model copy that runs it."""

    precision: Precision
    model: InvertibleModel

    def maps(self, forward: bool) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """``(first, second)`` of the round trip: ``(F, F^-1)`` on data, ``(F^-1, F)`` on prior draws."""
        return (self.model.forward, self.model.inverse) if forward else (self.model.inverse, self.model.forward)

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype inputs are cast to (float32 under autocast)."""
        return torch.float32 if self.precision.autocast else self.precision.dtype

    def context(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` for autocast precisions, else nothing."""
        if self.precision.autocast:
            return torch.autocast(device.type, dtype=self.precision.dtype)
        return contextlib.nullcontext()


def build_lanes(
    model: InvertibleModel, device: torch.device, force_iterative: bool = False
) -> tuple[list[Lane], dict[str, str]]:
    """One lane per precision (model copies cast with ``copy_as``), and the skip reasons of the
    precisions the device (or an iterative inverse's tolerance) cannot run."""
    lanes, skipped = [], {}
    for p in PRECISIONS:
        reason = _unsupported(p, device) or (None if force_iterative else _unreachable(p, model))
        if reason is not None:
            skipped[p.name] = reason
            continue
        dtype = torch.float32 if p.autocast else p.dtype
        lanes.append(Lane(p, model if model.dtype == dtype else model.copy_as(dtype)))
    return lanes, skipped


def _unsupported(p: Precision, device: torch.device) -> str | None:
    """Why ``device`` cannot run ``p`` at all (None when it can)."""
    if p.autocast:
        if not torch.amp.autocast_mode.is_autocast_available(device.type):
            return f"torch.autocast is not available on {device.type}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with torch.autocast(device.type, dtype=p.dtype):
                    pass
            except _SKIPPABLE as exc:
                return _short(exc)
        if any("autocast" in str(w.message).lower() for w in caught):
            return f"autocast with {p.dtype} is disabled on {device.type}: {caught[0].message}"
        return None
    try:
        torch.ones(2, 2, dtype=p.dtype, device=device) @ torch.ones(2, 2, dtype=p.dtype, device=device)
    except _SKIPPABLE as exc:
        return f"{p.name} matmul on {device.type}: {_short(exc)}"
    return None


def _unreachable(p: Precision, model: InvertibleModel) -> str | None:
    """Why an iterative inverse cannot meet its declared tolerance at ``p`` (None when it can)."""
    info = model.info
    tol = info.inverse_tolerance
    if info.inverse_kind is not InverseKind.ITERATIVE or tol is None or tol >= p.unit_roundoff:
        return None
    return (
        f"the iterative inverse's tolerance {tol:g} is below the unit roundoff: every solve would "
        f"run to its cap of {info.inverse_max_iter} iterations; precision.force_iterative measures it"
    )


def _short(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}"


@dataclass(frozen=True)
class _Part:
    """One batch through every lane: each lane's errors, or the reason it raised; each lane's gap
    to the float64 middle; and, for a set's first batch, ``cond(J)`` at its first points."""

    accs: dict[str, ErrorAccumulator]
    failed: dict[str, str]
    gaps: dict[str, Tensor | np.ndarray]
    n: int
    cond: tuple[np.ndarray, str, bool] | None = None
    begun: int = 0
    """Rows of the batch begun (``n`` or more: a budget may stop its sub-batches early)."""


def _pieces(pieces: Sequence[_Part]) -> _Part:
    """The sub-batches of one batch joined as one :func:`_batch` of their rows makes them: a lane
    that raised on a sub-batch has the first reason and no errors."""
    if len(pieces) == 1:
        return pieces[0]
    failed: dict[str, str] = {}
    for piece in pieces:
        for key, reason in piece.failed.items():
            failed.setdefault(key, reason)
    accs: dict[str, ErrorAccumulator] = {}
    gaps: dict[str, list[Tensor | np.ndarray]] = {}
    for piece in pieces:
        for key, acc in piece.accs.items():
            if key not in failed:
                accs.setdefault(key, ErrorAccumulator(floor=acc.floor)).extend(acc)
        for key, gap in piece.gaps.items():
            gaps.setdefault(key, []).append(gap)
    joined = {k: torch.cat([g for g in v if isinstance(g, Tensor)]) for k, v in gaps.items() if k not in failed}
    return _Part(accs, failed, dict(joined), sum(p.n for p in pieces))


@dataclass(frozen=True)
class _Sweep:
    """A set's batches merged, per precision name."""

    accs: dict[str, ErrorAccumulator]
    gaps: dict[str, list[Tensor | np.ndarray]]
    n: int


def _batch(
    lanes: Sequence[Lane],
    skipped: Mapping[str, str],
    u: Tensor,
    floor: float,
    forward: bool,
    shared: PassView | None = None,
    quiet: Callable[[], contextlib.AbstractContextManager[Any]] = torch.no_grad,
) -> _Part:
    """One batch through every lane that is not ``skipped`` (float64 first, its middle is the
    reference); a lane that raises gives its reason instead of errors. The true-cast lane of
    ``shared``'s model runs through ``shared`` (passes another audit ran on this batch); every
    lane runs under ``quiet()`` (no autograd)."""
    accs: dict[str, ErrorAccumulator] = {}
    failed: dict[str, str] = {}
    gaps: dict[str, Tensor | np.ndarray] = {}
    reference: Tensor | None = None
    for lane in lanes:
        key = lane.precision.name
        if key in skipped:
            continue
        acc = ErrorAccumulator(floor=floor)
        own = shared is not None and lane.model is shared.model and not lane.precision.autocast
        try:
            middle = _round_trip(lane, u, forward, acc, shared if own else None, quiet)
        except _SKIPPABLE as exc:
            failed[key] = f"raised {_short(exc)}"
            continue
        accs[key] = acc
        if key == "float64":
            reference = middle
        elif reference is not None:
            gaps[key] = _gap(middle, reference)
    return _Part(accs, failed, gaps, len(u))


def _merge(lanes: Sequence[Lane], skipped: dict[str, str], parts: Sequence[_Part], floor: float) -> _Sweep:
    """A set's batches merged as one pass over them makes them: a lane that raised on some batch
    is dropped, its first batch's reason added to ``skipped`` (in the order a pass meets them),
    and the float64 reference, hence every gap, ends at float64's first failure."""
    names = [lane.precision.name for lane in lanes if lane.precision.name not in skipped]
    first: dict[str, tuple[int, str]] = {}
    for number, part in enumerate(parts):
        for name in names:
            if name in part.failed and name not in first:
                first[name] = (number, part.failed[name])
    for name in sorted(first, key=lambda k: (first[k][0], names.index(k))):
        skipped[name] = first[name][1]
    reference_end = first["float64"][0] if "float64" in first else len(parts)
    accs = {name: ErrorAccumulator(floor=floor) for name in names if name not in first}
    gaps: dict[str, list[Tensor | np.ndarray]] = {name: [] for name in accs}
    for number, part in enumerate(parts):
        for name, acc in accs.items():
            acc.extend(part.accs[name])
            if number < reference_end and name in part.gaps:
                gaps[name].append(part.gaps[name])
    return _Sweep(accs, gaps, sum(part.n for part in parts))


def _round_trip(
    lane: Lane,
    u: Tensor,
    forward: bool,
    acc: ErrorAccumulator,
    shared: PassView | None = None,
    quiet: Callable[[], contextlib.AbstractContextManager[Any]] = torch.no_grad,
) -> Tensor:
    first, second = (shared.forward, shared.inverse) if shared is not None and forward else lane.maps(forward)
    device = u.device
    u_p = u.to(lane.input_dtype)
    with quiet(), lane.context(device):
        middle = first(u_p)
        back = second(middle)
    acc.add(u_p, middle, back)
    return middle.double()


def _gap(middle: Tensor, reference: Tensor) -> Tensor:
    """Per-sample ``||middle - reference|| / ||reference||`` (inf where either is non-finite),
    where the batch was computed."""
    gap = relative_error(middle, reference, 1e-300)
    bad = ~torch.isfinite(middle.reshape(len(middle), -1)).all(1) | ~torch.isfinite(gap)
    return torch.where(bad, torch.full_like(gap, math.inf), gap)


def _host(values: Tensor | np.ndarray) -> np.ndarray:
    return values.cpu().numpy() if isinstance(values, Tensor) else values


def _joined(parts: Sequence[Tensor | np.ndarray]) -> np.ndarray:
    """The batches' values as one host array, copied from the device once."""
    if all(isinstance(p, Tensor) for p in parts):
        return torch.cat([p for p in parts if isinstance(p, Tensor)]).cpu().numpy()
    return np.concatenate([_host(p) for p in parts])


def condition_numbers(
    wide: InvertibleModel | None,
    points: Tensor,
    forward: bool,
    generator: torch.Generator,
    stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, str, bool]:
    """``cond(J_F) = sigma_max / sigma_min`` in float64 at a few points (prior draws are mapped
    to data space by ``F^-1`` first): exact Jacobians up to 1024 dimensions, Lanczos above (an exact Jacobian holds ``dim``
    backward passes of every sample in memory at once).
    Returns the per-point values (NaN where not finite), a note when none could be computed, and
    whether ``stop`` (a budget's deadline, asked between Lanczos iterations) ended the Lanczos
    runs early: then each value is the product of two Ritz values, a lower bound of ``cond``."""
    if wide is None or len(points) == 0:
        return np.zeros(0), "cond(J) not computed: no float64 run", False
    try:
        x = points.to(next(iter(wide.module.parameters()), points).device, torch.float64)
        if not forward:
            x = wide.inverse(x)
        dim = int(x[0].numel())
        cut = False
        if dim <= EXACT_COND_DIM:
            sv = jacobian_singular_values(lambda t: wide.forward(t, grad=True), x)
            cond = sv[:, 0] / sv[:, -1]
        else:
            fwd, inv = extreme_singular_values(
                lambda t: wide.forward(t, grad=True),
                lambda t: wide.inverse(t, grad=True),
                x,
                tol=1e-3,
                max_iter=32,
                generator=generator,
                stop=stop,
            )
            cond = fwd.values * inv.values
            cut = fwd.stopped is not None or inv.stopped is not None
    except _SKIPPABLE as exc:
        return np.zeros(0), f"cond(J) not computed: {_short(exc)}", False
    values = cond.double().cpu().numpy()
    note = "" if np.isfinite(values).any() else "cond(J) not finite at the sampled points"
    if cut:
        note = "; ".join(
            n
            for n in (
                note,
                "the budget stopped cond(J)'s Lanczos early: cond(J) and the predicted errors are lower bounds",
            )
            if n
        )
    return values, note, cut


def _set_metrics(sweep: _Sweep, cond: np.ndarray, required: str, middle: str) -> dict[str, Any]:
    finite_cond = cond[np.isfinite(cond)]
    metrics: dict[str, Any] = {"n": sweep.n}
    if finite_cond.size:
        metrics["cond"] = summarize(finite_cond)
    for name, acc in sweep.accs.items():
        p = _BY_NAME[name]
        got = acc.metrics(middle)
        block: dict[str, Any] = {
            k: got[k] for k in ("nonfinite_fraction", f"{middle}_nonfinite_fraction", "rel_error_l2")
        }
        if sweep.gaps.get(name):
            block["reference_gap"] = summarize(_joined(sweep.gaps[name]))
        block["unit_roundoff"] = p.unit_roundoff
        if finite_cond.size:
            block["predicted_rel_error"] = {
                "median": float(np.median(finite_cond)) * p.unit_roundoff,
                "max": float(finite_cond.max()) * p.unit_roundoff,
            }
        block["invertible"] = int(_invertible(block))
        metrics[name] = block
    metrics["lowest_invertible"] = lowest_invertible(metrics)
    req = metrics.get(required)
    metrics["required"] = {
        "nonfinite_fraction": req["nonfinite_fraction"] if req else math.nan,
        "rel_error_l2": {"max": req["rel_error_l2"]["max"] if req else math.nan},
    }
    return metrics


def _invertible(block: Mapping[str, Any]) -> bool:
    """No non-finite round trip and the largest relative error within the roundtrip fail level."""
    worst = block["rel_error_l2"]["max"]
    return (
        block["nonfinite_fraction"] <= (_RT_FAIL["nonfinite_fraction"] or 0.0)
        and math.isfinite(worst)
        and worst <= (_RT_FAIL["rel_error_l2.max"] or math.inf)
    )


def lowest_invertible(metrics: Mapping[str, Any]) -> int:
    """Index into :data:`LADDER` of the last precision invertible together with every wider one
    (-1 when float64 is not; a precision not measured ends the ladder)."""
    index = -1
    for i, name in enumerate(LADDER):
        block = metrics.get(name)
        if not block or not block["invertible"]:
            break
        index = i
    return index


def _message(metrics: Mapping[str, Any], skipped: Mapping[str, str], required: str, cond_note: str) -> str:
    low = metrics["lowest_invertible"]
    parts = [
        f"lowest invertible precision: {LADDER[low]}"
        if low >= 0
        else "not invertible even in float64: the map itself breaks on this set"
    ]
    if "cond" in metrics:
        parts.append(f"cond(J) median {metrics['cond']['median']:.3g}")
    for p in PRECISIONS:
        block = metrics.get(p.name)
        if not block or block["invertible"]:
            continue
        if low < 0:
            parts.append(
                f"{p.name}: {block['nonfinite_fraction']:.3g} non-finite, rel error max "
                f"{block['rel_error_l2']['max']:.2g}"
            )
        else:
            parts.append(f"{p.name}: {_reason(p, block)}")
    late = [p.name for p in PRECISIONS if p.name in LADDER[low + 1 :] and metrics.get(p.name, {}).get("invertible")]
    if late:
        parts.append(f"invertible again at {', '.join(late)}")
    for reason in dict.fromkeys(skipped.values()):
        parts.append(f"{', '.join(k for k, v in skipped.items() if v == reason)} skipped ({reason})")
    if cond_note:
        parts.append(cond_note)
    if required not in metrics:
        parts.append(f"the required precision {required} was not measured")
    return "; ".join(parts)


def _reason(p: Precision, block: Mapping[str, Any]) -> str:
    """Why ``p`` is not invertible (float64 is): conditioning (near ``cond * u``) or range."""
    predicted = block.get("predicted_rel_error", {}).get("max")
    pred = f"cond(J)*u predicts {predicted:.2g}" if predicted is not None else "no cond(J) prediction"
    if block["nonfinite_fraction"] > 0:
        share = f"{block['nonfinite_fraction']:.3g} non-finite"
        top = float(torch.finfo(p.dtype).max)
        if top < float(torch.finfo(torch.float32).max):
            return f"{share}, range: overflow of {p.dtype} (max {top:g}); {pred}"
        return f"{share}, rounding amplified past overflow; {pred}"
    worst = block["rel_error_l2"]["max"]
    if predicted is not None and worst <= 10 * predicted:
        return f"conditioning: rel error max {worst:.2g}, {pred}"
    return f"rel error max {worst:.2g}, {pred}: more than conditioning at the sampled points explains"


def _series(metrics: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The ``precisions`` plot: measured and predicted relative error per precision."""
    names = [p.name for p in PRECISIONS if p.name in metrics]

    def col(get: Callable[[Mapping[str, Any]], Any]) -> list[Any]:
        out = []
        for n in names:
            value = get(metrics[n])
            out.append(float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None)
        return out

    series: dict[str, list[Any]] = {
        "name": names,
        "rel error median": col(lambda b: b["rel_error_l2"]["median"]),
        "rel error max": col(lambda b: b["rel_error_l2"]["max"]),
    }
    if "cond" in metrics:
        series["cond(J) * u"] = col(lambda b: b.get("predicted_rel_error", {}).get("median"))
    series["non-finite share"] = col(lambda b: b["nonfinite_fraction"] or None)
    return series
