"""Batched Golub-Kahan bidiagonalization of a Jacobian through JVPs and VJPs, and the Gauss
quadrature of ``e_1^T log(J^T J) e_1`` it gives.

From a unit ``v_1``, the bidiagonalization builds orthonormal ``V_k`` (inputs) and ``U_k``
(outputs) with ``J V_k = U_k B_k`` and ``J^T U_k = V_k B_k^T + beta_k v_{k+1} e_k^T``, ``B_k``
upper bidiagonal (``alpha`` on the diagonal, ``beta`` above it): one JVP ``J v_j`` and one VJP
``J^T u_j`` per step. ``B_k^T B_k`` is the Lanczos matrix ``T_k`` of ``J^T J`` from ``v_1``, so
the ``k``-node Gauss quadrature of ``v_1^T log(J^T J) v_1`` is
``e_1^T log(B_k^T B_k) e_1 = sum_i w_i log s_i^2`` over the singular values ``s_i`` of ``B_k``
and the squared first entries ``w_i`` of its right singular vectors (Golub and Kahan,
"Calculating the singular values and pseudo-inverse of a matrix", SIAM J. Numer. Anal. B 2(2),
1965, https://doi.org/10.1137/0702016; Golub and Meurant, "Matrices, Moments and Quadrature
with Applications", Princeton 2010, ch. 6).

Why not Lanczos on the products ``J^T (J v)``: a float32 model's JVP and VJP each carry a
rounding error ``E`` of about ``eps * ||J||``, and ``J^T J`` applied as one product is then not
symmetric; its antisymmetric part, of size ``||J|| ||E||``, shifts the small Ritz values of
``T_k`` by about ``eps * sigma_max^2``, which is more than ``sigma_min^2`` once the condition
number passes ``eps^-1/2`` (about 4000 in float32): Ritz values come out near zero or negative
and ``log`` of them ruins the estimate. Here each product is orthogonalized on its own side
(``u`` against ``U_k``, ``v`` against ``V_k``, in float64), so the computed ``B_k`` is that of
``J + E`` and its singular values move by about ``||E||`` only: ``sigma_min`` stays resolved up
to a condition number of about ``eps^-1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from innaudit.linalg._common import Stop, orthogonalize, running

__all__ = ["Bidiagonal", "Product", "bidiagonalize", "quadrature_log"]

Product = Callable[[Tensor, Tensor], Tensor]
"""``product(v, rows)``: ``J v`` (a JVP) or ``J^T u`` (a VJP) for the rows ``rows`` of a batch,
``v`` of shape ``(len(rows), d)`` float64, the answer float64 of the same shape."""

INVARIANT = 1e-12
"""A new ``alpha`` or ``beta`` at most this times the largest ``alpha`` so far closes the row's
Krylov space (a float64 map's rounding is far below it; a float32 map's never reaches it, so
its runs take every step)."""


@dataclass(frozen=True)
class Bidiagonal:
    """Bidiagonalization per row: ``alpha`` / ``beta`` ``(N, steps)`` (``B_k[j, j] = alpha[j]``,
    ``B_k[j, j + 1] = beta[j]``), the size ``k`` of ``B_k`` reached (``iters``), whether the
    Krylov space closed (invariant, or the whole space: the quadrature is then exact), whether
    the map gave a non-finite value (``broken``), whether ``stop`` ended the run first."""

    alpha: Tensor
    beta: Tensor
    iters: Tensor
    closed: Tensor
    broken: Tensor
    stopped: Tensor


def _finite(w: Tensor) -> tuple[Tensor, Tensor]:
    bad = ~torch.isfinite(w).all(1)
    return torch.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0), bad


def bidiagonalize(jvp: Product, vjp: Product, start: Tensor, steps: int, stop: Stop | None = None) -> Bidiagonal:
    """``steps`` Golub-Kahan steps (``steps`` JVPs, ``steps - 1`` VJPs per row) from the rows of
    ``start`` ``(N, d)``, with full reorthogonalization of both bases in float64. A row stops
    where its Krylov space closes (:data:`INVARIANT`) or the map gave a non-finite value;
    ``stop()``, asked before every step but the first, ends every row not yet done."""
    n, dim = start.shape
    f64, device = torch.float64, start.device
    v_basis = torch.zeros(n, steps, dim, dtype=f64, device=device)
    v_basis[:, 0] = start / start.norm(dim=1, keepdim=True).clamp_min(1e-300)
    u_basis = torch.zeros(n, steps, dim, dtype=f64, device=device)
    alpha = torch.zeros(n, steps, dtype=f64, device=device)
    beta = torch.zeros(n, steps, dtype=f64, device=device)
    scale = torch.zeros(n, dtype=f64, device=device)
    iters = torch.zeros(n, dtype=torch.long, device=device)
    flags = {k: torch.zeros(n, dtype=torch.bool, device=device) for k in ("closed", "broken", "stopped")}
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for j in range(steps):
        rows, live = running(done)
        if len(rows) == 0:
            break
        if j > 0 and stop is not None and stop():
            flags["stopped"][live] = True
            break
        u, bad = _finite(jvp(v_basis[live, j], rows))
        if j > 0:
            u = orthogonalize(u - beta[live, j - 1, None] * u_basis[live, j - 1], u_basis[live, :j])
        a = u.norm(dim=1)
        scale[live] = torch.maximum(scale[live], a)
        alpha[live, j], iters[live] = a, j + 1
        u_basis[live, j] = u / a.clamp_min(1e-300).unsqueeze(1)
        flags["broken"][live] |= bad
        done[live] |= bad
        if j == steps - 1:
            flags["closed"][rows[~bad]] = steps == dim
            break
        w, bad = _finite(vjp(u_basis[live, j], rows))
        w = orthogonalize(w - a.unsqueeze(1) * v_basis[live, j], v_basis[live, : j + 1])
        b = w.norm(dim=1)
        beta[live, j] = b
        v_basis[live, j + 1] = w / b.clamp_min(1e-300).unsqueeze(1)
        closed = (b <= INVARIANT * scale[live]) & ~bad
        flags["closed"][live] |= closed
        flags["broken"][live] |= bad
        done[live] |= closed | bad
    return Bidiagonal(alpha, beta, iters, flags["closed"], flags["broken"], flags["stopped"])


def quadrature_log(alpha: Tensor, beta: Tensor, iters: Tensor, broken: Tensor) -> Tensor:
    """``e_1^T log(B_k^T B_k) e_1`` per row of bidiagonal coefficients ``alpha`` / ``beta``
    ``(N, steps)``, ``B_k`` of size ``iters`` (the leading block: ``iters // 2`` gives the rule of
    half the nodes); NaN for ``broken`` rows and rows with no step."""
    out = torch.full(iters.shape, float("nan"), dtype=torch.float64, device=alpha.device)
    for k in torch.unique(iters).tolist():
        rows = torch.nonzero((iters == k) & ~broken).flatten()
        if k == 0 or len(rows) == 0:
            continue
        b = torch.diag_embed(alpha[rows, :k])
        if k > 1:
            b = b + torch.diag_embed(beta[rows, : k - 1], offset=1)
        _, s, vh = torch.linalg.svd(b)
        out[rows] = (vh[:, :, 0] ** 2 * 2 * s.clamp_min(1e-300).log()).sum(1)
    return out
