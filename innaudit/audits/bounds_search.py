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

from innaudit.linalg import jacobian, jacobian_singular_values

__all__ = ["Witness", "search_witness"]

Map = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Witness:
    """The largest local constant found: ``value`` at ``point`` (a sample's shape)."""

    value: float
    point: Tensor


def _objective(fn: Map, x: Tensor, inverse: bool) -> Tensor:
    """``sigma_max(J(x))`` (``1 / sigma_min`` for the inverse) per point; -inf where not finite."""
    sv = jacobian_singular_values(fn, x)
    value = 1.0 / sv[:, -1] if inverse else sv[:, 0]
    return torch.where(torch.isfinite(value), value, torch.full_like(value, -math.inf))


def _gradient(fn: Map, x: Tensor, inverse: bool) -> Tensor:
    """The gradient of ``||J(x) v||`` at each point (``v`` the top or bottom right singular
    vector, held fixed), by two reverse passes through a vector-Jacobian product; zero where
    autograd cannot take it (the search then climbs by its random steps)."""
    try:
        jac = jacobian(fn, x).double()
        v = torch.linalg.svd(jac).Vh[:, -1 if inverse else 0].to(x.dtype)
        with torch.enable_grad():
            t = x.detach().clone().requires_grad_(True)
            y = fn(t).reshape(len(t), -1)
            w = torch.zeros_like(y, requires_grad=True)
            (jt_w,) = torch.autograd.grad(y, t, w, create_graph=True)
            (jv,) = torch.autograd.grad(jt_w, w, v.reshape(t.shape), create_graph=True)
            norm = jv.reshape(len(t), -1).norm(dim=1).sum()
            (g,) = torch.autograd.grad(-norm if inverse else norm, t, allow_unused=True)
    except (RuntimeError, ValueError, torch.linalg.LinAlgError):
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
    value = _objective(fn, x, inverse)
    width = float(high - low)
    for step in range(steps):
        size = width * (0.1 - 0.09 * step / max(1, steps - 1))
        tries = []
        for _ in range(proposals):
            u = torch.rand((n, *shape), generator=generator, dtype=torch.float64) * 2 - 1
            scale = width * 10 ** (
                -2 + 1.7 * torch.rand((n, *([1] * len(shape))), generator=generator, dtype=torch.float64)
            )
            tries.append(x + (scale * u).to(x.device, x.dtype))
        tries.append(x + size * _gradient(fn, x, inverse).sign())
        candidates = torch.cat(tries).clamp(low, high)
        values = _objective(fn, candidates, inverse).reshape(len(tries), n)
        best, which = values.max(0)
        moved = best >= value  # ties move too: a ReLU flow's Jacobian is flat between kinks
        picked = candidates.reshape(len(tries), n, *shape)[which, torch.arange(n)]
        x = torch.where(moved.reshape(n, *([1] * len(shape))), picked, x)
        value = torch.where(moved, best, value)
    top = int(torch.argmax(value))
    return Witness(float(value[top]), x[top].detach().clone())
