"""Exact Jacobians of batched maps, their singular values and log-determinants."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import jacfwd, jacrev, vmap

from innaudit.linalg._common import Map

__all__ = ["GRAM_COND", "dense_extremes", "jacobian", "jacobian_singular_values", "log_abs_det", "per_matrix"]

_ROWS_PER_CHUNK = 16384
"""Samples are processed in chunks of about ``_ROWS_PER_CHUNK / dim`` so that the vmapped
network sees at most this many rows at once (bounded memory for image models)."""


def _single(fn: Map, in_shape: tuple[int, ...]) -> Map:
    """The per-sample view of ``fn``: flat vector in, flat vector out."""

    def one(v: Tensor) -> Tensor:
        return fn(v.reshape(1, *in_shape)).reshape(-1)

    return one


def _jacobian_vmap(fn: Map, x: Tensor) -> Tensor:
    in_shape = tuple(x.shape[1:])
    one = _single(fn, in_shape)
    flat = x.reshape(len(x), -1)
    out_dim = one(flat[:1][0]).numel() if len(x) else 0
    transform = jacfwd if flat.shape[1] < out_dim else jacrev
    chunk = max(1, _ROWS_PER_CHUNK // max(flat.shape[1], out_dim, 1))
    parts = [vmap(transform(one))(flat[s : s + chunk]) for s in range(0, len(flat), chunk)]
    return torch.cat(parts) if parts else flat.new_zeros(0, out_dim, flat.shape[1])


def _jacobian_loop(fn: Map, x: Tensor) -> Tensor:
    in_shape = tuple(x.shape[1:])
    one = _single(fn, in_shape)
    flat = x.reshape(len(x), -1)
    rows = []
    for v in flat:
        try:
            rows.append(jacrev(one)(v))
        except (RuntimeError, NotImplementedError):
            rows.append(torch.autograd.functional.jacobian(one, v))
    return torch.stack(rows)


def jacobian(fn: Map, x: Tensor) -> Tensor:
    """Exact Jacobians of a batched map, shape ``(B, prod(out_shape), prod(in_shape))``.

    ``vmap`` over ``jacrev`` (or ``jacfwd`` when the input is smaller than the output), in
    chunks of samples to bound memory; computed in ``fn``'s dtype. When ``vmap`` cannot batch
    the map (in-place writes, data-dependent control flow), a per-sample loop of
    ``torch.func.jacrev`` is used instead (then ``torch.autograd.functional.jacobian``).
    Non-finite values in the map give non-finite Jacobian entries; nothing raises for them.
    """
    x = x.detach()
    with torch.enable_grad():  # all threads: the vmapped batch is dim times the sample count
        try:
            return _jacobian_vmap(fn, x).detach()
        except (RuntimeError, NotImplementedError, ValueError):
            return _jacobian_loop(fn, x).detach()


def per_matrix(decompose: Callable[[Tensor], Tensor], batch: Tensor) -> Tensor:
    """``decompose`` applied to each matrix of ``batch`` in turn, results stacked.

    torch's batched CPU LAPACK path shares the batch out over its intra-op threads and calls
    MKL from each: with more than one thread, batched LU (``slogdet``, ``det``) of matrices from
    256 x 256 up stops with "Intel oneMKL ERROR: Parameter 6 was incorrect on entry to DLASWP"
    and returns garbage or never returns, and a batched SVD runs up to 80 times slower (torch
    2.13.0, MKL 2024.2). One call per matrix keeps MKL's own threading inside each matrix.
    """
    return torch.stack([decompose(m) for m in batch]) if len(batch) else batch.new_zeros(0)


GRAM_COND = 1e4
"""Above this condition number a Jacobian's extreme singular values come from its SVD, below it
from the eigenvalues of its float64 Gram matrix ``J^T J`` (about twice as fast). The Gram matrix
squares the condition number: its smallest eigenvalue carries an absolute error of about
``eps sigma_max^2``, so ``sigma_min`` a relative one of about ``eps cond^2 / 2``, under 1e-8 here
(float64 ``eps`` 2.2e-16), far below the float32 Jacobian's own rounding; ``sigma_max`` keeps
float64's relative accuracy at any condition number."""


def dense_extremes(mats: Tensor, smallest: bool = True) -> tuple[Tensor, Tensor]:
    """``(sigma_max, sigma_min)`` of each square float64 matrix of ``mats`` ``(m, d, d)``: from
    ``eigvalsh(J^T J)``, and by ``svdvals`` for the matrices above :data:`GRAM_COND` (only where
    ``smallest`` asks for ``sigma_min``: ``sigma_max`` is accurate from the Gram matrix); one LAPACK
    call per matrix (:func:`per_matrix`)."""
    if len(mats) == 0:
        return mats.new_zeros(0), mats.new_zeros(0)
    eig = per_matrix(torch.linalg.eigvalsh, mats.mT @ mats).clamp_min(0.0)
    top, low = eig[:, -1].sqrt(), eig[:, 0].sqrt()
    if smallest:
        loose = ~(low * GRAM_COND >= top)
        if loose.any():
            sv = per_matrix(torch.linalg.svdvals, mats[loose])
            top[loose], low[loose] = sv[:, 0], sv[:, -1]
    return top, low


def _svdvals(jac: Tensor) -> Tensor:
    """Singular values (descending, float64) of a batch of matrices; NaN rows where non-finite."""
    wide = jac.double()
    finite = torch.isfinite(wide).flatten(1).all(1)
    out = torch.full((len(wide), min(wide.shape[1:])), float("nan"), dtype=torch.float64, device=wide.device)
    if finite.any():
        out[finite] = per_matrix(torch.linalg.svdvals, wide[finite])
    return out


def jacobian_singular_values(fn: Map, x: Tensor) -> Tensor:
    """Singular values ``(B, k)`` in descending order of the exact Jacobian of ``fn`` at each
    sample of ``x`` (``k = min(in, out)``).

    The Jacobian is computed in ``fn``'s dtype (:func:`jacobian`) and decomposed in float64
    (``torch.linalg.svdvals``), as the reference code did with numpy. A sample whose Jacobian
    has a NaN or Inf entry gets a row of NaN (the model failed there; that is a finding).
    """
    return _svdvals(jacobian(fn, x))


def log_abs_det(jac: Tensor) -> Tensor:
    """``log|det J|`` per sample of a batch of square Jacobians, in float64 (NaN if non-finite).

    ``slogdet`` (LU) one matrix at a time (:func:`per_matrix`). A finite Jacobian whose LU gives
    no finite answer is decomposed again by SVD (``sum log sigma_i``, the same number by
    another algorithm); NaN remains only where both fail, so the caller can tell a failed
    reference (finite Jacobian, NaN) from a non-finite Jacobian.
    """
    wide = jac.double()
    finite = torch.isfinite(wide).flatten(1).all(1)
    out = torch.full((len(wide), 1), float("nan"), dtype=torch.float64, device=wide.device)
    if finite.any():
        out[finite] = per_matrix(_one_log_abs_det, wide[finite])
    return out[:, 0]


def _one_log_abs_det(matrix: Tensor) -> Tensor:
    """``log|det|`` of one finite matrix: ``slogdet``, else the sum of its log singular values."""
    try:
        value = torch.linalg.slogdet(matrix)[1]
    except RuntimeError:
        value = matrix.new_tensor(float("nan"))
    if torch.isnan(value):
        try:
            value = torch.log(torch.linalg.svdvals(matrix)).sum()
        except RuntimeError:
            value = matrix.new_tensor(float("nan"))
    return value.reshape(1)
