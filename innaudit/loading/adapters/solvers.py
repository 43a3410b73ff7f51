"""The iterative inverses of library blocks, behind :class:`innaudit.model.iterative.IterativeInverse`.

Each solver reproduces its library's own iteration step for step (the same operations in the
same order, so at the library's settings it returns the library's result bit for bit) and adds
what the library does not say: per sample, the iterations used and whether the stop rule was
met before the cap.

- normflows ``Residual`` (``iResBlock``, vendored from rtqichen/residual-flows): from
  ``x_0 = y - g(y)``, ``x <- y - g(x)`` until every element has ``(x_k - x_{k-1})^2 <
  atol + rtol |y|`` (``atol = rtol = 1e-5``), or more than 1000 updates; the library stops
  there with only a log message. Note the rule squares the step: it accepts steps up to
  ``sqrt(1e-5 (1 + |y|)) ~ 3e-3``. A tolerance override sets ``atol = rtol``. With
  ``reverse=True`` (the default) the fixed point is innaudit's inverse; with ``reverse=False``
  it is innaudit's forward (``solves = "forward"``).
- FrEIA ``IResNetLayer``: ``x_hat <- y - g(x_hat)`` from ``x_hat = y``, exactly
  ``fixed_point_iterations`` (50) times, then ``y - g(x_hat)``, with no convergence check.
  innaudit judges the result by the last step: converged when every element moved by at most
  ``1e-5 (1 + |y|)``. A tolerance override stops early once every sample meets it.
- zuko monotonic transforms (NAF's ``MNN``, UNAF's ``UMNN``, Bernstein and SOS polynomial
  transforms): bisection on ``[-B, B]`` (``B = 10`` unless the transform says otherwise) for
  ``ceil(log2(2B / eps))`` steps (``eps = 1e-6``), inside ``passes`` autoregressive sweeps. The
  bisection always "ends"; it has converged only when the target lies inside
  ``[f(-B), f(B)]`` for every element, otherwise it silently returns the bound (zuko#20). A
  tolerance override sets ``eps``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from innaudit.loading.adapters._common import from_library
from innaudit.model.iterative import Solve, register_solver

__all__ = ["FREIA_TOLERANCE", "FreiaIResNetSolver", "NormflowsResidualSolver", "ZukoBisectionSolver"]

FREIA_TOLERANCE = 1e-5
"""The step rule innaudit applies to FrEIA's unchecked fixed-point iterations."""


class NormflowsResidualSolver:
    """``iResBlock._inverse_fixed_point`` of a normflows ``Residual`` layer, per sample."""

    tolerance = 1e-5
    cap = 1000

    def __init__(self, layer: nn.Module) -> None:
        self.layer: Any = layer
        self.solves = "inverse" if bool(getattr(layer, "reverse", True)) else "forward"

    def solve_inverse(
        self, z: Tensor, *, tolerance: float | None = None, max_iter: int | None = None
    ) -> tuple[Tensor, Solve]:
        g = self.layer.iresblock.nnet
        tol = self.tolerance if tolerance is None else float(tolerance)
        cap = self.cap if max_iter is None else int(max_iter)
        y = z
        with torch.no_grad():
            x, previous = y - g(y), y
            limit = tol + y.abs() * tol
            met = _per_sample((x - previous) ** 2 / limit < 1)
            iterations = torch.where(met, 0, cap + 1).to(torch.long)
            i = 0
            while not bool(met.all()):
                x, previous = y - g(x), x
                i += 1
                now = _per_sample((x - previous) ** 2 / limit < 1)
                iterations = torch.where(now & ~met, i, iterations)
                met = now
                if i > cap:
                    break
        # the library's rule is judged on the batch: a sample that met it once may move again
        return x, Solve(iterations, met, cap + 1, tol, "fixed-point (normflows iResBlock)")


