"""The ``convergence`` audit: iterative inverses, block by block."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

import innaudit.loading.adapters  # noqa: F401  (registers the library solvers)
from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import map_batches, sample_counts, set_progress
from innaudit.audits.cost import AuditCost, Cost
from innaudit.config.settings import Threshold
from innaudit.core.errors import ConfigError
from innaudit.core.metrics import neither, rate, worse
from innaudit.core.stats import per_sample_norm
from innaudit.model.contract import InverseKind, InvertibleModel
from innaudit.model.iterative import IterativeInverse, Solve, solved_direction, solver_for

__all__ = ["Convergence", "iterative_blocks"]


def iterative_blocks(model: InvertibleModel) -> list[tuple[int, InvertibleModel, IterativeInverse]]:
    """``(index, block, solver)`` of every block whose inverse iterates (the model itself, as
    block 0, when it has no blocks and declares a solver)."""
    blocks = list(model.blocks()) or [model]
    found = []
    for i, block in enumerate(blocks):
        solver = solver_for(block.module)
        if solver is not None:
            found.append((i, block, solver))
    return found


@dataclass
class _Solves:
    """One block's solves on one batch, per sample (numpy)."""

    iterations: np.ndarray
    converged: np.ndarray
    cap_hit: np.ndarray
    residual: np.ndarray
    error: np.ndarray
    method: str = ""
    tolerance: float = math.nan
    max_iter: int = 0
    failure: str = ""


@dataclass
class _Part:
    """What one batch gave: per iterative block, the solves at the block's own settings and at
    each tighter tolerance of the sweep (empty for batches past ``sweep_samples``)."""

    own: list[_Solves]
    sweep: list[list[_Solves]] = field(default_factory=list)


def _relative(diff: Tensor, ref: Tensor, floor: float) -> np.ndarray:
    rel = per_sample_norm(diff) / per_sample_norm(ref).clamp_min(floor)
    finite = torch.isfinite(diff.reshape(len(diff), -1)).all(1)
    return torch.where(finite, rel, torch.full_like(rel, math.inf)).cpu().numpy()


def _solve(
    block: InvertibleModel,
    solver: IterativeInverse,
    h: Tensor,
    tolerance: float | None,
    max_iter: int | None,
    max_residual: float,
) -> _Solves:
    """Run the block's solver on its own target and measure the residual with the block's other
    map: for an inverse solver, ``z = F(h)``, ``x_hat = solve(z)``, residual ``||F(x_hat) - z|| /
    ||z||`` and error ``||x_hat - h|| / ||h||``; for a forward solver (the block's forward
    iterates), ``z_hat = solve(h)`` and residual ``||F^-1(z_hat) - h|| / ||h||`` (no exact
    reference, so the error is NaN)."""
    floor = 1e-6 * math.sqrt(h[0].numel())
    direction = solved_direction(solver)
    with torch.no_grad():
        target = block.forward(h) if direction == "inverse" else h
        module = block.module
        was = module.training
        module.eval()
        try:
            out, solve = solver.solve_inverse(target.clone(), tolerance=tolerance, max_iter=max_iter)
        finally:
            module.train(was)
        if direction == "inverse":
            residual = _relative(block.forward(out) - target, target, floor)
            error = _relative(out - h, h, floor)
        else:
            residual = _relative(block.inverse(out) - h, h, floor)
            error = np.full(len(h), math.nan)
    return _judged(solve, out, residual, error, max_residual)


def _judged(solve: Solve, out: Tensor, residual: np.ndarray, error: np.ndarray, max_residual: float) -> _Solves:
    """A solve is converged when the solver's own rule was met, the output is finite and its
    measured residual is at most ``max_residual``: neither a finite number from a solver that ran
    out of iterations nor a solver's claim its output contradicts counts."""
    finite = torch.isfinite(out.reshape(len(out), -1)).all(1).cpu().numpy()
    said = solve.converged.cpu().numpy().astype(bool)
    iterations = solve.iterations.cpu().numpy().astype(np.int64)
    with np.errstate(invalid="ignore"):
        converged = said & finite & np.isfinite(residual) & (residual <= max_residual)
    cap_hit = ~converged & (iterations >= int(solve.max_iter))
    return _Solves(
        iterations, converged, cap_hit, residual, error, solve.method, float(solve.tolerance), int(solve.max_iter)
    )


