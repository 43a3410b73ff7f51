"""The ``spectrum`` audit."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, cast

import numpy as np
import torch

from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import late_rows, map_batches, sample_counts, set_progress
from innaudit.audits.cost import AuditCost, jacobian_costs
from innaudit.audits.jacobians import Checks, Spectrum, measure
from innaudit.config.settings import Threshold
from innaudit.core.metrics import Direction, better, neither, rate, worse
from innaudit.core.stats import min_median_max, significant
from innaudit.linalg import choose_method

__all__ = ["SpectrumAudit"]


def _cat(parts: list[Spectrum]) -> Spectrum:
    def join(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    def join_set(name: str) -> np.ndarray:  # a field every Spectrum has
        return np.concatenate([getattr(p, name) for p in parts])

    notes = sorted({p.note for p in parts if p.note})
    return Spectrum(
        parts[0].method,
        join_set("forward_max"),
        join_set("forward_min"),
        join_set("inverse_max"),
        join_set("inverse_min"),
        join("forward_iterations"),
        join("inverse_iterations"),
        join("converged"),
        "; ".join(notes),
        parts[0].derived,
        _stopped(parts),
    )


def _stopped(parts: list[Spectrum]) -> np.ndarray | None:
    """The parts' ``stopped`` flags joined (False for a part none was stopped in); None when no
    part was stopped."""
    if all(p.stopped is None for p in parts):
        return None
    return np.concatenate([p.stopped if p.stopped is not None else np.zeros(len(p.forward_max), bool) for p in parts])


def _dim(ctx: AuditContext) -> int:
    """The dimension of one input sample."""
    return int(ctx.model.info.domain.numel)


SVD_RESOLUTION = 1e-13
"""A singular value below ``SVD_RESOLUTION * sigma_max`` is below what a float64 SVD resolves
(its backward error is a few hundred ``eps64 * sigma_max`` at these sizes): the Jacobian is
singular to working precision, and ``sigma_min`` is reported as 0."""


def _singular(sv_min: np.ndarray, sv_max: np.ndarray) -> np.ndarray:
    """Samples whose Jacobian is singular (``sigma_min <= SVD_RESOLUTION * sigma_max``)."""
    return (sv_min <= SVD_RESOLUTION * sv_max) & np.isfinite(sv_max)


def singular_to(dtype: torch.dtype) -> float:
    """The relative resolution of a Jacobian computed in ``dtype``: its entries carry rounding of
    ``eps`` relative, so singular values below ``eps * sigma_max`` are not resolved and the
    Jacobian is singular to that precision (``kappa >= 1 / eps``: the inverse can lose every
    digit). Never below what the float64 SVD resolves (:data:`SVD_RESOLUTION`)."""
    return max(float(torch.finfo(dtype).eps), SVD_RESOLUTION)


def _singular_at(sv_min: np.ndarray, sv_max: np.ndarray, resolution: float) -> np.ndarray:
    """Samples whose ``sigma_min <= resolution * sigma_max`` (a finite ``sigma_max``)."""
    return (sv_min <= resolution * sv_max) & np.isfinite(sv_max)


def _condition(sv_max: np.ndarray, sv_min: np.ndarray) -> np.ndarray:
    """``sigma_max / sigma_min`` per sample: inf for a singular Jacobian, NaN where either value
    is NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = sv_max / sv_min
    return np.where(_singular(sv_min, sv_max), math.inf, out)


UNIT_SAMPLES = 16
"""Samples per Jacobian batch at most, whatever ``--batch-size``: a vmapped exact Jacobian holds
``d`` rows per sample, so larger batches cost memory without being faster, and the default 64
samples of a set become 4 work units a ``torchrun`` job can share out (the same units for any
number of ranks, so the report does not change with it)."""
LANCZOS_UNIT_SAMPLES = 32
"""Samples per matrix-free batch at most: each Lanczos iteration is one batched JVP and VJP
whose per-call overhead (forward-mode dispatch through every layer) is paid once per batch, so
a batch of 32 spends far less per sample than two of 16; the Krylov basis holds
``(max_iter + 1) d`` float64 numbers per sample."""


