"""Matrix-free extreme singular values and log-determinants: Lanczos through JVP / VJP."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor
from torch.func import vjp

from innaudit.linalg._common import Map, Stop, orthogonalize, running, threads_for
from innaudit.linalg.bidiagonal import bidiagonalize, quadrature_log

__all__ = [
    "Apply",
    "SpectrumEstimate",
    "Stop",
    "extreme_singular_values",
    "lanczos",
    "log_abs_det_estimate",
    "top_singular_value",
    "tridiagonal",
]


@dataclass(frozen=True)
class SpectrumEstimate:
    """Result of a matrix-free estimate for a batch.

    Attributes:
        values: the estimate per sample (float64; NaN where the map was not finite).
        iterations: JVP/VJP pairs spent per sample until convergence (or the cap).
        converged: whether the residual criterion held within the cap, per sample.
        stopped: per sample, whether a ``stop`` callback ended its run before it converged or
            reached the cap (None: no callback stopped any); its value is then the estimate of
            the ``iterations`` it reached, a lower bound of ``sigma_max`` (Ritz values of
            ``J^T J`` lie below its largest eigenvalue).
    """

    values: Tensor
    iterations: Tensor
    converged: Tensor
    stopped: Tensor | None = None


def _jvp(fn: Map, x: Tensor, v: Tensor) -> Tensor:
    try:
        return torch.func.jvp(fn, (x,), (v,))[1]
    except (RuntimeError, NotImplementedError):
        return torch.autograd.functional.jvp(fn, x, v)[1]


class _Operator:
    """``v -> J^T J v`` per sample for a batched ``fn`` at ``x``; ``v`` is ``(B, d)`` float64."""

    def __init__(self, fn: Map, x: Tensor) -> None:
        self.fn, self.x = fn, x.detach()
        self.shape = tuple(x.shape)
        # without has_aux, torch.func.vjp returns a pair; its annotation is the union of both arities
        out, self._vjp = cast("tuple[Tensor, Callable[..., Any]]", vjp(fn, self.x))
        self.out_shape = tuple(out.shape)

    def apply(self, v: Tensor, rows: Tensor) -> Tensor:
        """``J^T J v`` for the samples ``rows`` (other samples get a zero tangent)."""
        tangent = torch.zeros(self.shape, dtype=self.x.dtype, device=self.x.device)
        tangent.reshape(self.shape[0], -1)[rows] = v.to(self.x.dtype)
        jv = _jvp(self.fn, self.x, tangent)
        (back,) = self._vjp(jv)
        return back.detach().reshape(self.shape[0], -1)[rows].double()

    def jvp(self, v: Tensor, rows: Tensor) -> Tensor:
        """``J v`` for the samples ``rows`` (other samples get a zero tangent)."""
        tangent = torch.zeros(self.shape, dtype=self.x.dtype, device=self.x.device)
        tangent.reshape(self.shape[0], -1)[rows] = v.to(self.x.dtype)
        return _jvp(self.fn, self.x, tangent).detach().reshape(self.shape[0], -1)[rows].double()

    def vjp(self, u: Tensor, rows: Tensor) -> Tensor:
        """``J^T u`` for the samples ``rows`` (other samples get a zero cotangent)."""
        cotangent = torch.zeros(self.out_shape, dtype=self.x.dtype, device=self.x.device)
        cotangent.reshape(self.shape[0], -1)[rows] = u.to(self.x.dtype)
        (back,) = self._vjp(cotangent)
        return back.detach().reshape(self.shape[0], -1)[rows].double()


def top_singular_value(
    fn: Map,
    x: Tensor,
    *,
    tol: float = 1e-4,
    max_iter: int = 64,
    generator: torch.Generator | None = None,
    stop: Stop | None = None,
) -> SpectrumEstimate:
    """``sigma_max`` of the Jacobian of ``fn`` at each sample, by Lanczos on ``J^T J``.

    Each iteration costs one JVP and one VJP (on the samples not yet converged, batched). The
    Krylov basis is fully reorthogonalized in float64. A sample converges when the residual of
    the top Ritz pair of ``T_k`` is at most ``tol`` times its Ritz value ``theta`` (then
    ``|theta - lambda| <= tol * theta`` for some eigenvalue ``lambda`` of ``J^T J``), or when the
    Krylov space becomes invariant (exact answer). ``sigma_max = sqrt(theta)``.

    Args:
        fn: batched map, see the module docstring.
        x: the batch ``(B, *in_shape)``.
        tol: relative residual tolerance on the Ritz value of ``J^T J``.
        max_iter: cap on JVP/VJP pairs per sample (also capped by the dimension).
        generator: source of the random start vectors (seeded by the caller).
        stop: asked before each iteration after the first (:data:`Stop`); True ends the run
            with the steps reached, flagged in ``stopped``.
    """
    x = x.detach()
    batch, dim = len(x), int(x[0].numel()) if len(x) else 0
    if batch == 0:
        empty = torch.zeros(0, dtype=torch.float64)
        return SpectrumEstimate(empty, empty.long(), empty.bool())
    with torch.enable_grad(), threads_for(dim):
        op = _Operator(fn, x)
        return _top_sv(op, batch, dim, tol, min(max_iter, dim), generator, x.device, stop)


@dataclass(frozen=True)
class _Krylov:
    """Lanczos output per sample: tridiagonal ``alpha``/``beta`` (B, steps), steps taken,
    top Ritz value, whether it converged, whether the map was non-finite, whether ``stop``
    ended it first."""

    alpha: Tensor
    beta: Tensor
    iters: Tensor
    theta: Tensor
    done: Tensor
    broken: Tensor
    stopped: Tensor


Apply = Callable[[Tensor, Tensor], Tensor]
"""``apply(v, rows) -> J^T J v`` for the rows ``rows`` of a batch (``v`` is ``(len(rows), d)``
float64): the operator a Lanczos run iterates."""


def lanczos(apply: Apply, start: Tensor, tol: float, steps: int, stop: Stop | None = None) -> _Krylov:
    """Batched Lanczos on ``J^T J`` (``apply``) from ``start`` (B, d), full reorthogonalization,
    stopping a sample when its top Ritz residual is at most ``tol`` times the Ritz value
    (``tol = 0``: run all ``steps`` unless the Krylov space becomes invariant; a top Ritz
    vector that deflates to a residual of exactly 0 does not end the run, the rest of the
    spectrum is still unexplored) or the operator gave a non-finite value (``broken``). ``stop()``, asked before every iteration but the
    first, ends the run for every sample not yet done (``stopped``)."""
    batch, dim = start.shape
    f64, device = torch.float64, start.device
    basis = torch.zeros(batch, steps + 1, dim, dtype=f64, device=device)
    basis[:, 0] = start / start.norm(dim=1, keepdim=True).clamp_min(1e-300)
    alpha = torch.zeros(batch, steps, dtype=f64, device=device)
    beta = torch.zeros(batch, steps, dtype=f64, device=device)
    theta = torch.full((batch,), float("nan"), dtype=f64, device=device)
    iters = torch.zeros(batch, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    broken = torch.zeros(batch, dtype=torch.bool, device=device)
    stopped = torch.zeros(batch, dtype=torch.bool, device=device)
    for k in range(steps):
        rows, live = running(done)
        if len(rows) == 0:
            break
        if k > 0 and stop is not None and stop():
            stopped[live] = True
            break
        w = apply(basis[live, k], rows)
        bad = ~torch.isfinite(w).all(1)
        w = torch.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)
        q = basis[live, : k + 1]
        a = (q[:, k] * w).sum(1)
        w = w - a.unsqueeze(1) * q[:, k]  # the three-term recurrence, then full reorthogonalization
        if k > 0:
            w = w - beta[live, k - 1, None] * q[:, k - 1]
        w = orthogonalize(w, q)
        b = w.norm(dim=1)
        alpha[live, k], beta[live, k] = a, b
        basis[live, k + 1] = w / b.clamp_min(1e-300).unsqueeze(1)
        iters[live] = k + 1
        top, resid = _top_ritz(alpha[live, : k + 1], beta[live, : k + 1])
        theta[live] = top
        invariant = b <= 1e-12 * top.abs().clamp_min(1e-300)
        broken[live] |= bad
        converged = resid <= tol * top.abs() if tol > 0 else torch.zeros_like(invariant)
        done[live] = converged | invariant | bad
    return _Krylov(alpha, beta, iters, theta, done, broken, stopped)


def _top_sv(
    op: _Operator,
    batch: int,
    dim: int,
    tol: float,
    steps: int,
    generator: torch.Generator | None,
    device: torch.device,
    stop: Stop | None = None,
) -> SpectrumEstimate:
    start = torch.randn(batch, dim, generator=generator, dtype=torch.float64).to(device)
    kr = lanczos(op.apply, start, tol, steps, stop)
    theta = torch.where(kr.broken, torch.full_like(kr.theta, float("nan")), kr.theta)
    stopped = (kr.stopped & ~kr.broken).cpu()
    return SpectrumEstimate(
        theta.clamp_min(0).sqrt(),
        kr.iters.cpu(),
        (kr.done & ~kr.broken).cpu(),
        stopped if bool(stopped.any()) else None,
    )


def _top_ritz(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Largest eigenvalue of each tridiagonal ``T_k`` and its residual ``beta_k |e_k^T y|``."""
    k = alpha.shape[1]
    vals, vecs = torch.linalg.eigh(tridiagonal(alpha, beta))
    return vals[:, -1], beta[:, k - 1] * vecs[:, -1, -1].abs()