class FreiaIResNetSolver:
    """``IResNetLayer``'s inverse (``rev=True``), judged by its last step."""

    solves = "inverse"

    def __init__(self, layer: nn.Module) -> None:
        self.layer: Any = layer

    def solve_inverse(
        self, z: Tensor, *, tolerance: float | None = None, max_iter: int | None = None
    ) -> tuple[Tensor, Solve]:
        residual = self.layer.residual
        count = int(self.layer.fixed_point_iterations) if max_iter is None else int(max_iter)
        tol = FREIA_TOLERANCE if tolerance is None else float(tolerance)
        y = z
        limit = tol * (1.0 + y.abs())
        iterations = torch.full((len(y),), count, dtype=torch.long, device=y.device)
        seen = torch.zeros(len(y), dtype=torch.bool, device=y.device)
        with torch.no_grad():
            x_hat = y
            for k in range(1, count + 1):
                new = y - residual(x_hat)
                met = _per_sample((new - x_hat).abs() <= limit)
                iterations = torch.where(met & ~seen, k, iterations)
                seen |= met
                x_hat = new
                if tolerance is not None and bool(met.all()):
                    break
            out = y - residual(x_hat.detach())
            last = _per_sample((out - x_hat).abs() <= limit) & _per_sample(torch.isfinite(out))
        return out, Solve(iterations, last, count, tol, "fixed-point (FrEIA IResNetLayer)")


class ZukoBisectionSolver:
    """zuko's inverse of a lazy transform with a monotonic univariate, with the bracket check."""

    solves = "inverse"

    def __init__(self, lazy: nn.Module, context: Any = None) -> None:
        self.lazy: Any = lazy
        self.context = context

    def solve_inverse(
        self, z: Tensor, *, tolerance: float | None = None, max_iter: int | None = None
    ) -> tuple[Tensor, Solve]:
        del max_iter  # a bisection's step count follows from its bracket and eps
        transform = self.lazy(self.context)
        record: list[tuple[Tensor, int, float]] = []
        with torch.no_grad():
            if hasattr(transform, "meta") and hasattr(transform, "passes"):
                x = torch.zeros_like(z)
                for _ in range(int(transform.passes)):
                    record.clear()
                    x = _invert_univariate(transform.meta(x), z, tolerance, record)
                passes = int(transform.passes)
            else:
                x = _invert_univariate(transform, z, tolerance, record)
                passes = 1
        inside = torch.ones(len(z), dtype=torch.bool, device=z.device)
        steps, eps = 0, math.nan
        for bracketed, n, part_eps in record:
            inside &= _per_sample(bracketed)
            steps, eps = max(steps, n), part_eps
        inside &= _per_sample(torch.isfinite(x))
        total = steps * passes
        iterations = torch.full((len(z),), total, dtype=torch.long, device=z.device)
        return x, Solve(iterations, inside, total, eps, "bisection (zuko)")


def _invert_univariate(transform: Any, y: Tensor, eps: float | None, record: list[tuple[Tensor, int, float]]) -> Tensor:
    """``transform.inv(y)``, with every monotonic part's eps overridden (on the fresh object
    zuko built for this call) and its bracket ``f(-B) <= target <= f(B)`` recorded."""
    from zuko.transforms import ComposedTransform, DependentTransform, MonotonicTransform

    if isinstance(transform, DependentTransform):
        return _invert_univariate(transform.base, y, eps, record)
    if isinstance(transform, ComposedTransform):
        target = y
        for part in reversed(transform.transforms):
            target = _invert_univariate(part, target, eps, record)
        return target
    if isinstance(transform, MonotonicTransform):
        if eps is not None:
            transform.eps = float(eps)
        bound = float(transform.bound)
        low = transform.f(torch.full_like(y, -bound))
        high = transform.f(torch.full_like(y, bound))
        steps = math.ceil(math.log2(2 * bound / transform.eps))
        record.append(((low <= y) & (y <= high), steps, float(transform.eps)))
    return transform.inv(y)


def _per_sample(flags: Tensor) -> Tensor:
    return flags.reshape(len(flags), -1).all(1)


def _normflows(module: nn.Module) -> NormflowsResidualSolver | None:
    if type(module).__name__ == "Residual" and from_library(module, "normflows") and hasattr(module, "iresblock"):
        return NormflowsResidualSolver(module)
    return None


def _freia(module: nn.Module) -> FreiaIResNetSolver | None:
    if type(module).__name__ == "IResNetLayer" and from_library(module, "FrEIA"):
        return FreiaIResNetSolver(module)
    return None


def _zuko(module: nn.Module) -> ZukoBisectionSolver | None:
    if not from_library(module, "zuko"):
        return None
    from zuko.transforms import MonotonicTransform

    univariate = getattr(module, "univariate", None)
    monotonic = type(univariate).__name__ in ("MNN", "UMNN") or (
        isinstance(univariate, type) and issubclass(univariate, MonotonicTransform)
    )
    return ZukoBisectionSolver(module) if monotonic else None


for _factory in (_normflows, _freia, _zuko):
    register_solver(_factory)