@register
class SpectrumAudit(Audit):
    r"""Extreme singular values of the Jacobians of ``F`` at ``x`` and of ``F^-1`` at ``z = F(x)``.

    Property: the local Lipschitz constants of a bijection are its Jacobian's extreme singular
    values, ``Lip_x(F) = sigma_max(J_F(x))`` and ``Lip_z(F^-1) = sigma_max(J_F^-1(z)) =
    1 / sigma_min(J_F(x))``. float32 rounding of size ``u ~ 6e-8`` in ``z`` becomes an error of
    up to ``Lip(F^-1) u ||z||`` in ``x``, so the condition number ``kappa = sigma_max /
    sigma_min`` says how far a sample is from a failed round trip before one happens (Behrmann
    et al., AISTATS 2021, section 2; the paper's code took the full SVD of one sample's
    Jacobian).

    Method (option ``method``): ``exact`` builds each sample's full Jacobian with
    ``torch.func`` (vmap over jacrev) and takes its SVD in float64, both directions; ``auto``
    takes it while the cost model (``innaudit.run.plan``: ``d`` VJPs and an SVD per sample and
    direction, timed on the model) puts it within 4x of the matrix-free method. ``matrix-free`` runs Lanczos on ``J^T J`` through
    one JVP and one VJP per iteration (``innaudit.linalg``), to relative residual ``tol`` or
    ``max_iter`` iterations, for ``sigma_max`` of both maps; ``sigma_min(J_F) = 1 /
    sigma_max(J_F^-1)``. Both directions cross-check each other in the exact method: ``gap =
    max |log10(sigma_min(J_F) sigma_max(J_F^-1))|`` (and the other pair) is 0 for a consistent
    inverse; a sample whose gap exceeds ``log10(1 + cross_check_tolerance)`` counts in
    ``cross_check.mismatch_fraction``, itself a sign of numerical non-invertibility.

    Metrics per set (over the first ``samples`` samples, ``{min, median, max}`` over the finite
    ones): ``forward.sv_min``, ``forward.sv_max``, ``inverse.*`` alike; the condition numbers as
    the paper names them (its ``condition_num`` and ``inverse_condition_num``):
    ``condition`` = ``forward.condition`` = ``sigma_max(J_F) / sigma_min(J_F)`` and
    ``inverse.condition`` = ``sigma_max(J_F^-1) / sigma_min(J_F^-1)``, infinite for a singular
    Jacobian (``sigma_min = 0`` to the float64 SVD's resolution: then ``max`` is inf);
    ``singular_fraction``, the samples whose Jacobian is singular to the model's precision
    (``sigma_min(J_F) <= eps * sigma_max(J_F)``, ``eps`` of the model's dtype, 1.2e-7 in
    float32: entries computed to ``eps`` relative do not resolve smaller singular values, and
    ``F^-1`` can lose every digit there);
    ``amplification`` (``sigma_max(J_F) * sigma_max(J_F^-1)``, the per-sample amplification of
    relative rounding through the inverse actually computed; equal to ``condition`` for a
    consistent inverse), ``lipschitz.forward`` / ``lipschitz.inverse`` (largest local constants
    seen: lower bounds of the true local constants on the set), ``nonfinite_fraction``
    (Jacobian with NaN/Inf), ``cross_check`` (exact; a NaN or infinite gap is a mismatch) or
    ``iterations`` and ``converged_fraction`` (matrix-free). ``series.values`` keeps the
    per-sample numbers.

    Under ``--budget``, Lanczos stops between iterations once the audit is past its deadline:
    the samples it stopped keep the steps they reached (``iterations``, not converged), their
    ``sigma_max`` values are lower bounds and so are their condition numbers, and
    ``budget_cut_fraction`` (present only then) counts them: above 0 it warns, so a stopped
    spectrum is never a pass (a singular or non-finite Jacobian found before the stop still
    fails).

    A map autograd cannot see through (an inverse under ``torch.no_grad()``) is detected before
    any Jacobian is taken: its spectrum is then the reciprocal of the other map's at the point
    it returns (``J_F^-1(z) = J_F(F^-1(z))^-1``) and the message says so; when neither map can
    be differentiated (or the matrix-free method would need the blind one) the audit is
    ``error`` with the reason. A Jacobian of zeros is never reported.

    Reading a failure: a large ``condition`` with finite round trips is the early stage of an
    exploding inverse; ``forward.sv_min`` near 0 is the inverse's problem (``1/sigma_min``
    multiplies latent rounding). Gate defaults: ``condition.max`` above 1e3 warns (worst-case
    relative round-trip error ``kappa u ~ 1e-4``, roundtrip's warn level); it never fails on
    its own, since ``kappa u`` is a worst case (a diagonal map with ``kappa = 1e5`` still
    round-trips to rounding) and ``roundtrip`` / ``attack`` fail on actual errors; a Jacobian
    singular to the model's precision fails (``singular_fraction`` above 0: ``F`` is not
    invertible there to the precision it computes in); a non-finite Jacobian fails; a
    cross-check mismatch warns.

    References:
        Behrmann, Vicol, Wang, Grosse, Jacobsen, "Understanding and Mitigating Exploding
        Inverses in Invertible Neural Networks", AISTATS 2021 (PMLR 130),
        https://arxiv.org/abs/2006.09347
    """

    id = "spectrum"
    title = "Jacobian singular values of F and F^-1: local Lipschitz constants and conditioning"
    thresholds = {
        "nonfinite_fraction": Threshold(warn=None, fail=0.0),
        "condition.max": Threshold(warn=1e3, fail=None),
        "singular_fraction": Threshold(warn=None, fail=0.0),
        "cross_check.mismatch_fraction": Threshold(warn=0.0, fail=None),
        "budget_cut_fraction": Threshold(warn=0.0, fail=None),
    }
    options = {"samples": 64, "method": "auto", "tol": 1e-4, "max_iter": 64, "cross_check_tolerance": 0.05}
    metrics = (
        neither("method", doc="how the singular values were computed (exact, lanczos)"),
        *(
            m
            for d in ("forward", "inverse")
            for m in (
                better(f"{d}.sv_min", doc=f"smallest singular value of the {d} Jacobian"),
                worse(f"{d}.sv_max", doc=f"largest singular value of the {d} Jacobian"),
                worse(f"{d}.condition", doc="sigma_max / sigma_min (the paper's condition number)"),
            )
        ),
        worse("condition", doc="sigma_max(J_F) / sigma_min(J_F), the paper's condition_num"),
        worse("amplification", doc="sigma_max(J_F) * sigma_max(J_F^-1)"),
        rate("singular_fraction", "samples whose Jacobian is singular to the model's precision"),
        worse("lipschitz.forward", doc="largest local Lipschitz estimate"),
        worse("lipschitz.inverse"),
        neither("n", doc="samples"),
        rate("nonfinite_fraction", "samples with a non-finite Jacobian"),
        worse("cross_check.max_log10_gap", doc="forward vs inverse spectrum disagreement"),
        rate("cross_check.mismatch_fraction", "samples whose spectra disagree"),
        neither("cross_check.tolerance"),
        neither("tolerance", doc="Lanczos tolerance"),
        neither("iterations.forward", doc="Lanczos iterations"),
        neither("iterations.inverse"),
        rate("converged_fraction", "Lanczos runs that converged", Direction.HIGHER_BETTER),
        rate("budget_cut_fraction", "samples whose Lanczos the budget stopped before convergence"),
    )

    shrinkable = {"max_iter": 16}
    batch_cap = {"exact": UNIT_SAMPLES, "matrix-free": LANCZOS_UNIT_SAMPLES}

    @classmethod
    def costs(cls, dim: int, options: Mapping[str, Any]) -> Mapping[str, AuditCost]:
        """Both directions' Jacobians: exact (``d`` VJPs and an SVD each) or Lanczos."""
        return jacobian_costs(dim, int(options["max_iter"]))

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped without data sets."""
        return None if ctx.datasets else "no data sets to take Jacobians at"

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement per data set; batches of at most :data:`UNIT_SAMPLES` samples
        (:data:`LANCZOS_UNIT_SAMPLES` matrix-free) are the work units of a sharded run (the Lanczos start vectors are seeded by (set, batch start),
        not by the rank)."""
        forward = lambda t: ctx.model.forward(t, grad=True)  # noqa: E731
        inverse = lambda t: ctx.model.inverse(t, grad=True)  # noqa: E731
        totals = sample_counts(ctx)
        checks = Checks()  # the autograd checks, once per audit
        late: dict[int, tuple[int, int]] = {}

        def work(unit: tuple[int, int, int]) -> Spectrum:
            index, start, stop = unit
            ds = ctx.datasets[index]
            rows = late_rows(ctx, unit)  # a set begun after the deadline: one sample
            if rows < stop - start:
                late[index] = (rows, stop - start)
            x = ds.make(start, stop)[:rows].to(device=ctx.device, dtype=ctx.model.dtype)
            part = measure(
                forward,
                inverse,
                x,
                method=ctx.option("method"),
                tol=ctx.option("tol"),
                max_iter=ctx.option("max_iter"),
                generator=ctx.generator(ds.name, start),
                stop=ctx.overdue,
                checks=checks,
            )
            return part

        for index, (ds, mine) in enumerate(
            zip(
                ctx.datasets,
                map_batches(
                    ctx,
                    totals,
                    work,
                    min(ctx.batch_size, self.batch_cap[choose_method(ctx.option("method"), _dim(ctx))]),
                    set_progress(ctx, [d.name for d in ctx.datasets], totals),
                    paced=True,
                ),
                strict=True,
            )
        ):
            if not mine:
                continue
            spec = _cat(mine)
            metrics = self._metrics(spec, ctx, singular_to(ctx.model.dtype))
            message = self._message(spec, singular_to(ctx.model.dtype))
            if index in late:  # the samples left out count as cut, with those whose Lanczos stopped
                left_out = late[index][1] - late[index][0]
                stopped = int(spec.stopped.sum()) if spec.stopped is not None else 0
                metrics["budget_cut_fraction"] = (stopped + left_out) / (len(spec.forward_max) + left_out)
                message += (
                    f"; begun after the budget's deadline, this set was measured on {late[index][0]} of its "
                    f"first batch's {late[index][1]} sample(s)"
                )
            yield Measurement(ds.name, metrics, message, {"values": self._series(spec)})

    def _metrics(self, s: Spectrum, ctx: AuditContext, resolution: float | None = None) -> dict[str, object]:
        resolution = singular_to(torch.float32) if resolution is None else resolution
        amplification = s.forward_max * s.inverse_max
        bad = ~(np.isfinite(s.forward_max) & np.isfinite(s.inverse_max))
        m: dict[str, object] = {
            "n": len(amplification),
            "method": s.method,
            "nonfinite_fraction": float(bad.mean()),
            "singular_fraction": float(_singular_at(s.forward_min, s.forward_max, resolution).mean()),
            "forward": {
                "sv_min": min_median_max(np.where(_singular(s.forward_min, s.forward_max), 0.0, s.forward_min)),
                "sv_max": min_median_max(s.forward_max),
                "condition": min_median_max(_condition(s.forward_max, s.forward_min), inf_counts=True),
            },
            "inverse": {
                "sv_min": min_median_max(s.inverse_min),
                "sv_max": min_median_max(s.inverse_max),
                "condition": min_median_max(_condition(s.inverse_max, s.inverse_min), inf_counts=True),
            },
            "condition": min_median_max(_condition(s.forward_max, s.forward_min), inf_counts=True),
            "amplification": min_median_max(amplification, inf_counts=True),
            "lipschitz": {
                "forward": min_median_max(s.forward_max)["max"],
                "inverse": min_median_max(s.inverse_max)["max"],
            },
        }
        if s.method == "exact":
            gap = np.where(np.isnan(s.cross_gap), math.inf, s.cross_gap)
            limit = math.log10(1 + ctx.option("cross_check_tolerance"))
            m["cross_check"] = {
                "max_log10_gap": float(gap.max()) if gap.size else math.nan,
                "mismatch_fraction": float((~(gap <= limit)).sum() / len(gap)) if len(gap) else 0.0,
                "tolerance": float(ctx.option("cross_check_tolerance")),
            }
        else:  # matrix-free: the iteration counts and convergence flags are set
            m["iterations"] = {
                "forward": min_median_max(cast(np.ndarray, s.forward_iterations).astype(float)),
                "inverse": min_median_max(cast(np.ndarray, s.inverse_iterations).astype(float)),
            }
            m["converged_fraction"] = float(cast(np.ndarray, s.converged).mean())
            m["tolerance"] = float(ctx.option("tol"))
            if s.stopped is not None:
                m["budget_cut_fraction"] = float(s.stopped.mean())
        return m

    @staticmethod
    def _message(s: Spectrum, resolution: float) -> str:
        condition = _condition(s.forward_max, s.forward_min)
        singular = _singular_at(s.forward_min, s.forward_max, resolution)
        finite = np.isfinite(condition)
        if singular.any():
            i = int(np.argmax(singular))
            zero = _singular(s.forward_min, s.forward_max)[i]
            shown = "sigma_min(J_F) = 0, condition inf" if zero else f"condition {condition[i]:.3g}"
            text = (
                f"{int(singular.sum())} of {len(singular)} sample(s) with a Jacobian singular to "
                f"the model's precision (sigma_min(J_F) <= {resolution:.3g} sigma_max; first: sample "
                f"{i}, {shown}; the layers audit names the block)"
            )
        elif not finite.any():
            return "no sample has a finite Jacobian" + (f"; {s.note}" if s.note else "")
        else:
            i = int(np.nanargmax(np.where(finite, condition, -np.inf)))
            text = (
                f"worst condition {condition[i]:.3g} at sample {i} (sigma_min(J_F) = "
                f"{s.forward_min[i]:.3g}, sigma_max(J_F) = {s.forward_max[i]:.3g})"
            )
        broken = ~(np.isfinite(s.forward_max) & np.isfinite(s.inverse_max))
        if broken.any():
            text += f"; {int(broken.sum())} sample(s) with a non-finite Jacobian"
        if s.stopped is not None:
            text += (
                f"; the budget stopped Lanczos on {int(s.stopped.sum())} of {len(s.stopped)} sample(s) before "
                "convergence (the iterations they reached are reported; their condition numbers are lower bounds)"
            )
        return text + (f"; {s.note}" if s.note else "")

    @staticmethod
    def _series(s: Spectrum) -> dict[str, list[float]]:
        out = {
            "forward.sv_min": significant(s.forward_min),
            "forward.sv_max": significant(s.forward_max),
            "inverse.sv_max": significant(s.inverse_max),
            "condition": significant(_condition(s.forward_max, s.forward_min)),
            "amplification": significant(s.forward_max * s.inverse_max),
        }
        if s.method == "exact":
            out["cross_check.log10_gap"] = significant(s.cross_gap)
        return out
