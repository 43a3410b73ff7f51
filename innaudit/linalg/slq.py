"""Stochastic Lanczos quadrature of ``log|det J|`` with every probe of a batch at once.

``log|det J| = 1/2 tr log(J^T J)``; the trace is estimated with ``probes`` Rademacher vectors
``v`` (Hutchinson, ``E[v^T A v] = tr A``) and each quadratic form ``v^T log(J^T J) v`` by
``steps`` Lanczos steps on ``J^T J`` from ``v``: ``||v||^2 e_1^T log(T) e_1`` with ``T`` the
tridiagonal Lanczos matrix (Ubaru, Chen and Saad, "Fast Estimation of tr(f(A)) via Stochastic
Lanczos Quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017, https://doi.org/10.1137/16M1104974).

What each step costs: the probes of a chunk of samples advance together. ``J^T u`` comes from
the reusable closure of ``torch.func.vjp`` (one forward pass per chunk, its graph kept) and
``J v`` from ``torch.func.jvp`` ``vmap``-ped over the probes' tangents: the primal is not
batched, so a step is one forward pass of the chunk and, batched over the probes, a tangent
pass and a backward pass per probe. (``torch.func.linearize`` would save that forward pass,
but tracing the map with ``make_fx`` costs more than the forward passes of a few dozen steps.)
Where ``vmap`` cannot batch the map (data-dependent control flow, in-place writes), the probes
run one after another, and where forward-mode AD is missing each JVP is a double backward
(``torch.autograd.functional.jvp``); :attr:`LogDetEstimate.how` says which ran.

The random draws are those of the one-probe-at-a-time estimator
(:func:`innaudit.linalg.lanczos.log_abs_det_estimate`): ``probes`` Rademacher draws of shape
``(B, d)`` in turn from the generator, and every Lanczos run stops where its Krylov space
becomes invariant; so for the same seed both give the same estimate up to floating-point
rounding. The standard error is the probes' (``std / sqrt(probes)``); it covers the probe
variance only, not the quadrature bias, which grows with the condition number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor
from torch.func import vjp, vmap

from innaudit.linalg._common import Map
from innaudit.linalg.lanczos import Stop, lanczos, quadrature_log

__all__ = ["MAX_ROWS", "LogDetEstimate", "log_abs_det_slq"]

MAX_ROWS = 256
"""Samples x probes advanced together: the samples of a batch run in chunks of
``max(1, MAX_ROWS // probes)`` (the Krylov bases of a chunk hold ``MAX_ROWS * (steps + 1) * d``
float64 numbers: 207 MiB at d = 3072 and 32 steps)."""

_FAILURES = (RuntimeError, NotImplementedError, ValueError, TypeError, AssertionError)
"""What torch.func raises for a map it cannot trace, batch or differentiate forward."""


_HOWS = ("probe by probe", "probes batched")
"""The ways :class:`_Normal` can run, slowest first."""


@dataclass(frozen=True)
class LogDetEstimate:
    """A stochastic ``log|det J|`` per sample.

    Attributes:
        values: the estimate per sample (float64; NaN where the map was not finite).
        stderr: its standard error over the probes (NaN with a single probe).
        probes: Rademacher probes per sample.
        steps: Lanczos steps per probe (the requested count, capped by the dimension).
        how: ``"probes batched"`` (``vmap`` over the probes) or ``"probe by probe"`` (``vmap``
            could not batch the map).
    """

    values: Tensor
    stderr: Tensor
    probes: int
    steps: int
    how: str


class _Normal:
    """``V -> J^T J V`` at ``x`` (``B`` samples) for ``V`` of shape ``(P, B, d)`` float64."""

    def __init__(self, fn: Map, x: Tensor) -> None:
        self.fn, self.x, self.shape = fn, x, tuple(x.shape)
        # without has_aux, torch.func.vjp returns a pair; its annotation is the union of both arities
        _, self._vjp = cast("tuple[Tensor, Callable[..., Any]]", vjp(fn, x))
        self.batched = True

    @property
    def how(self) -> str:
        """How the products ran (see :attr:`LogDetEstimate.how`)."""
        return _HOWS[int(self.batched)]

    def _jvp(self, t: Tensor) -> Tensor:
        return torch.func.jvp(self.fn, (self.x,), (t,))[1]

    def _one(self, t: Tensor) -> Tensor:
        try:
            jv = self._jvp(t)
        except _FAILURES:
            jv = torch.autograd.functional.jvp(self.fn, self.x, t)[1]
        (back,) = self._vjp(jv)
        return back

    def apply(self, v: Tensor) -> Tensor:
        """``J^T J v`` per probe and sample, float64 ``(P, B, d)``."""
        tangents = v.to(self.x.dtype).reshape(len(v), *self.shape)
        if self.batched:
            try:
                (out,) = vmap(self._vjp)(vmap(self._jvp)(tangents))
            except _FAILURES:
                self.batched = False
        if not self.batched:
            out = torch.stack([self._one(t) for t in tangents])
        return out.detach().reshape(v.shape).double()


def _chunk(fn: Map, x: Tensor, signs: Tensor, steps: int, stop: Stop | None = None) -> tuple[Tensor, str]:
    """``d * e_1^T log(T) e_1`` ``(P, B)`` for the samples ``x`` ``(B, ...)`` and their probes
    ``signs`` ``(P, B, d)``, and how the products ran."""
    probes, batch, dim = signs.shape
    op = _Normal(fn, x)
    rows_all = probes * batch

    def apply(v: Tensor, rows: Tensor) -> Tensor:  # the vmapped products take every row at once
        full = torch.zeros(rows_all, dim, dtype=v.dtype, device=v.device)
        full[rows] = v
        return op.apply(full.reshape(probes, batch, dim)).reshape(-1, dim)[rows]

    kr = lanczos(apply, signs.reshape(-1, dim), 0.0, steps, stop)
    return dim * quadrature_log(kr.alpha, kr.beta, kr.iters, kr.broken).reshape(probes, batch), op.how


def log_abs_det_slq(
    fn: Map,
    x: Tensor,
    *,
    probes: int = 8,
    steps: int = 32,
    generator: torch.Generator | None = None,
    max_rows: int = MAX_ROWS,
    stop: Stop | None = None,
) -> LogDetEstimate:
    """Stochastic ``log|det J_fn(x)|`` per sample and its standard error, matrix-free.

    ``0.5 * mean_p d e_1^T log(T_p) e_1`` over ``probes`` Rademacher probes ``v_p`` (``||v_p||^2
    = d``), each ``T_p`` from ``steps`` Lanczos steps on ``J^T J`` (see the module docstring);
    the samples run in chunks of ``max(1, max_rows // probes)`` and each chunk's
    probes advance together. Cost per sample: a VJP's forward pass, then per step one forward
    pass and ``probes`` tangent and backward passes (batched over the probes).

    Args:
        fn: batched map from ``(B, *in_shape)`` to ``(B, D)`` with ``D = prod(in_shape)``
            (see :mod:`innaudit.linalg`).
        x: the batch.
        probes: Rademacher probes per sample.
        steps: Lanczos steps per probe (capped by the dimension).
        generator: source of the probes (seeded by the caller).
        max_rows: samples x probes advanced together (memory).
        stop: asked before each Lanczos step after a chunk's first (a budget's deadline,
            :data:`innaudit.linalg.lanczos.Stop`); True ends the chunk's steps there, so its
            estimate is the Gauss rule of the steps reached (still an upper bound up to probe noise).
    """
    x = x.detach()
    batch, dim = len(x), int(x[0].numel()) if len(x) else 0
    steps = min(steps, dim)
    # the draws of the one-probe-at-a-time estimator, in its order
    signs = torch.stack([torch.randint(0, 2, (batch, dim), generator=generator) for _ in range(probes)])
    signs = signs.to(x.device).double() * 2 - 1
    draws = torch.full((probes, batch), float("nan"), dtype=torch.float64, device=x.device)
    size, ways = max(1, max_rows // max(1, probes)), []
    with torch.enable_grad():
        for start in range(0, batch, size):
            part, how = _chunk(fn, x[start : start + size], signs[:, start : start + size], steps, stop)
            draws[:, start : start + size] = part
            ways.append(how)
    stderr = draws.std(0) / math.sqrt(probes) if probes > 1 else torch.full((batch,), math.nan, dtype=torch.float64)
    how = min(ways, key=_HOWS.index) if ways else _HOWS[-1]  # the slowest way any chunk took
    return LogDetEstimate(0.5 * draws.mean(0), 0.5 * stderr, probes, steps, how)