def _failed(n: int, reason: str) -> _Solves:
    nan = np.full(n, math.nan)
    return _Solves(np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, bool), nan, nan.copy(), failure=reason)


def _stats(values: np.ndarray) -> dict[str, float]:
    """``median``, ``p99``, ``max`` over the values that are not NaN (inf counts)."""
    kept = values[~np.isnan(values)]
    if kept.size == 0:
        return {"median": math.nan, "p99": math.nan, "max": math.nan}
    return {"median": float(np.median(kept)), "p99": float(np.quantile(kept, 0.99)), "max": float(kept.max())}


def _join(parts: Sequence[_Solves]) -> _Solves:
    first = parts[0]

    def joined(key: str) -> np.ndarray:
        return np.concatenate([getattr(p, key) for p in parts])

    return _Solves(
        joined("iterations"),
        joined("converged"),
        joined("cap_hit"),
        joined("residual"),
        joined("error"),
        method=first.method,
        tolerance=first.tolerance,
        max_iter=first.max_iter,
        failure=next((p.failure for p in parts if p.failure), ""),
    )


@register
class Convergence(Audit):
    r"""Iterative inverses, per block and sample: iterations, residual at exit, cap hits, and a
    tolerance sweep.

    Property: a block whose inverse is an iterative solve (residual flows' fixed point ``x <- z -
    g(x)``, bisection of monotonic transforms, Jacobi sweeps of autoregressive flows) returns the
    inverse only if its solver converged. Libraries stop at a cap and return the last iterate,
    often without a word (residual-flows and normflows after 1000 steps with a log line, FrEIA
    ``IResNetLayer`` after a fixed 50 with no check, zuko's bisection clamped to its bracket,
    zuko#20), so a finite output proves nothing. Each block that declares its solver
    (:mod:`innaudit.model.iterative`: the zoo's residual blocks, normflows ``Residual``, FrEIA
    ``IResNetLayer``, zuko monotonic transforms, any block with ``solve_inverse``) is fed its
    own input from the chain ``h``, and with ``z = f(h)``:

        x_hat = solve(z),    residual = ||f(x_hat) - z|| / ||z||,    error = ||x_hat - h|| / ||h||

    the residual measured with the block's own forward map, never taken from the solver. A
    sample's solve has converged when the solver's own stop rule was met before the cap *and*
    ``x_hat`` is finite *and* its residual is at most ``max_residual`` (1e-2 relative: a solver
    that claims convergence its output contradicts is not believed); a sample counts as
    non-converged when any of its blocks did not converge, and that fails the gate. A fixed point is guaranteed to converge
    only when ``Lip(g) < 1`` (Banach); the ``bounds`` audit certifies that.

    Tolerance sweep (option ``sweep``, default 10 and 100): the first ``sweep_samples`` samples
    are solved again with the tolerance divided by each factor (the cap multiplied by
    ``min(factor, sweep_cap_growth)``). If the error falls with the tolerance, the error at the
    block's own setting is the solver's (loosen less, or iterate more); if it stays, it is the
    model's: float rounding amplified by the block's conditioning, which no solver setting
    removes. ``solver_limited_blocks`` counts blocks whose largest error fell at least
    ``3x`` from the own tolerance to the tightest.

    Metrics per set: ``n``, ``blocks``; ``nonconverged_fraction`` and ``cap_hit_fraction``
    (samples with any block unconverged / stopped at its cap); ``iterations``, ``residual``,
    ``error`` (``median``, ``p99``, ``max`` over every block and sample); ``unmeasured_blocks``
    (solvers that raised: a finding, never a pass); ``sweep.x<factor>.*`` (``error_max``,
    ``residual_max``, ``nonconverged_fraction``, ``iterations_mean``); ``solver_limited_blocks``.
    ``series.blocks`` has every block's figures and per-sample ``iterations``, ``residual``,
    ``converged``; ``series.sweep`` the sweep per block.

    Reading a failure: non-converged samples with a certified ``Lip(g) >= 1`` (``bounds``) are
    the architecture's fault (the layer's normalization does not hold); with ``Lip(g) < 1``
    they need more iterations (a cap too low for ``c`` close to 1: the error after ``k`` steps
    is ``c^k / (1 - c)`` times the first step). A bisection outside its bracket means the
    target lies outside what the transform can reach on ``[-B, B]``: the input is out of the
    flow's domain.

    References:
        Behrmann, Grathwohl, Chen, Duvenaud, Jacobsen, "Invertible Residual Networks", ICML 2019,
        https://arxiv.org/abs/1811.00995; Chen, Behrmann, Duvenaud, Jacobsen, "Residual Flows for
        Invertible Generative Modeling", NeurIPS 2019, https://arxiv.org/abs/1906.02735;
        Behrmann, Vicol, Wang, Grosse, Jacobsen, AISTATS 2021, https://arxiv.org/abs/2006.09347
    """

    id = "convergence"
    title = "Iterative inverses: iterations, residual at exit, cap hits, tolerance sweep"
    thresholds = {
        "nonconverged_fraction": Threshold(warn=None, fail=0.0),
        "unmeasured_blocks": Threshold(warn=None, fail=0.0),
        "residual.max": Threshold(warn=1e-3, fail=None),
    }
    options = {"samples": 64, "max_residual": 1e-2, "sweep": (10, 100), "sweep_samples": 16, "sweep_cap_growth": 4}
    metrics = (
        neither("n", doc="samples"),
        neither("blocks", doc="blocks with an iterative inverse"),
        rate("nonconverged_fraction", "samples with a block whose inverse did not converge"),
        rate("cap_hit_fraction", "samples with a block stopped at its iteration cap"),
        worse("iterations", doc="iterations per block solve"),
        worse("residual", doc="||f(x_hat) - z|| / ||z|| per block solve"),
        worse("error", doc="||x_hat - h|| / ||h|| per block solve"),
        worse("unmeasured_blocks", doc="blocks whose solver raised"),
        worse("sweep.*.error_max", doc="largest error at a tighter tolerance"),
        worse("sweep.*.residual_max", doc="largest residual at a tighter tolerance"),
        worse("sweep.*.nonconverged_fraction", unit="fraction", doc="unconverged solves at a tighter tolerance"),
        neither("sweep.*.iterations_mean", doc="mean iterations at a tighter tolerance"),
        neither("solver_limited_blocks", doc="blocks whose error falls with the tolerance"),
        neither("max_residual", doc="the largest residual at exit a converged solve may have"),
    )

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """``sweep``: factors above 1; ``sweep_samples`` >= 0; ``sweep_cap_growth`` >= 1;
        ``max_residual`` > 0."""
        sweep = options.get("sweep", [])
        if not isinstance(sweep, (list, tuple)) or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and f > 1 for f in sweep
        ):
            raise ConfigError(f"convergence.sweep must be a list of factors above 1 (e.g. [10, 100]); got {sweep!r}")
        if int(options.get("sweep_samples", 0)) < 0 or float(options.get("sweep_cap_growth", 1)) < 1:
            raise ConfigError("convergence.sweep_samples must be >= 0 and convergence.sweep_cap_growth >= 1")
        if not float(options.get("max_residual", 1.0)) > 0:
            raise ConfigError(f"convergence.max_residual must be > 0; got {options.get('max_residual')!r}")

    @classmethod
    def costs(cls, dim: int, options: Mapping[str, Any]) -> Mapping[str, AuditCost]:
        """About one inverse and two forward passes per sample, and the sweep again per factor
        on ``sweep_samples`` samples (the solvers' iterations are inside the inverse)."""
        sweeps = len(options.get("sweep", []))
        return {
            "": AuditCost(
                Cost(forward=2, inverse=1),
                Cost(forward=2 * sweeps, inverse=sweeps) * int(options.get("sweep_samples", 0)),
            )
        }

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped when no block inverts iteratively (said so when the model declares an
        iterative inverse that no block exposes)."""
        if iterative_blocks(ctx.model):
            return None
        if ctx.model.info.inverse_kind is InverseKind.ITERATIVE:
            return (
                "the model declares an iterative inverse, but no block exposes its solver; give the "
                "block solve_inverse(z, tolerance=None, max_iter=None) -> (x, Solve) (innaudit.model.iterative)"
            )
        return "no block inverts iteratively"

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement per set; the batches are the work units of a sharded run."""
        found = iterative_blocks(ctx.model)
        chain = list(ctx.model.blocks()) or [ctx.model]
        factors = [float(f) for f in ctx.option("sweep")]
        sweep_n = int(ctx.option("sweep_samples"))
        growth = float(ctx.option("sweep_cap_growth"))
        limit = float(ctx.option("max_residual"))
        totals = sample_counts(ctx)

        def work(unit: tuple[int, int, int]) -> _Part:
            index, start, stop = unit
            x = ctx.datasets[index].make(start, stop).to(device=ctx.device, dtype=ctx.model.dtype)
            inputs = _block_inputs(chain, x, max(i for i, _, _ in found))
            part = _Part([self._measure(block, solver, inputs[i], None, None, limit) for i, block, solver in found])
            if start < sweep_n and factors:
                keep = min(stop, sweep_n) - start
                for factor in factors:
                    part.sweep.append(
                        [
                            self._measure(
                                block,
                                solver,
                                inputs[i][:keep],
                                own.tolerance / factor,
                                _cap(own, factor, growth),
                                limit,
                            )
                            for (i, block, solver), own in zip(found, part.own, strict=True)
                        ]
                    )
            ctx.progress(ctx.datasets[index].name, stop, sample_counts(ctx)[index])
            return part

        names = [f"{i}:{b.info.architecture or type(b.module).__name__}" for i, b, _ in found]
        progress = set_progress(ctx, [d.name for d in ctx.datasets], totals)
        for ds, mine in zip(ctx.datasets, map_batches(ctx, totals, work, progress=progress), strict=True):
            if not mine:
                continue
            own = [_join([p.own[k] for p in mine]) for k in range(len(found))]
            sweeps = [
                [_join([p.sweep[f][k] for p in mine if p.sweep]) for k in range(len(found))]
                for f in range(len(factors))
                if any(p.sweep for p in mine)
            ]
            yield _measurement(ds.name, names, own, factors, sweeps, limit)

    @staticmethod
    def _measure(
        block: InvertibleModel,
        solver: IterativeInverse,
        h: Tensor,
        tolerance: float | None,
        max_iter: int | None,
        limit: float,
    ) -> _Solves:
        try:
            return _solve(block, solver, h, tolerance, max_iter, limit)
        except Exception as exc:  # a solver that raises is a finding about that block
            return _failed(len(h), f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")


def _cap(own: _Solves, factor: float, growth: float) -> int | None:
    if own.failure or own.max_iter <= 0:
        return None
    return math.ceil(own.max_iter * min(factor, growth))


def _block_inputs(chain: Sequence[InvertibleModel], x: Tensor, last: int) -> list[Tensor]:
    """The input of every block up to ``last``, pushed through the chain from ``x``."""
    inputs, h = [], x
    with torch.no_grad():
        for i, block in enumerate(chain[: last + 1]):
            inputs.append(h)
            if i < last:
                h = block.carry(block.forward(h))
    return inputs


def _measurement(
    name: str,
    names: list[str],
    own: list[_Solves],
    factors: list[float],
    sweeps: list[list[_Solves]],
    limit: float = math.inf,
) -> Measurement:
    n = len(own[0].converged)
    unconverged = np.zeros(n, bool)
    capped = np.zeros(n, bool)
    for s in own:
        unconverged |= ~s.converged
        capped |= s.cap_hit
    every = lambda key: np.concatenate([getattr(s, key).astype(np.float64) for s in own])  # noqa: E731
    metrics: dict[str, Any] = {
        "n": n,
        "blocks": len(own),
        "nonconverged_fraction": float(unconverged.mean()) if n else 0.0,
        "cap_hit_fraction": float(capped.mean()) if n else 0.0,
        "iterations": _stats(every("iterations")),
        "residual": _stats(every("residual")),
        "error": _stats(every("error")),
        "unmeasured_blocks": sum(1 for s in own if s.failure),
        "max_residual": limit,
    }
    sweep_series, limited = [], 0
    if sweeps:
        metrics["sweep"] = {}
        for factor, level in zip(factors, sweeps, strict=True):
            err = np.concatenate([s.error for s in level])
            res = np.concatenate([s.residual for s in level])
            its = np.concatenate([s.iterations for s in level]).astype(np.float64)
            conv = np.concatenate([s.converged for s in level])
            metrics["sweep"][f"x{factor:g}"] = {
                "error_max": _stats(err)["max"],
                "residual_max": _stats(res)["max"],
                "nonconverged_fraction": float((~conv).mean()) if conv.size else 0.0,
                "iterations_mean": float(its.mean()) if its.size else math.nan,
            }
        for k, block in enumerate(names):
            rows = [_sweep_row(1.0, own[k], len(sweeps[0][k].converged))] + [
                _sweep_row(f, level[k], len(level[k].converged)) for f, level in zip(factors, sweeps, strict=True)
            ]
            verdict = _verdict(rows)
            limited += verdict == "solver"
            sweep_series.append({"block": block, "rows": rows, "verdict": verdict})
    metrics["solver_limited_blocks"] = limited
    series = {"blocks": [_block_series(b, s) for b, s in zip(names, own, strict=True)], "sweep": sweep_series}
    return Measurement(name, metrics, _message(names, own, unconverged, capped, sweep_series), series)


def _sweep_row(factor: float, s: _Solves, keep: int) -> dict[str, Any]:
    err, res = s.error[:keep], s.residual[:keep]
    return {
        "factor": factor,
        "tolerance": s.tolerance,
        "max_iter": s.max_iter,
        "error_median": _stats(err)["median"],
        "error_max": _stats(err)["max"],
        "residual_max": _stats(res)["max"],
        "nonconverged": int((~s.converged[:keep]).sum()),
        "iterations_mean": float(s.iterations[:keep].mean()) if keep else math.nan,
    }


def _verdict(rows: list[dict[str, Any]]) -> str:
    """``"solver"`` when the largest error fell 3x or more from the own tolerance to the
    tightest, ``"model"`` when it did not, ``""`` when there is no error to compare (a forward
    solver, or every solve exact)."""
    first, last = rows[0]["error_max"], rows[-1]["error_max"]
    if not (math.isfinite(first) and math.isfinite(last)) or first == 0:
        return ""
    return "solver" if first > 3 * max(last, 1e-300) else "model"


def _block_series(name: str, s: _Solves) -> dict[str, Any]:
    return {
        "name": name,
        "method": s.method,
        "tolerance": s.tolerance,
        "max_iter": s.max_iter,
        "iterations_median": float(np.median(s.iterations)) if s.iterations.size else math.nan,
        "iterations_max": int(s.iterations.max()) if s.iterations.size else 0,
        "nonconverged": int((~s.converged).sum()),
        "cap_hits": int(s.cap_hit.sum()),
        "residual_max": _stats(s.residual)["max"],
        "error_max": _stats(s.error)["max"],
        "failure": s.failure,
        "iterations": [int(v) for v in s.iterations],
        "residual": [float(v) for v in s.residual],
        "converged": [bool(v) for v in s.converged],
    }


def _message(
    names: list[str], own: list[_Solves], unconverged: np.ndarray, capped: np.ndarray, sweep: list[dict[str, Any]]
) -> str:
    n = len(unconverged)
    parts = []
    failed = [f"{b} ({s.failure})" for b, s in zip(names, own, strict=True) if s.failure]
    if failed:
        parts.append("solver raised on " + "; ".join(failed[:3]))
    if unconverged.any():
        worst = max(zip(names, own, strict=True), key=lambda bs: int((~bs[1].converged).sum()))
        parts.append(
            f"{int(unconverged.sum())} of {n} samples did not converge ({int(capped.sum())} at the cap); "
            f"worst block {worst[0]} ({worst[1].method}, {int((~worst[1].converged).sum())} samples)"
        )
    else:
        its = max(int(s.iterations.max()) if s.iterations.size else 0 for s in own)
        res = max(_stats(s.residual)["max"] for s in own)
        parts.append(
            f"all {n} samples converged in {len(own)} block(s), at most {its} iterations, residual <= {res:.2g}"
        )
    solver = [row["block"] for row in sweep if row["verdict"] == "solver"]
    if solver:
        parts.append(
            f"tolerance sweep: the error is the solver's in {len(solver)} of {len(sweep)} blocks ({solver[0]}...)"
        )
    elif sweep:
        parts.append("tolerance sweep: the error is the model's (a tighter tolerance does not reduce it)")
    return "; ".join(parts)
