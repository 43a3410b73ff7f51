"""The search for the largest local singular value (the ``bounds`` audit's witness).

The measured constant of the ``bounds`` audit is the largest ``sigma_max(J_F(x))`` over the
audited samples: a lower bound of the global constant taken only at data points, and a ReLU
flow's global constant can lie far above it. The search climbs from the samples and from seeded
random starts inside the model's domain box: at every step each point tries a step along the
gradient of ``||J(x) v||`` (``v`` its current top right singular vector; for the inverse,
``-||J(x) v||`` with ``v`` the bottom one, so that ``1 / sigma_min`` grows) and a few random
steps of sizes from a hundredth to half of the box, and moves to the best of them when it is no
worse than where it stands. A piecewise-linear flow (ReLU) has a Jacobian constant between its
kinks, so the gradient is zero there and the random steps carry the search across the flats. Every value found is measured at a point of the box, so the global
constant (on the box) is at least the best: a certified lower bound, the **witness**.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from innaudit.linalg import jacobian

__all__ = ["Witness", "search_witness"]

Map = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Witness:
    """The largest local constant found: ``value`` at ``point`` (a sample's shape)."""

    value: float
    point: Tensor


def _objective(fn: Map, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
    """``sigma_max(J(x))`` (``1 / sigma_min`` for the inverse) per point, -inf where not finite,
    and the matching right singular vector (float64)."""
    jac = jacobian(fn, x).double()
    finite = torch.isfinite(jac).flatten(1).all(1)
    safe = torch.where(finite[:, None, None], jac, torch.eye(jac.shape[1], jac.shape[2], dtype=jac.dtype))
    _, sv, vh = torch.linalg.svd(safe)
    value = 1.0 / sv[:, -1] if inverse else sv[:, 0]
    value = torch.where(finite & torch.isfinite(value), value, torch.full_like(value, -math.inf))
    return value, vh[:, -1 if inverse else 0]


def _gradient(fn: Map, x: Tensor, v: Tensor, inverse: bool) -> Tensor:
    """The gradient of ``||J(x) v||`` at each point (``v`` the top or bottom right singular
    vector, held fixed), by two reverse passes through a vector-Jacobian product; zero where
    autograd cannot take it (the search then climbs by its random steps)."""
    try:
        with torch.enable_grad():
            t = x.detach().clone().requires_grad_(True)
            y = fn(t).reshape(len(t), -1)
            w = torch.zeros_like(y, requires_grad=True)
            (jt_w,) = torch.autograd.grad(y, t, w, create_graph=True)
            (jv,) = torch.autograd.grad(jt_w, w, v.to(x.dtype).reshape(t.shape), create_graph=True)
            norm = jv.reshape(len(t), -1).norm(dim=1).sum()
            (g,) = torch.autograd.grad(-norm if inverse else norm, t, allow_unused=True)
    except (RuntimeError, ValueError):
        return torch.zeros_like(x)
    if g is None:
        return torch.zeros_like(x)
    return torch.where(torch.isfinite(g), g, torch.zeros_like(g)).detach()


def search_witness(
    fn: Map,
    starts: Tensor,
    low: float,
    high: float,
    *,
    steps: int,
    proposals: int,
    generator: torch.Generator,
    inverse: bool = False,
) -> Witness:
    """Climb ``sigma_max(J_F)`` (``inverse``: ``1 / sigma_min(J_F)``) from ``starts`` for
    ``steps`` steps inside ``[low, high]``: each step tries ``proposals`` random steps (each of
    a size drawn log-uniformly from a hundredth to half of the range) and the gradient's sign
    step (a tenth of the range, falling to a hundredth), all in one batch, and moves to the best
    where it is no worse (module docstring)."""
    x = starts.detach().clamp(low, high)
    n, shape = len(x), tuple(x.shape[1:])
    value, v = _objective(fn, x, inverse)
    width = float(high - low)
    for step in range(steps):
        size = width * (0.1 - 0.09 * step / max(1, steps - 1))
        tries = []
        for _ in range(proposals):
            u = torch.rand((n, *shape), generator=generator, dtype=torch.float64) * 2 - 1
            exponent = -2 + 1.7 * torch.rand((n, *([1] * len(shape))), generator=generator, dtype=torch.float64)
            tries.append(x + (width * 10**exponent * u).to(x.device, x.dtype))
        tries.append(x + size * _gradient(fn, x, v, inverse).sign())
        candidates = torch.cat(tries).clamp(low, high)
        values, vectors = _objective(fn, candidates, inverse)
        best, which = values.reshape(len(tries), n).max(0)
        moved = best >= value  # ties move too: a ReLU flow's Jacobian is flat between kinks
        rows = which * n + torch.arange(n)
        x = torch.where(moved.reshape(n, *([1] * len(shape))), candidates[rows], x)
        v = torch.where(moved[:, None], vectors[rows], v)
        value = torch.where(moved, best, value)
    top = int(torch.argmax(value))
    return Witness(float(value[top]), x[top].detach().clone())