def extreme_singular_values(
    forward: Map,
    inverse: Map,
    x: Tensor,
    *,
    tol: float = 1e-4,
    max_iter: int = 64,
    generator: torch.Generator | None = None,
    stop: Stop | None = None,
    z: Tensor | None = None,
) -> tuple[SpectrumEstimate, SpectrumEstimate]:
    """Matrix-free ``(sigma_max(J_F(x)), sigma_max(J_F^-1(F(x))))`` per sample.

    ``sigma_min(J_F(x)) = 1 / sigma_max(J_F^-1(F(x)))`` for a bijection; the two estimates are
    returned separately so the caller can report both and their iteration counts. ``stop`` is
    handed to both Lanczos runs (:data:`Stop`); ``z``, when the caller has it, is ``F(x)``
    (computed here otherwise).
    """
    if z is None:
        with torch.no_grad():
            z = forward(x.detach())
    fwd = top_singular_value(forward, x, tol=tol, max_iter=max_iter, generator=generator, stop=stop)
    finite = torch.isfinite(z.reshape(len(z), -1)).all(1)
    if bool(finite.all()):
        inv = top_singular_value(inverse, z, tol=tol, max_iter=max_iter, generator=generator, stop=stop)
    else:
        inv = _masked(inverse, z, finite, tol, max_iter, generator, stop)
    return fwd, inv


