"""Stochastic Lanczos quadrature of ``log|det J|`` with every probe of a batch at once.

``log|det J| = 1/2 tr log(J^T J)``; the trace is estimated with ``probes`` Rademacher vectors
``v`` (Hutchinson, ``E[v^T A v] = tr A``) and each quadratic form ``v^T log(J^T J) v`` by the
``steps``-node Gauss rule ``G_k = ||v||^2 e_1^T log(T_k) e_1``, ``T_k`` the Lanczos matrix of
``J^T J`` from ``v`` (Ubaru, Chen and Saad, "Fast Estimation of tr(f(A)) via Stochastic Lanczos
Quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017, https://doi.org/10.1137/16M1104974),
obtained as ``B_k^T B_k`` by Golub-Kahan bidiagonalization of ``J`` itself
(:mod:`innaudit.linalg.bidiagonal`: in float32 it keeps the small singular values that Lanczos
on the products ``J^T (J v)`` loses past a condition number of about 4000).

The error bar (:meth:`LogDetEstimate.bounds`): ``log|det J|`` lies in
``[value - bias - 3 stderr, value + 3 stderr]``. ``stderr`` is the probes' (``std /
sqrt(probes)``; with 8 probes, 3 of them cover the probe noise about 98 % of the time, a
Student t of 7 degrees of freedom). ``bias`` is the quadrature's: every even derivative of ``log`` is negative, so
each Gauss rule lies above its quadratic form and the rules fall monotonically with the node
count (Golub and Meurant, "Matrices, Moments and Quadrature with Applications", 2010, ch. 6);
``bias`` estimates the remaining ``G_k - G_inf`` from the rules of ``k``, ``k/2`` and ``k/4``
nodes, the leading blocks of the same ``B_k`` (no extra pass): their differences give the rate
at which the error falls per doubling of the nodes, and the geometric tail at that rate (held
between ``2^(1/4)`` and 2: :func:`quadrature_bias`) is the bias. An estimate, not a proof: a spectrum
whose small end the ``k`` nodes have not yet reached can hide more.
Rounding is not in the bar: the bidiagonalization's float32 error moves each
singular value by about ``eps * sigma_max``, negligible against the bar up to a condition number
near ``1 / eps``.

What each step costs: the probes of a chunk of samples advance together. ``J^T u`` comes from
the reusable closure of ``torch.func.vjp`` (one forward pass per chunk, its graph kept) and
``J v`` from ``torch.func.jvp`` ``vmap``-ped over the probes' tangents: the primal is not
batched, so a step is one forward pass of the chunk and, batched over the probes, a tangent
pass and a backward pass per probe (``steps`` tangent passes and ``steps - 1`` backward passes
per probe in all). (``torch.func.linearize`` would save that forward pass,
but tracing the map with ``make_fx`` costs more than the forward passes of a few dozen steps.)
Where ``vmap`` cannot batch the map (data-dependent control flow, in-place writes), the probes
run one after another, and where forward-mode AD is missing each JVP is a double backward
(``torch.autograd.functional.jvp``); :attr:`LogDetEstimate.how` says which ran.

The random draws are those of the one-probe-at-a-time estimator
(:func:`innaudit.linalg.lanczos.log_abs_det_estimate`, the same bidiagonalization): ``probes``
Rademacher draws of shape ``(B, d)`` in turn from the generator, and every run stops where its
Krylov space closes; so for the same seed both give the same estimate up to the rounding of
the batched products.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor
from torch.func import vjp, vmap

from innaudit.linalg._common import Map, Stop
from innaudit.linalg.bidiagonal import Bidiagonal, Product, bidiagonalize, quadrature_log

__all__ = ["BAR_STDERRS", "MAX_ROWS", "LogDetEstimate", "log_abs_det_slq", "quadrature_bias", "rules"]

MAX_ROWS = 256
"""Samples x probes advanced together: the samples of a batch run in chunks of
``max(1, MAX_ROWS // probes)`` (the two Krylov bases of a chunk hold ``2 * MAX_ROWS * steps * d``
float64 numbers: 384 MiB at d = 3072 and 32 steps)."""

BAR_STDERRS = 3.0
"""Standard errors of the probe mean on each side of the error bar (:meth:`LogDetEstimate.bounds`)."""

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
        bias: the estimated quadrature bias per sample (:func:`quadrature_bias`, halved as the
            estimate is; 0 where every probe's Krylov space closed; NaN with fewer than 4
            steps): the estimate less it is the Gauss rules' limit as far as the rules of
            ``k``, ``k/2`` and ``k/4`` nodes show.
    """

    values: Tensor
    stderr: Tensor
    probes: int
    steps: int
    how: str
    bias: Tensor

    def bounds(self, stderrs: float = BAR_STDERRS) -> tuple[Tensor, Tensor]:
        """``(values - bias - stderrs * stderr, values + stderrs * stderr)``: where the error bar
        puts ``log|det J|`` (see the module docstring for what it covers)."""
        spread = stderrs * torch.nan_to_num(self.stderr, nan=0.0)
        return self.values - self.bias - spread, self.values + spread


