"""The ``grid`` audit (2D models only)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import map_batches, set_progress
from innaudit.audits.cost import AuditCost, Cost
from innaudit.core.metrics import neither, percent, rate, worse
from innaudit.core.stats import per_sample_norm, significant, summarize
from innaudit.data import Dataset
from innaudit.linalg import jacobian, log_abs_det

__all__ = ["Grid", "grid_points", "grid_set"]


_MAPS = ("error", "latent_error", "condition", "logdet_error", "bad", "latent_bad")
"""The per-point arrays one batch of grid points gives."""


def grid_set(low: float, high: float) -> str:
    """The name of the grid's set, ``grid[-4,4]^2``."""
    return f"grid[{low:g},{high:g}]^2"


def grid_points(low: float, high: float, resolution: int) -> tuple[np.ndarray, Tensor]:
    """Cell centres ``c_i = low + (i + 1/2) (high - low) / resolution`` and the points
    ``(x_i, y_j)`` in row-major order (row ``j`` is ``y_j``), float64."""
    centres = low + (np.arange(resolution) + 0.5) * (high - low) / resolution
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    return centres, torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], 1))


def _rows(values: np.ndarray, resolution: int) -> list[list[float]]:
    """A flat per-point array as rows of 4-significant-digit numbers (NaN/Inf kept)."""
    return [significant(row, 4) for row in values.reshape(resolution, resolution)]


