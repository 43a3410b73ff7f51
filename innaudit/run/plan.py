"""The cost model and the run plan: what each audit will cost, and how many samples a budget buys.

Every audit states its cost in model evaluations (:meth:`innaudit.audits.Audit.costs`): per
sample and per set, in forward passes, inverse passes, vector-Jacobian products (VJP, one
reverse-mode pass through ``F``, its forward included), Jacobian-vector products (JVP) and dense
float64 linear algebra (``dense``, in units of ``d^3``: an SVD or ``slogdet`` of a ``d x d``
Jacobian). :func:`measure_units` times one forward, inverse, VJP and JVP on a real batch of the
first data set and one float64 SVD, so :meth:`Cost.seconds` turns counts into seconds on this
machine. :func:`make_plan` then

1. picks each audit's method where it has a choice (``method: auto``): without a budget by the
   input dimension alone (exact Jacobians up to :data:`AUTO_EXACT_DIM`, matrix-free above), so
   the same seed gives the same report however busy the machine is; under a budget the cheaper
   in seconds, exact Jacobians preferred while they cost at most :data:`EXACT_PREFERENCE` times
   the matrix-free estimate (exact gives every singular value and a cross-check);
2. without a budget, keeps the requested sample counts and estimates the run's time;
3. with a budget ``B``: every audit gets its floor (:func:`floor_samples`); the rest of
   ``SAFETY * B`` is shared cheapest audit first, each taking at most an equal share of what
   is left, so cheap audits run in full and the expensive ones take the remainder. What an
   audit does not get is recorded as its ``cut``.

The runner re-plans the audits still to run after each audit with the time really left, and
scales the estimates by how far the finished audits were from theirs, so a run under a budget
ends within about ``1.25 B`` plus start-up even when the unit measurement was off.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from innaudit.audits.cost import (
    AuditCost,
    Cost,
    Timing,
    Units,
    jacobian_costs,
)
from innaudit.run.pace import Pace
from innaudit.run.threads import ThreadChoice, available_cores, chosen, given, rechecked

if TYPE_CHECKING:
    from innaudit.audits.base import Audit, AuditContext
    from innaudit.config.settings import Config
    from innaudit.data import Dataset
    from innaudit.model.contract import InvertibleModel

__all__ = [
    "AUTO_EXACT_DIM",
    "EXACT_PREFERENCE",
    "LONG_RUN_S",
    "SAFETY",
    "AuditCost",
    "AuditPlan",
    "Cost",
    "Plan",
    "PlanRun",
    "Units",
    "activation_bytes",
    "auto_batch_size",
    "floor_samples",
    "jacobian_costs",
    "make_plan",
    "measure_units",
    "plan_run",
    "replan",
]

EXACT_PREFERENCE = 4.0
"""Exact Jacobians are chosen while they cost at most this many times the matrix-free method."""
AUTO_EXACT_DIM = 1024
"""Without a budget, ``method: auto`` is exact up to this input dimension and matrix-free above:
a choice by measured seconds would flip between runs near the break-even point, and the method
is part of the report (``spectrum`` ``method``, ``logdet`` ``reference``)."""
SAFETY = 0.8
"""Share of a budget the plan fills; the rest absorbs estimation error."""
ALLOWANCE = 1.25
"""An audit under a budget may take this many times its planned seconds before it is stopped."""
RECHECK = 1.5
"""An audit this many times slower than planned re-checks the thread choice."""
LONG_RUN_S = 180.0
"""A plan longer than this (without ``--budget``) is announced on stderr with the hint."""
PACED_INSIDE = frozenset({"spectrum", "layers", "bounds", "attack", "precision", "logdet"})
"""Audits whose long loops (Lanczos iterations, attack steps and restarts, ``precision``'s
sub-batches and ``cond(J)`` Lanczos, ``logdet``'s quadrature steps) ask
:attr:`~innaudit.audits.base.AuditContext.overdue` and stop at their deadline: under a budget
their floor is planned at no more than an equal share, since time, not samples, cuts them (and
they report the cut as a warning)."""


@dataclass(frozen=True)
class AuditPlan:
    """One audit's share: samples per set, the method, the estimated seconds, what was cut."""

    id: str
    samples: int
    requested: int
    method: str
    sets: int
    estimated_s: float
    cut: str = ""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Options the plan lowered to fit the budget (``{"steps": 50}``)."""
    model_s: float = 0.0
    """Seconds of the audit's raw model evaluations by the measured units, unscaled."""
    passes: float = 0.0
    """Model passes the audit performs (a VJP or JVP counts two)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        out: dict[str, Any] = {
            "id": self.id,
            "samples": self.samples,
            "requested": self.requested,
            "method": self.method,
            "sets": self.sets,
            "estimated_s": round(self.estimated_s, 3),
            "model_s": round(self.model_s, 3),
            "passes": round(self.passes),
        }
        return (
            out
            | ({"cut": self.cut} if self.cut else {})
            | ({"options": dict(self.overrides)} if self.overrides else {})
        )


@dataclass(frozen=True)
class Plan:
    """The run plan: measured units, the budget (None: none), per audit its share, in run order."""

    units: Units
    budget_s: float | None
    audits: tuple[AuditPlan, ...]
    batch_size: int

    @property
    def estimated_s(self) -> float:
        """The whole run's estimated seconds."""
        return sum(a.estimated_s for a in self.audits)

    def get(self, audit_id: str) -> AuditPlan | None:
        """The share of ``audit_id`` (None when it is not planned)."""
        return next((a for a in self.audits if a.id == audit_id), None)

    def to_dict(self, used: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Plain data for the report's ``run.plan``; ``used`` adds each audit's real seconds."""
        audits = [
            a.to_dict() | ({"used_s": round(used[a.id], 3)} if used and a.id in used else {}) for a in self.audits
        ]
        return {
            "budget_s": self.budget_s,
            "estimated_s": round(self.estimated_s, 3),
            "batch_size": self.batch_size,
            "units": self.units.to_dict(),
            "audits": audits,
        }

    def describe(self) -> list[str]:
        """Human-readable lines (``innaudit run --plan``)."""
        u = self.units
        b = self.batch_size
        lines = [
            f"plan: d = {u.dim}, batch {b}; measured per sample at that batch: forward "
            f"{_ms(u.forward.at(b))}, inverse {_ms(u.inverse.at(b))}, VJP {_ms(u.vjp.at(b))}, "
            f"JVP {_ms(u.jvp.at(b))}",
            f"budget: {'none' if self.budget_s is None else _duration(self.budget_s)}; "
            f"estimated total {_duration(self.estimated_s)}",
        ]
        if self.budget_s is not None and self.estimated_s > self.budget_s:
            lines.append(
                f"the estimate exceeds the budget by {_duration(self.estimated_s - self.budget_s)}: "
                "innaudit run refuses this plan (exit 2); give a longer --budget or --skip audits"
            )
        for a in self.audits:
            method = f", {a.method}" if a.method else ""
            cut = f"  (cut: {a.cut})" if a.cut else ""
            lines.append(
                f"  {a.id:<10} {a.samples:>6} samples x {a.sets} set(s){method}: ~{_duration(a.estimated_s)}{cut}"
            )
        return lines


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3g} ms"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# -- measuring ---------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Any, device: torch.device) -> float:
    """Seconds of one call of ``fn``: the faster of two, after a warm-up call."""
    fn()
    best = math.inf
    for _ in range(2):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _flat(z: Any) -> Tensor:
    return z if isinstance(z, Tensor) else torch.cat([t.reshape(len(t), -1) for t in z], 1)


KINDS = ("forward", "inverse", "vjp", "jvp", "dense")
"""The kinds of work :func:`measure_units` can time."""


def _timed_or(fallback: float, wanted: bool, fn: Any, device: torch.device) -> float:
    """:func:`_timed` of ``fn`` when ``wanted`` and it runs, else ``fallback`` (a call that fails
    is the audits' finding, reported there; here it is only costed)."""
    if not wanted:
        return fallback
    try:
        return _timed(fn, device)
    except KeyboardInterrupt:
        raise
    except BaseException:
        return fallback


def _call_seconds(model: InvertibleModel, x: Tensor, kinds: Collection[str]) -> tuple[float, float, float, float]:
    """Seconds of one forward, inverse, VJP and JVP of ``model`` on the batch ``x``. A kind not
    in ``kinds``, or that fails, is estimated: an inverse as a forward, a VJP as three forwards,
    a JVP as two VJPs (the double-backward fallback of :mod:`innaudit.linalg`)."""
    device = x.device
    with torch.no_grad():
        z = model.forward(x)
    forward_s = _timed(lambda: model.forward(x), device)
    inverse_s = _timed_or(forward_s, "inverse" in kinds, lambda: model.inverse(z), device)

    def vjp() -> None:
        t = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = _flat(model.forward(t, grad=True))
            torch.autograd.grad(out, t, torch.ones_like(out))

    def jvp() -> None:
        torch.func.jvp(lambda t: _flat(model.forward(t, grad=True)), (x,), (torch.ones_like(x),))

    vjp_s = _timed_or(3 * forward_s, "vjp" in kinds or "jvp" in kinds, vjp, device)
    return forward_s, inverse_s, vjp_s, _timed_or(2 * vjp_s, "jvp" in kinds, jvp, device)


def measure_units(model: InvertibleModel, x: Tensor, kinds: Collection[str] = KINDS) -> Units:
    """Time a forward, inverse, VJP and JVP of ``model`` on one sample and on the batch ``x``
    (cost per call and per sample), and a float64 SVD.

    Only the ``kinds`` the planned audits use are timed (a JVP's first call alone imports
    torch's function transforms, seconds); the others are estimated as :func:`_call_seconds`
    says, dense work as 1 ns per ``d^3``.
    """
    one = _call_seconds(model, x[:1], kinds)
    many = _call_seconds(model, x, kinds) if len(x) > 1 else one
    fits = [Timing.fit(a, b, len(x)) for a, b in zip(one, many, strict=True)]
    dense_s = 1e-9
    if "dense" in kinds:
        size = 256
        a = torch.randn(size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        dense_s = _timed(lambda: torch.linalg.svdvals(a), torch.device("cpu")) / size**3
    return Units(fits[0], fits[1], fits[2], fits[3], dense_s, len(x), int(x[0].numel()))


def kinds_used(costs: Iterable[AuditCost]) -> set[str]:
    """The kinds of work (:data:`KINDS`) that ``costs`` spend: what is worth timing."""
    used = {"forward"}
    for cost in costs:
        for part in (cost.per_sample, cost.per_set):
            used |= {k for k in ("inverse", "vjp", "jvp", "dense") if getattr(part, k) > 0}
            if part.vmap_vjp > 0:
                used.add("vjp")
            if part.tangent > 0 or part.backward > 0:  # priced from the measured JVP and VJP
                used |= {"jvp", "vjp"}
    return used


def activation_bytes(model: InvertibleModel, x: Tensor) -> int:
    """Bytes autograd saves for one VJP of ``model`` at the batch ``x`` (the activations)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: Tensor) -> Tensor:
        if t.numel():
            seen[(t.untyped_storage().data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t

    t = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda p: p):
        _flat(model.forward(t, grad=True))
    return sum(seen.values()) + 4 * x.numel() * x.element_size()


def free_memory(device: torch.device) -> int:
    """Free bytes on ``device`` (``MemAvailable`` on the CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def auto_batch_size(model: InvertibleModel, x: Tensor, cap: int = 500, margin: float = 0.25) -> int:
    """The largest batch (at most ``cap``) whose VJP activations fit ``margin`` of free memory."""
    try:
        per_sample = max(1, activation_bytes(model, x[:1]))
    except KeyboardInterrupt:
        raise
    except BaseException:  # not differentiable: the audits report it
        return cap
    return int(max(1, min(cap, margin * free_memory(x.device) // per_sample)))


# -- planning ----------------------------------------------------------------------------------
def floor_samples(requested: int) -> int:
    """The fewest samples per set a budget may leave an audit: 100 for streaming audits that ask
    for thousands (cheap per sample), otherwise 2 (so the worst of them is still a choice)."""
    return min(requested, 100 if requested >= 1000 else 2)


@dataclass(frozen=True)
class _Speed:
    """How the model runs here: the measured units, the batch size, and whether methods are
    chosen by measured seconds (``timed``, under a budget) or by the input dimension."""

    units: Units
    batch: int
    timed: bool = True


@dataclass(frozen=True)
class _Need:
    """What :func:`make_plan` needs to know of one audit."""

    id: str
    cost: AuditCost
    units: Units
    batch: int
    capacities: tuple[int, ...]
    requested: int
    method: str
    scalable: bool
    factor: float = 1.0
    overrides: Mapping[str, Any] = field(default_factory=dict)
    cut: str = ""
    timed: bool = True
    """Whether ``method`` was chosen by measured seconds (under a budget)."""
    ceiling: float = math.inf
    """Seconds the floor is planned at, at most (:data:`PACED_INSIDE` audits under a budget)."""

    def passes(self, n: int) -> float:
        """Model passes with ``n`` samples per set."""
        return sum(min(n, c) * self.cost.per_sample.passes + self.cost.per_set.passes for c in self.capacities)

    def seconds(self, n: int) -> float:
        """Estimated seconds with ``n`` samples per set."""
        total = 0.0
        for cap in self.capacities:
            m = min(n, cap)
            total += m * self.cost.per_sample.seconds(self.units, _per_call(m, self.batch))
            total += self.cost.per_set.seconds(self.units, 1)
        if n <= floor_samples(self.requested) and self.factor * total > self.ceiling:
            return self.ceiling  # its deadline stops it inside its work
        return self.factor * total


def _per_call(samples: int, batch: int) -> int:
    """The samples each call gets when ``samples`` run in batches of at most ``batch``: a whole
    number of calls, ``ceil(samples / batch)``, each paying its per-call overhead (rounded down,
    so the per-call share is never under-counted)."""
    if samples <= 0:
        return max(1, batch)
    return max(1, samples // math.ceil(samples / max(1, batch)))


def _choose(costs: Mapping[str, AuditCost], wanted: str, speed: _Speed, n: int) -> str:
    """The method to run: ``wanted`` when the audit has it; for ``auto`` the cheaper in measured
    seconds (``speed.timed``, under a budget) or the one the input dimension picks (no budget)."""
    units, batch, timed = speed.units, speed.batch, speed.timed
    if wanted in costs:
        return wanted
    if len(costs) == 1:
        return next(iter(costs))
    if not timed and {"exact", "matrix-free"} <= set(costs):
        return "exact" if units.dim <= AUTO_EXACT_DIM else "matrix-free"

    def seconds(m: str) -> float:
        c = costs[m]
        return n * c.per_sample.seconds(units, min(batch, max(1, n))) + c.per_set.seconds(units, 1)

    best = min(costs, key=seconds)
    if "exact" in costs and best != "exact" and seconds("exact") <= EXACT_PREFERENCE * seconds(best):
        return "exact"
    return best


def _shrunk(
    audit: type[Audit], need: _Need, options: Mapping[str, Any], share: float, remake: Callable[..., _Need]
) -> _Need:
    """``need`` with the audit's ``shrinkable`` options halved (not below their least values)
    until its floor fits ``share`` seconds; the cut names what was lowered. ``remake(options)``
    is the need with other options."""
    lowered = dict(options)
    while need.seconds(floor_samples(need.requested)) > share:
        smaller = {k: max(least, int(lowered[k]) // 2) for k, least in audit.shrinkable.items()}
        if all(smaller[k] == int(lowered[k]) for k in smaller):
            break
        trial = remake({**lowered, **smaller})
        if trial.seconds(floor_samples(need.requested)) >= need.seconds(floor_samples(need.requested)):
            break  # these options do not drive this method's cost
        lowered.update(smaller)
        need = trial
    changed = {k: lowered[k] for k in audit.shrinkable if lowered[k] != options[k]}
    cut = ", ".join(f"{k} {options[k]} -> {v}" for k, v in changed.items())
    return replace(need, overrides=changed, cut=cut)


def _fitting(
    audit: type[Audit], need: _Need, options: Mapping[str, Any], share: float, remake: Callable[..., _Need]
) -> _Need:
    """``need``, or under ``method: auto`` its matrix-free twin when the exact method's floor
    does not fit ``share`` seconds: exact Jacobians only where the cost model says they fit.
    ``remake(options)`` is the need with other options."""
    if (
        need.method != "exact"
        or options.get("method") != "auto"
        or need.seconds(floor_samples(need.requested)) <= share
    ):
        return need
    if "matrix-free" not in audit.costs(need.units.dim, options):
        return need
    return remake({**options, "method": "matrix-free"})


def _need(
    audit: type[Audit], options: Mapping[str, Any], datasets: Sequence[Dataset], samples: int, speed: _Speed
) -> _Need:
    capacities = tuple(audit.capacities(datasets, options, samples))
    requested = min(int(options.get("samples", samples)), samples)
    costs = audit.costs(speed.units.dim, options)
    wanted = str(options.get("method", ""))
    method = _choose(costs, wanted, speed, min(requested, max(capacities, default=0)))
    return _Need(
        audit.id,
        costs[method],
        speed.units,
        min(speed.batch, audit.batch_cap.get(method, speed.batch)),
        capacities,
        requested,
        method,
        audit.scalable,
        timed=speed.timed,
    )


def _share(needs: Sequence[_Need], budget_s: float | None) -> dict[str, int]:
    """Samples per set for each need: the requested ones, or a budget shared cheapest first."""
    if budget_s is None:
        return {n.id: n.requested for n in needs}
    samples = {n.id: floor_samples(n.requested) if n.scalable else n.requested for n in needs}
    left = SAFETY * budget_s - sum(n.seconds(samples[n.id]) for n in needs)
    order = sorted((n for n in needs if n.scalable), key=lambda n: n.seconds(n.requested))
    for i, n in enumerate(order):
        share = max(0.0, left) / (len(order) - i)
        base = n.seconds(samples[n.id])
        if n.seconds(n.requested) - base <= share:
            samples[n.id] = n.requested
        else:
            lo, hi = samples[n.id], n.requested  # largest n with seconds(n) - base <= share
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if n.seconds(mid) - base <= share else (lo, mid - 1)
            samples[n.id] = lo
        left -= n.seconds(samples[n.id]) - base
    return samples


def replan(needs: Sequence[_Need], budget_s: float | None, factor: float = 1.0) -> tuple[AuditPlan, ...]:
    """Audit shares for ``needs`` under ``budget_s`` with every estimate scaled by ``factor``."""
    scaled = [replace(n, factor=factor) for n in needs]
    samples = _share(scaled, budget_s)
    out = []
    for n in scaled:
        got = samples[n.id]
        top = max(n.capacities, default=0)
        cuts = [n.cut] if n.cut else []
        if min(got, top) < min(n.requested, top):
            cuts.append(f"{min(n.requested, top)} -> {min(got, top)} samples per set")
        raw = replace(n, factor=1.0)
        out.append(
            AuditPlan(
                n.id,
                got,
                n.requested,
                n.method,
                len(n.capacities),
                n.seconds(got),
                "; ".join(cuts),
                n.overrides,
                raw.seconds(got),
                raw.passes(got),
            )
        )
    return tuple(out)


def make_plan(
    model: InvertibleModel,
    datasets: Sequence[Dataset],
    config: Config,
    audit_ids: Sequence[str],
    measured: tuple[Units, int] | None = None,
) -> tuple[Plan, tuple[_Need, ...]]:
    """Plan ``audit_ids`` under ``config.budget`` with the ``measured`` units and batch size
    (measured here when not given).

    Returns the plan and the per-audit needs the runner re-plans with as audits finish.
    """
    from innaudit.audits import REGISTRY

    units, batch_size = measured if measured is not None else (None, None)
    batch = batch_size or (config.batch_size if isinstance(config.batch_size, int) else 500)
    if units is None:
        device = torch.device(config.device)
        dom = model.info.domain
        x = (
            datasets[0].first(min(batch, 32))
            if datasets and datasets[0].size
            else torch.full((1, *dom.shape), 0.5 * (dom.low + dom.high))
        )
        units = measure_units(model, x.to(device=device, dtype=model.dtype))
    budget = getattr(config, "budget", None)
    speed = _Speed(units, batch, budget is not None)

    def remake(aid: str) -> Callable[..., _Need]:
        return lambda options: _need(REGISTRY[aid], options, datasets, config.samples, speed)

    needs = tuple(remake(aid)(_options(config, aid)) for aid in audit_ids)
    if budget is not None and needs:
        share = SAFETY * budget / len(needs)
        needs = tuple(_fitting(REGISTRY[n.id], n, _options(config, n.id), share, remake(n.id)) for n in needs)
        needs = tuple(
            _shrunk(REGISTRY[n.id], n, _options(config, n.id), share, remake(n.id)) if REGISTRY[n.id].shrinkable else n
            for n in needs
        )
        needs = tuple(_capped(n, share) for n in needs)
    return Plan(units, budget, replan(needs, budget), batch), needs


def _capped(need: _Need, share: float) -> _Need:
    """``need`` with its floor planned at ``share`` seconds at most when it is one of
    :data:`PACED_INSIDE` and its floor does not fit: the deadline stops its loops there."""
    if need.id not in PACED_INSIDE or need.seconds(floor_samples(need.requested)) <= share:
        return need
    note = f"floor {_duration(need.seconds(floor_samples(need.requested)))} > share: its loops stop at the deadline"
    return replace(need, ceiling=share, cut="; ".join(c for c in (need.cut, note) if c))


def _options(config: Config, audit_id: str) -> Mapping[str, Any]:
    from innaudit.audits import REGISTRY

    return config.settings[audit_id].options if audit_id in config.settings else REGISTRY[audit_id].options


# -- the runner's side -------------------------------------------------------------------------
class PlanRun:
    """A plan being carried out: sizes each audit's context, paces it, re-plans after each audit.

    Under a budget each audit gets a deadline when it starts (:meth:`pace`): ``ALLOWANCE``
    times its planned seconds, or its fair part of the time left once the audits after it
    have their floors, whichever is longer, never past what those floors leave. An audit past
    its deadline stops at the next batch with the samples it has (:class:`Pace`), and work a
    batch cannot split (Lanczos iterations, attack steps and restarts) stops at its next step
    (:meth:`Pace.overdue`, single process only); the cut is recorded in the plan, in
    ``run.replans`` and as a report warning. After an audit ends, the
    audits still to run are planned again with the budget left (``budget - elapsed``) and
    their estimates scaled by ``used / model_s`` of the finished audits (their unscaled
    estimates; the factor is kept within [0.2, 4]); an audit :data:`RECHECK` times slower than
    planned re-checks the thread choice once (:func:`innaudit.run.threads.rechecked`).
    """

    def __init__(
        self,
        plan: Plan,
        needs: Sequence[_Need],
        threads: ThreadChoice | None = None,
        probe: Callable[[], float] | None = None,
        quick: Callable[[], float] | None = None,
    ) -> None:
        self.plan = plan
        self.needs = {n.id: n for n in needs}
        self.current = {a.id: a for a in plan.audits}
        self.used: dict[str, float] = {}
        self.started = time.monotonic()
        self.threads = threads or ThreadChoice(torch.get_num_threads(), "unmeasured", available_cores())
        self.probe, self.quick = probe, quick
        self.replans: list[dict[str, Any]] = []
        self.paces: dict[str, Pace] = {}
        self.factor = 1.0

    def context(self, audit_id: str, ctx: AuditContext) -> AuditContext:
        """``ctx`` with the planned method, and under a budget the planned samples per set and
        the audit's :class:`Pace` (its deadline starts now)."""
        share = self.current.get(audit_id)
        if share is None:
            return ctx
        options = dict(ctx.settings.options)
        if share.method and options.get("method") == "auto":
            options["method"] = share.method
        options.update(share.overrides)
        datasets, samples = ctx.datasets, ctx.samples
        pace, overdue, left = ctx.pace, ctx.overdue, ctx.left
        if self.plan.budget_s is not None and self.needs[audit_id].scalable:
            samples = max(1, min(ctx.samples, share.samples))
            if "samples" in options:
                options["samples"] = max(1, min(int(options["samples"]), samples))
            datasets = [replace(d, size=min(d.size, samples)) for d in ctx.datasets]
            pace = self.paces[audit_id] = Pace(time.monotonic() + self._allowance(audit_id))
            left = pace.left
            if ctx.shard.single:  # ranks of a job stop their units alike only at batches
                overdue = pace.overdue
        return replace(
            ctx,
            settings=replace(ctx.settings, options=options),
            datasets=datasets,
            samples=samples,
            pace=pace,
            overdue=overdue,
            left=left,
        )

    def _allowance(self, audit_id: str) -> float:
        """Seconds ``audit_id`` may take from now (see the class docstring)."""
        assert self.plan.budget_s is not None
        left = self.plan.budget_s - (time.monotonic() - self.started)
        later = [a.id for a in self.plan.audits if a.id not in self.used and a.id != audit_id]
        floors = sum(self.needs[a].seconds(floor_samples(self.needs[a].requested)) for a in later) * self.factor
        room = max(0.0, left - floors)
        return min(room, max(ALLOWANCE * self.current[audit_id].estimated_s, room / (len(later) + 1)))

    def finished(self, audit_id: str, seconds: float) -> None:
        """Record an audit's time (and a budget cut) and re-plan the rest with the budget left."""
        self.used[audit_id] = seconds
        pace = self.paces.get(audit_id)
        where = pace.where() if pace is not None else None
        if where is not None:
            self.replans.append({"audit": audit_id, "stopped_at": where, "used_s": seconds})
        rest = [self.needs[a.id] for a in self.plan.audits if a.id not in self.used]
        if self.plan.budget_s is None or not rest:
            return
        estimated = sum(self.current[a].model_s for a in self.used if a in self.current)
        self.factor = min(4.0, max(0.2, sum(self.used.values()) / estimated)) if estimated > 0 else 1.0
        left = self.plan.budget_s - (time.monotonic() - self.started)
        self._recheck(audit_id, seconds)
        self.current.update({a.id: a for a in replan(rest, max(0.0, left), self.factor)})
        self.replans.append(
            {
                "after": audit_id,
                "left_s": round(left, 3),
                "factor": round(self.factor, 3),
                "threads": self.threads.threads,
            }
        )

    def _recheck(self, audit_id: str, seconds: float) -> None:
        """Measure the thread choice again when ``audit_id`` took :data:`RECHECK` times its plan."""
        planned = self.current[audit_id].model_s if audit_id in self.current else 0.0
        if self.probe is None or planned <= 0 or seconds < RECHECK * planned:
            return
        probe, self.probe = self.probe, None  # once a run: a probe costs time the budget counts
        try:
            self.threads = rechecked(self.threads, probe, self.quick)
        except KeyboardInterrupt:
            raise
        except BaseException:  # a model that fails now is the next audit's finding
            return

    def cut_warnings(self) -> list[str]:
        """One report warning per audit the budget stopped early."""
        return [
            f"budget: {r['audit']} stopped early at {r['stopped_at']} per its share of --budget "
            f"{_duration(cast(float, self.plan.budget_s))}; its results are on the samples it reached"
            for r in self.replans
            if "audit" in r
        ]

    def over_budget(self) -> str | None:
        """Why the plan cannot fit its budget (its fewest samples already exceed it), or None."""
        budget = self.plan.budget_s
        if budget is None or self.plan.estimated_s <= max(budget, 1.0):  # a second is never refused
            return None
        worst = sorted(self.plan.audits, key=lambda a: -a.estimated_s)[:3]
        parts = ", ".join(f"{a.id} {_duration(a.estimated_s)}" for a in worst)
        return (
            f"--budget {_duration(budget)} is too short for this run: with the fewest samples each audit "
            f"allows it is estimated at {_duration(self.plan.estimated_s)} ({parts}); give --budget "
            f"{math.ceil(self.plan.estimated_s / 60)}m or more, leave audits out with --skip, "
            "or see --plan"
        )

    def describe(self) -> list[str]:
        """The plan's lines (``innaudit run --plan``) with the thread choice."""
        t = self.threads
        timings = ", ".join(f"{n} thread(s) {_duration(s)}" for n, s in sorted(t.timings.items()))
        return [*self.plan.describe(), f"threads: {t.threads} ({t.source}{': ' + timings if timings else ''})"]

    def report(self) -> dict[str, Any]:
        """``run.plan`` of the report: the plan as carried out, with the seconds used."""
        audits = []
        for a in self.plan.audits:
            got = self.current[a.id]
            pace = self.paces.get(a.id)
            where = pace.where() if pace is not None else None
            if where is not None:
                note = f"stopped by the budget at {where}"
                got = replace(got, cut="; ".join(c for c in (got.cut, note) if c))
            audits.append(got)
        return replace(self.plan, audits=tuple(audits)).to_dict(self.used)


def plan_run(
    model: InvertibleModel,
    datasets: Sequence[Dataset],
    config: Config,
    applies: Callable[[str], bool] = lambda aid: True,
    workers: int = 1,
) -> PlanRun:
    """Resolve ``batch_size: auto``, measure, and plan the selected audits that apply.

    ``workers`` processes share the work (a ``torchrun`` job): the measured per-sample costs
    are divided by it, so a budget is the job's wall-clock time."""
    from innaudit.audits import REGISTRY, selected_audits

    device = torch.device(config.device)
    dom = model.info.domain
    x = (
        datasets[0].first(32)
        if datasets and datasets[0].size
        else torch.full((1, *dom.shape), 0.5 * (dom.low + dom.high))
    ).to(device=device, dtype=model.dtype)
    batch = config.batch_size if isinstance(config.batch_size, int) else 500
    ids = [aid for aid in selected_audits(config) if aid not in config.skip and applies(aid)]
    kinds = kinds_used(c for aid in ids for c in REGISTRY[aid].costs(dom.numel, _options(config, aid)).values())
    measured: dict[int, Units] = {}

    def probe() -> float:  # the planned work's seconds with the thread count now set
        units = measure_units(model, x[: min(batch, 32)], kinds)
        measured[torch.get_num_threads()] = units
        return make_plan(model, datasets, replace(config, budget=None), ids, (units.shared(workers), batch))[
            0
        ].estimated_s

    def quick() -> float:  # one forward pass of the probe batch
        return _timed(lambda: model.forward(x[: min(batch, 32)]), device)

    try:  # a model that fails or exits here is reported by the audits, inside their boundary
        if not isinstance(config.batch_size, int):
            batch = auto_batch_size(model, x)
        threads = chosen(getattr(config, "threads", None), probe, quick)
        units = measured.get(threads.threads) or measure_units(model, x[: min(batch, 32)], kinds)
    except KeyboardInterrupt:
        raise
    except BaseException:  # the model fails on a batch: the audits report how; plan with nominal costs
        nominal = Timing(1e-3, 1e-3)
        units = Units(nominal, nominal, nominal, nominal, 1e-9, 0, int(x[0].numel()))
        threads = given(getattr(config, "threads", None)) or ThreadChoice(
            torch.get_num_threads(), "unmeasured", available_cores()
        )
    plan, needs = make_plan(model, datasets, config, ids, (units.shared(workers), batch))
    return PlanRun(plan, needs, threads, probe if threads.source == "measured" else None, quick)
