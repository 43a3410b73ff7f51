"""What audits cost, in model evaluations, and the measured seconds one evaluation takes.

Each audit states its cost per sample (and per set) as a :class:`Cost`: passes of ``F`` and
``F^-1``, vector-Jacobian and Jacobian-vector products, exact Jacobians (``vmap`` over basis
vectors) and dense float64 work. The planner (:mod:`innaudit.run.plan`) measures a model's calls
once (:class:`Units`) and turns costs into seconds, to choose methods and size samples.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field

__all__ = ["LANCZOS_SHARE", "AuditCost", "Cost", "Timing", "Units", "jacobian_costs"]


@dataclass(frozen=True)
class Cost:
    """Model evaluations: passes of ``F`` and ``F^-1``, VJPs, JVPs, VJPs that ``vmap`` batches
    over basis vectors (an exact Jacobian), and dense float64 work in units of ``d^3``;
    ``tangent`` and ``backward`` are the derivative passes alone of a JVP and a VJP, without the
    forward pass each includes: a JVP whose primal pass is shared (``vmap`` over tangents) and
    a VJP through a graph kept from one forward pass (a ``torch.func.vjp`` closure)."""

    forward: float = 0.0
    inverse: float = 0.0
    vjp: float = 0.0
    jvp: float = 0.0
    vmap_vjp: float = 0.0
    dense: float = 0.0
    tangent: float = 0.0
    backward: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __mul__(self, k: float) -> Cost:
        return Cost(*(a * k for a in astuple(self)))

    __rmul__ = __mul__

    def seconds(self, units: Units, batch: int = 1) -> float:
        """Estimated wall time of these evaluations per sample, run in batches of ``batch``."""
        b = max(1, batch)
        return (
            self.forward * units.forward.at(b)
            + self.inverse * units.inverse.at(b)
            + self.vjp * units.vjp.at(b)
            + self.jvp * units.jvp.at(b)
            + self.vmap_vjp * units.vjp.per_sample
            + self.dense * units.dense_s
            + self.tangent * _derivative_pass(units.jvp, units.forward, b)
            + self.backward * _derivative_pass(units.vjp, units.forward, b)
        )

    @property
    def passes(self) -> float:
        """Model passes, counting a VJP or JVP as two (the map and its derivative) and a
        ``tangent`` or ``backward`` pass as one."""
        return self.forward + self.inverse + 2 * (self.vjp + self.jvp + self.vmap_vjp) + self.tangent + self.backward


def _derivative_pass(full: Timing, forward: Timing, batch: int) -> float:
    """Seconds per sample of a JVP's or VJP's derivative pass alone: the measured JVP or VJP
    less its forward pass, and at least a forward pass (the derivative applies every linear
    layer the forward pass applies)."""
    return max(full.at(batch) - forward.at(batch), forward.at(batch))


@dataclass(frozen=True)
class AuditCost:
    """An audit's cost: per sample of a set, and once per set (fixed work such as traced blocks)."""

    per_sample: Cost = field(default_factory=Cost)
    per_set: Cost = field(default_factory=Cost)


@dataclass(frozen=True)
class Timing:
    """One kind of model call: ``seconds(batch) = per_call + batch * per_sample``."""

    per_call: float
    per_sample: float

    def at(self, batch: int) -> float:
        """Seconds per sample in batches of ``batch``."""
        return self.per_sample + self.per_call / max(1, batch)

    @classmethod
    def fit(cls, one: float, many: float, batch: int) -> Timing:
        """From the seconds of a batch of 1 and of a batch of ``batch``."""
        slope = max(0.0, (many - one) / (batch - 1)) if batch > 1 else one
        return cls(max(0.0, one - slope), max(slope, 1e-9))


@dataclass(frozen=True)
class Units:
    """Measured costs of one forward, inverse, VJP and JVP, and seconds per dense ``d^3``."""

    forward: Timing
    inverse: Timing
    vjp: Timing
    jvp: Timing
    dense_s: float
    batch: int
    dim: int

    def shared(self, workers: int) -> Units:
        """The costs seen by a job whose ``workers`` processes each take ``1/workers`` of the
        samples: every time divided by ``workers`` (``self`` for one)."""
        if workers <= 1:
            return self

        def part(t: Timing) -> Timing:
            return Timing(t.per_call / workers, t.per_sample / workers)

        return Units(
            part(self.forward),
            part(self.inverse),
            part(self.vjp),
            part(self.jvp),
            self.dense_s / workers,
            self.batch,
            self.dim,
        )

    def to_dict(self) -> dict[str, float]:
        """Plain data for the report: per kind, seconds per call and per sample."""
        out = {
            f"{k}_{p}_s": getattr(getattr(self, k), f"per_{p}")
            for k in ("forward", "inverse", "vjp", "jvp")
            for p in ("call", "sample")
        }
        return out | {"dense_s": self.dense_s, "measured_batch": float(self.batch), "dim": float(self.dim)}


LANCZOS_SHARE = 1.0
"""Share of ``max_iter`` a Lanczos run is planned to use. The cap itself: a trained model's
Jacobian seldom meets the default tolerance early, and a budget planned for fewer iterations is
overrun by the audit that needed them; the re-plan after each audit hands the time a faster run
saved to the audits after it."""


def jacobian_costs(dim: int, max_iter: int, directions: int = 2, share: float = LANCZOS_SHARE) -> dict[str, AuditCost]:
    """Per-sample cost of the extreme singular values of ``directions`` Jacobians: ``exact``
    (``dim`` VJPs and one float64 SVD each) or ``matrix-free`` (Lanczos: at most ``max_iter``
    JVP/VJP pairs each, ``share`` of them expected)."""
    k = directions * max(1.0, share * min(max_iter, dim))
    return {
        "exact": AuditCost(Cost(forward=1, vmap_vjp=directions * dim, dense=directions * float(dim) ** 3)),
        "matrix-free": AuditCost(Cost(forward=1, jvp=k, vjp=k)),
    }