def _masked(
    fn: Map,
    z: Tensor,
    finite: Tensor,
    tol: float,
    max_iter: int,
    generator: torch.Generator | None,
    stop: Stop | None = None,
) -> SpectrumEstimate:
    """Run :func:`top_singular_value` on the finite rows only; NaN elsewhere."""
    n = len(z)
    values = torch.full((n,), float("nan"), dtype=torch.float64)
    iters = torch.zeros(n, dtype=torch.long)
    conv = torch.zeros(n, dtype=torch.bool)
    stopped = None
    if finite.any():
        part = top_singular_value(fn, z[finite], tol=tol, max_iter=max_iter, generator=generator, stop=stop)
        idx = finite.cpu()
        values[idx], iters[idx], conv[idx] = part.values.cpu(), part.iterations.cpu(), part.converged.cpu()
        if part.stopped is not None:
            stopped = torch.zeros(n, dtype=torch.bool)
            stopped[idx] = part.stopped
    return SpectrumEstimate(values, iters, conv, stopped)


def tridiagonal(alpha: Tensor, beta: Tensor) -> Tensor:
    """The symmetric tridiagonal Lanczos matrices ``T_k`` ``(N, k, k)`` of ``alpha``/``beta`` rows."""
    k = alpha.shape[1]
    t = torch.diag_embed(alpha)
    if k > 1:
        off = torch.diag_embed(beta[:, : k - 1], offset=1)
        t = t + off + off.transpose(1, 2)
    return t


def log_abs_det_estimate(
    fn: Map, x: Tensor, *, probes: int = 8, steps: int = 32, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Stochastic ``log|det J|`` per sample and its standard error, matrix-free, one probe at a time.

    ``log|det J| = 1/2 tr log(J^T J)``; the trace is estimated with ``probes`` Rademacher
    vectors ``v`` (Hutchinson, ``E[v^T A v] = tr A``) and each ``v^T log(J^T J) v`` by
    stochastic Lanczos quadrature with ``steps`` nodes (Ubaru, Chen and Saad, SIAM J. Matrix
    Anal. Appl. 2017): ``||v||^2 e_1^T log(T) e_1``, ``T = B^T B`` from the Golub-Kahan
    bidiagonalization of ``J`` (:mod:`innaudit.linalg.bidiagonal`). Each probe costs ``steps``
    JVPs and ``steps - 1`` VJPs, the probes one after another. The same draws and numerics as
    :func:`innaudit.linalg.slq.log_abs_det_slq`, which batches the probes and also reports the
    quadrature's bias; the standard error covers the probe variance only.
    """
    x = x.detach()
    batch, dim = len(x), int(x[0].numel())
    steps = min(steps, dim)
    draws = []
    with torch.enable_grad():
        op = _Operator(fn, x)
        for _ in range(probes):
            v = torch.randint(0, 2, (batch, dim), generator=generator).to(x.device).double() * 2 - 1
            bd = bidiagonalize(op.jvp, op.vjp, v, steps)
            draws.append(dim * quadrature_log(bd.alpha, bd.beta, bd.iters, bd.broken))
    est = torch.stack(draws)  # (probes, B)
    stderr = est.std(0) / math.sqrt(probes) if probes > 1 else torch.full((batch,), float("nan"))
    return 0.5 * est.mean(0), 0.5 * stderr