@register
class Grid(Audit):
    r"""Maps of invertibility over a 2D box, for 2D flows (the paper's checkerboard figures).

    Property: on a 2D model the whole input plane can be inspected, including far outside the
    data (Behrmann et al., AISTATS 2021, section 4(g): a 320 x 320 grid over ``[-8, 8)^2``). At
    every cell centre ``p`` of a ``resolution`` x ``resolution`` grid over ``[low, high]^2``:
    ``error = ||F^-1(F(p)) - p||`` (input-space round trip), ``latent_error = ||F(F^-1(p)) -
    p||`` (``p`` as a latent), ``condition = sigma_max / sigma_min`` of the exact 2x2
    ``J_F(p)``, and ``logdet_error = |ld_model(p) - log|det J_F(p)||`` where the model reports
    a log-det. NaN/Inf are kept as such (the renderer masks them).

    The maps go to ``series.grid`` (``{"x": [...], "y": [...], <metric>: [[row], ...]}``, row
    ``j`` at ``y[j]``) for the HTML report; the default 64 x 64 keeps the report small, the
    paper's 320 x 320 is ``resolution: 320`` in the config. Metrics summarize the maps:
    ``nonfinite_fraction`` (cells whose round trip is not finite), ``latent_nonfinite_fraction``,
    ``error`` / ``latent_error`` / ``logdet_error`` (``median``, ``p99``, ``max``, ``mean`` over
    finite cells), ``condition.max``. No gate by default: the box lies mostly outside any data
    set; the ``roundtrip`` and ``spectrum`` audits gate. Skipped unless the input is 2D.

    Reading it: an affine flow shows finite errors on the data support and NaN or huge
    condition numbers in the corners; a residual flow stays finite everywhere.

    References:
        Behrmann, Vicol, Wang, Grosse, Jacobsen, "Understanding and Mitigating Exploding
        Inverses in Invertible Neural Networks", AISTATS 2021 (PMLR 130),
        https://arxiv.org/abs/2006.09347
    """

    id = "grid"
    title = "Round-trip error, condition number and log-det error over a 2D grid"
    thresholds = {}
    options = {"low": -8.0, "high": 8.0, "resolution": 64}
    metrics = (
        neither("n", doc="grid points"),
        neither("resolution", doc="points per axis"),
        rate("nonfinite_fraction", "cells whose round trip is non-finite"),
        rate("latent_nonfinite_fraction", "cells whose latent is non-finite"),
        worse("error"),
        worse("latent_error"),
        worse("logdet_error", "nats"),
        worse("condition", doc="sigma_max / sigma_min of the Jacobian"),
    )
    scalable = False

    @classmethod
    def costs(cls, dim: int, options: Mapping[str, Any]) -> Mapping[str, AuditCost]:
        """Per grid point: two round trips and a 2 x 2 Jacobian."""
        return {"": AuditCost(Cost(forward=2, inverse=2, vjp=2))}

    @classmethod
    def capacities(cls, datasets: Sequence[Dataset], options: Mapping[str, Any], samples: int) -> list[int]:
        """One set of ``resolution^2`` points (the audit applies to 2-D models only)."""
        return [int(options["resolution"]) ** 2]

    @classmethod
    def set_names(cls, datasets: Sequence[Dataset], options: Mapping[str, Any]) -> tuple[str, ...]:
        """The one box, ``grid[low,high]^2``."""
        del datasets  # the points are a grid, not data
        return (grid_set(options["low"], options["high"]),)

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped unless the model's input is two-dimensional."""
        if ctx.model.info.domain.numel != 2:
            return f"only for 2D models; this one has {ctx.model.info.domain.numel} dimensions"
        if ctx.option("resolution") < 2 or not ctx.option("high") > ctx.option("low"):
            return "the grid needs resolution >= 2 and high > low"
        return None

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement named after the box; its batches of points are the work units of a
        sharded run."""
        low, high, res = ctx.option("low"), ctx.option("high"), ctx.option("resolution")
        centres, points = grid_points(low, high, res)
        shape = ctx.model.info.domain.shape

        def work(unit: tuple[int, int, int]) -> dict[str, np.ndarray]:
            _, start, stop = unit
            return self._batch(ctx, points[start:stop].reshape(-1, *shape).to(device=ctx.device, dtype=ctx.model.dtype))

        (parts,) = map_batches(ctx, [len(points)], work, progress=set_progress(ctx, ["grid"], [len(points)]))
        m = {k: np.concatenate([p[k] for p in parts]) for k in _MAPS}
        name = grid_set(low, high)
        metrics = {
            "n": len(points),
            "resolution": res,
            "nonfinite_fraction": float(m["bad"].mean()),
            "latent_nonfinite_fraction": float(m["latent_bad"].mean()),
            "error": summarize(m["error"]),
            "latent_error": summarize(m["latent_error"]),
            "logdet_error": summarize(m["logdet_error"]),
            "condition": {"max": summarize(m["condition"])["max"], "median": summarize(m["condition"])["median"]},
        }
        series = {
            "grid": {
                "x": [float(c) for c in centres],
                "y": [float(c) for c in centres],
                **{k: _rows(m[k], res) for k in ("error", "latent_error", "condition", "logdet_error")},
            }
        }
        message = (
            f"{percent(metrics['nonfinite_fraction'])} of {res}x{res} cells do not round-trip "
            f"to finite values; largest condition {metrics['condition']['max']:.3g}"
        )
        yield Measurement(name, metrics, message, series)

    @staticmethod
    def _batch(ctx: AuditContext, p: Tensor) -> dict[str, np.ndarray]:
        """The maps' values at the points ``p`` (one batch), keyed as :data:`_MAPS`."""
        model = ctx.model
        with torch.no_grad():
            z, ld = model.forward_and_log_det(p)
            back = model.inverse(z)
            x = model.inverse(p)
            again = model.forward(x)
        bad = ~(torch.isfinite(z).flatten(1).all(1) & torch.isfinite(back).flatten(1).all(1)).cpu()
        latent_bad = ~(torch.isfinite(x).flatten(1).all(1) & torch.isfinite(again).flatten(1).all(1)).cpu()
        jac = jacobian(lambda t: model.forward(t, grad=True), p).detach().cpu()  # numbers for numpy
        p, back, again, ld = p.cpu(), back.cpu(), again.cpu(), None if ld is None else ld.detach().cpu()
        finite = torch.isfinite(jac).flatten(1).all(1)
        sv = torch.full((len(p), 2), math.nan, dtype=torch.float64)
        if finite.any():
            sv[finite] = torch.linalg.svdvals(jac[finite].double())
        ref = log_abs_det(jac)
        nan = torch.full((len(p),), math.nan, dtype=torch.float64)
        ld_err = (ld.double().reshape(-1) - ref).abs() if ld is not None else nan
        inf = torch.full((len(p),), math.inf, dtype=torch.float64)
        return {
            "error": torch.where(bad, inf, per_sample_norm(back - p)).numpy(),
            "latent_error": torch.where(latent_bad, inf, per_sample_norm(again - p)).numpy(),
            "condition": (sv[:, 0] / sv[:, 1]).numpy(),
            "logdet_error": ld_err.detach().numpy(),
            "bad": bad.numpy(),
            "latent_bad": latent_bad.numpy(),
        }