class _Normal:
    """``J v`` and ``J^T u`` at ``x`` (``B`` samples) for ``v``, ``u`` of shape ``(P, B, d)`` float64."""

    def __init__(self, fn: Map, x: Tensor) -> None:
        self.fn, self.x, self.shape = fn, x, tuple(x.shape)
        # without has_aux, torch.func.vjp returns a pair; its annotation is the union of both arities
        out, self._vjp = cast("tuple[Tensor, Callable[..., Any]]", vjp(fn, x))
        self.out_shape = tuple(out.shape)
        self.batched = True

    @property
    def how(self) -> str:
        """How the products ran (see :attr:`LogDetEstimate.how`)."""
        return _HOWS[int(self.batched)]

    def _jvp(self, t: Tensor) -> Tensor:
        return torch.func.jvp(self.fn, (self.x,), (t,))[1]

    def _one_jvp(self, t: Tensor) -> Tensor:
        try:
            return self._jvp(t)
        except _FAILURES:
            return torch.autograd.functional.jvp(self.fn, self.x, t)[1]

    def _batched(self, product: Callable[[Tensor], Tensor], one: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
        if self.batched:
            try:
                return vmap(product)(t)
            except _FAILURES:
                self.batched = False
        return torch.stack([one(row) for row in t])

    def forward(self, v: Tensor) -> Tensor:
        """``J v`` per probe and sample, float64 ``(P, B, D)``."""
        tangents = v.to(self.x.dtype).reshape(len(v), *self.shape)
        out = self._batched(self._jvp, self._one_jvp, tangents)
        return out.detach().reshape(len(v), self.shape[0], -1).double()

    def backward(self, u: Tensor) -> Tensor:
        """``J^T u`` per probe and sample, float64 ``(P, B, d)``."""
        cotangents = u.to(self.x.dtype).reshape(len(u), *self.out_shape)
        out = self._batched(lambda c: self._vjp(c)[0], lambda c: self._vjp(c)[0], cotangents)
        return out.detach().reshape(len(u), self.shape[0], -1).double()


def _lift(product: Callable[[Tensor], Tensor], probes: int, batch: int) -> Product:
    """A :data:`Product` on the live rows of ``probes x batch`` from one on every row at once
    (the vmapped products take the whole batch; rows already done get a zero vector)."""

    def run(v: Tensor, rows: Tensor) -> Tensor:
        full = torch.zeros(probes * batch, v.shape[1], dtype=v.dtype, device=v.device)
        full[rows] = v
        return product(full.reshape(probes, batch, -1)).reshape(probes * batch, -1)[rows]

    return run


def rules(bd: Bidiagonal, dim: int) -> Tensor:
    """Per row, the Gauss rules ``d e_1^T log(T_j) e_1`` of ``j = k``, ``k // 2`` and ``k // 4``
    nodes ``(3, N)`` from the leading blocks of its ``B_k`` (all three the exact ``k``-node rule
    where the Krylov space closed; NaN for broken rows and rules of no node)."""
    full = dim * quadrature_log(bd.alpha, bd.beta, bd.iters, bd.broken)
    parts = [full]
    for div in (2, 4):
        part = dim * quadrature_log(bd.alpha, bd.beta, bd.iters // div, bd.broken)
        parts.append(torch.where(bd.closed, full, part))
    return torch.stack(parts)


def _chunk(fn: Map, x: Tensor, signs: Tensor, steps: int, stop: Stop | None = None) -> tuple[Tensor, str]:
    """The Gauss rules of :func:`rules` ``(3, P, B)`` for the samples ``x`` ``(B, ...)`` and their
    probes ``signs`` ``(P, B, d)``, and how the products ran."""
    probes, batch, dim = signs.shape
    op = _Normal(fn, x)
    bd = bidiagonalize(
        _lift(op.forward, probes, batch), _lift(op.backward, probes, batch), signs.reshape(-1, dim), steps, stop
    )
    return rules(bd, dim).reshape(3, probes, batch), op.how


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
        stop: asked before each bidiagonalization step after a chunk's first (a budget's deadline,
            :data:`innaudit.linalg._common.Stop`); True ends the chunk's steps there, so its
            estimate is the Gauss rule of the steps reached (still an upper bound up to probe noise).
    """
    x = x.detach()
    batch, dim = len(x), int(x[0].numel()) if len(x) else 0
    steps = min(steps, dim)
    # the draws of the one-probe-at-a-time estimator, in its order
    signs = torch.stack([torch.randint(0, 2, (batch, dim), generator=generator) for _ in range(probes)])
    signs = signs.to(x.device).double() * 2 - 1
    draws = torch.full((3, probes, batch), float("nan"), dtype=torch.float64, device=x.device)
    size, ways = max(1, max_rows // max(1, probes)), []
    with torch.enable_grad():
        for start in range(0, batch, size):
            part, how = _chunk(fn, x[start : start + size], signs[:, start : start + size], steps, stop)
            draws[:, :, start : start + size] = part
            ways.append(how)
    how = min(ways, key=_HOWS.index) if ways else _HOWS[-1]  # the slowest way any chunk took
    return summarize_draws(draws, steps, how)


SLOWEST_RATE = 2.0**0.25
"""The least factor by which the bias estimate assumes the Gauss rule's error falls when its
nodes double (an error falling at least as ``k^(-1/4)``)."""
FASTEST_RATE = 2.0
"""The largest such factor it credits (an error falling as ``1/k``: the bias is then at least
``G_{k/2} - G_k``), so that one lucky difference cannot shrink the bar."""


def quadrature_bias(draws: Tensor) -> Tensor:
    """Estimated bias ``G_k - G_inf`` per sample of the probes' Gauss rules ``(3, P, B)`` (``k``,
    ``k/2``, ``k/4`` nodes): with ``D1 = mean(G_{k/4} - G_{k/2})`` and ``D2 = mean(G_{k/2} -
    G_k)``, an error falling by ``r = D1 / D2`` per doubling leaves ``D2 / (r - 1)`` (the sum of
    the geometric tail, Aitken's estimate); ``r`` is held between :data:`SLOWEST_RATE` and
    :data:`FASTEST_RATE`. 0 where
    the rules agree (a closed Krylov space); NaN where fewer than 4 nodes ran and ``G_{k/4}``
    is missing."""
    d1 = (draws[2] - draws[1]).mean(0)
    gap = (draws[1] - draws[0]).mean(0)
    d2 = gap.clamp_min(0.0)
    rate = torch.where(d2 > 0, d1 / d2.clamp_min(1e-300), torch.full_like(d2, math.inf))
    bias = torch.where(d2 > 0, d2 / (rate.clamp(SLOWEST_RATE, FASTEST_RATE) - 1), torch.zeros_like(d2))
    return torch.where(torch.isnan(gap), gap, bias)  # NaN where a probe's map was not finite


def summarize_draws(draws: Tensor, steps: int, how: str) -> LogDetEstimate:
    """The estimate from the probes' Gauss rules ``draws`` ``(3, P, B)`` (:func:`rules`): half
    the mean and half the standard error of the ``k``-node rules, half the quadrature bias."""
    _, probes, batch = draws.shape
    nan = torch.full((batch,), math.nan, dtype=torch.float64, device=draws.device)
    stderr = draws[0].std(0) / math.sqrt(probes) if probes > 1 else nan
    return LogDetEstimate(0.5 * draws[0].mean(0), 0.5 * stderr, probes, steps, how, 0.5 * quadrature_bias(draws))
