"""Measured local constants of each block, beside its certificate (the ``bounds`` audit).

At a block's input ``h`` (the data pushed through the chain), the exact Jacobian ``J = J_f(h)``
gives the block's local Lipschitz constant ``sigma_max(J)``, its inverse's ``1 / sigma_min(J)``
(the inverse's Jacobian at ``f(h)`` is ``J^-1``; taking it from ``J`` avoids differentiating an
iterative solver), and for a residual block ``y = x + g(x)`` the local ``Lip(g)``,
``sigma_max(J - I)``. For a coupling block with a ``scales(h)`` hook (the zoo's), the range of
``log g`` it applies: the empirical stand-in for a certificate when the scale is unbounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from innaudit.linalg import EXACT_MAX_DIM, dense_extremes, jacobian
from innaudit.model.contract import InvertibleModel

__all__ = ["BlockConstants", "block_constants"]


@dataclass(frozen=True)
class BlockConstants:
    """One block's measured numbers on a batch, per sample (float64, NaN where not measured).

    Attributes:
        forward: ``sigma_max(J_f(h))``.
        inverse: ``1 / sigma_min(J_f(h))``.
        lip_g: ``sigma_max(J_f(h) - I)`` (residual blocks; NaN otherwise).
        log_scale_min, log_scale_max: range of ``log g`` per sample (scale hook; NaN otherwise).
    """

    forward: np.ndarray
    inverse: np.ndarray
    lip_g: np.ndarray
    log_scale_min: np.ndarray
    log_scale_max: np.ndarray


def _nan(n: int) -> np.ndarray:
    return np.full(n, math.nan)


def _log_scales(block: InvertibleModel, h: Tensor) -> tuple[np.ndarray, np.ndarray]:
    scales = getattr(block.module, "scales", None)
    if not callable(scales):
        return _nan(len(h)), _nan(len(h))
    was = block.module.training
    block.module.eval()
    try:
        with torch.no_grad():
            log_g = scales(h.clone()).reshape(len(h), -1).double().abs().log()
    finally:
        block.module.train(was)
    return log_g.min(1).values.cpu().numpy(), log_g.max(1).values.cpu().numpy()


def _one(block: InvertibleModel, h: Tensor, residual: bool, max_dim: int, rows: int) -> BlockConstants:
    """The constants of ``block`` at ``h``: the log-scale range on every sample, the Jacobian's
    on the first ``rows`` samples (NaN on the others)."""
    n = len(h)
    low, high = _log_scales(block, h)
    dim = int(h[0].numel())
    if dim > max_dim or rows < 1:
        return BlockConstants(_nan(n), _nan(n), _nan(n), low, high)
    try:
        jac = jacobian(lambda t: block.forward(t, grad=True), h[:rows]).double()
    except RuntimeError:
        return BlockConstants(_nan(n), _nan(n), _nan(n), low, high)
    flat = jac.reshape(len(jac), jac.shape[1], -1)
    if flat.shape[1] != flat.shape[2]:  # a block that factors out a level: not square
        return BlockConstants(_nan(n), _nan(n), _nan(n), low, high)
    return _square(flat, torch.isfinite(flat).reshape(len(flat), -1).all(1), residual, low, high)


def _square(flat: Tensor, finite: Tensor, residual: bool, low: np.ndarray, high: np.ndarray) -> BlockConstants:
    """Constants from the first ``len(flat)`` samples' Jacobians; NaN for the rest of ``low``'s."""
    n = len(low)
    fwd, inv, lip = _nan(n), _nan(n), _nan(n)
    top, bottom = dense_extremes(flat[finite])
    keep = np.zeros(n, dtype=bool)
    keep[: len(flat)] = finite.cpu().numpy()
    fwd[keep] = top.cpu().numpy()
    with np.errstate(divide="ignore"):
        inv[keep] = 1.0 / bottom.cpu().numpy()
    if residual:
        eye = torch.eye(flat.shape[1], dtype=flat.dtype, device=flat.device)
        g = flat[finite] - eye
        lip[keep] = dense_extremes(g, smallest=False)[0].cpu().numpy()
    return BlockConstants(fwd, inv, lip, low, high)


def block_constants(
    chain: Sequence[InvertibleModel],
    x: Tensor,
    residual: Sequence[bool],
    max_dim: int = EXACT_MAX_DIM,
    rows: int | None = None,
) -> list[BlockConstants]:
    """Each block's measured constants at its input, pushing ``x`` through the chain; NaN for a
    block whose input has more than ``max_dim`` dimensions (its exact Jacobian is not taken),
    and for the samples after the first ``rows`` (default: all): one dense Jacobian and SVD per
    block and sample costs ``d^3``, so a few samples per set stand for the blocks."""
    out, h = [], x
    take = len(x) if rows is None else max(0, min(rows, len(x)))
    for block, is_residual in zip(chain, residual, strict=True):
        out.append(_one(block, h, is_residual, min(max_dim, EXACT_MAX_DIM), take))
        with torch.no_grad():
            h = block.carry(block.forward(h))
    return out
