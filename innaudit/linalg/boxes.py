"""Enclosures of a chain's Jacobian over many boxes at once, in centred form, and the
certificates of ``sup ||J||`` and ``sup ||J^-1||`` over each box that follow.

A chain (:mod:`.chain`) ``M_K s_K ... s_1 M_0`` has the Jacobian ``J(x) = M_K D_K ... D_1 M_0``
with ``D_j = A_j + B_j R_j`` (``A_j`` the mean slopes over the box, ``B_j`` the half-widths of
the slope ranges, ``|R_j| <= 1``; :mod:`.intervals` finds the ranges). Telescoping from the
mean-slope chain ``J_mid`` gives the exact identity

    J(x) = J_mid + sum_j Q_j B_j R_j J_j(x),

with ``Q_j = M_K A_K ... A_(j+1) M_j`` the mean-slope chain after stage ``j`` and ``J_j(x)`` the
Jacobian of the pre-activation of stage ``j`` (the true slopes before it). With ``G_j`` the
mean-slope chain before stage ``j`` and ``|J_j(x) - G_j| <= W_j`` entrywise (``W_1 = 0``,
``W_(j+1) = |M_j| ((|A_j| + B_j) W_j + B_j |G_j|)``),

    |J(x) - J_mid| <= E = sum_j |Q_j| B_j (|G_j| + W_j)        (entrywise, non-negative).

This is the centred (mean value) form of interval matrix products (Neumaier, "Interval Methods
for Systems of Equations", Cambridge 1990, ch. 1; Moore, Kearfott, Cloud, "Introduction to
Interval Analysis", SIAM 2009, sect. 6.4): the first-order terms use the exact segments ``Q_j``
and ``G_j``, only the higher orders are widened, and ``E`` falls to 0 as the box shrinks onto a
region where every activation is stable, where ``J_mid`` is the exact Jacobian. A flow is taken
block by block (each block's Jacobian, ``d x d``, enclosed so), and the blocks' enclosures are
multiplied by the same identity with ``M = I`` and ``D_k = C_k + E_k``.

From ``|J(x) - C| <= E`` over a box: ``||J(x)|| <= min(||C|| + ||E||, || |C| + E ||)`` (the
spectral norm is monotone on non-negative matrices), and for ``2 x 2`` Jacobians the exact
supremum over the interval matrix, the largest ``||C + S o E||`` over the 16 sign patterns ``S``
(the norm is convex, so its maximum over the box of matrices is at a vertex); by Weyl's
inequality ``sigma_min(J(x)) >= sigma_min(C) - ||E||``, so ``||J(x)^-1|| <= 1 / (sigma_min(C) -
||E||)`` where that is positive. For the inverse, a mirrored inverse chain (every block's
inverse sees the forward's pre-activations: additive couplings) is enclosed the same way with
the forward's slope ranges; otherwise every block's inverse is enclosed by its Neumann series
(:mod:`.interval_inverse`) and their product in the inverse order bounded the same way, which
needs only each block's own ``sigma_min`` gap, not the whole flow's. The smallest bound holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from innaudit.linalg.chain import Affine, Slopes, Stage, compose
from innaudit.linalg.gram import ROUNDING_MARGIN
from innaudit.linalg.interval_inverse import inverse_enclosure
from innaudit.linalg.intervals import box_slopes

__all__ = [
    "BoxBounds",
    "Enclosure",
    "block_enclosures",
    "box_bounds_batch",
    "chain_enclosure",
    "enclose",
    "inverse_parts",
    "product_enclosure",
]


@dataclass(frozen=True)
class Enclosure:
    """``|J(x) - mid| <= radius`` entrywise for every ``x`` of each box: ``mid`` and ``radius``
    are ``(n, out, in)`` float64."""

    mid: Tensor
    radius: Tensor


def _runs(stages: Sequence[Stage]) -> tuple[list[Tensor], int]:
    """The dense matrices ``M_0 ... M_K`` between the activation stages (identities where two
    activations meet or at the ends), and ``K``."""
    mats: list[Tensor] = []
    run: list[Affine] = []
    dim = int(stages[0].matrix.shape[1]) if isinstance(stages[0], Affine) else int(stages[0].low.numel())
    count = 0
    for stage in stages:
        if isinstance(stage, Affine):
            run.append(stage)
            continue
        mats.append(compose(run).matrix if run else torch.eye(int(stage.low.numel()), dtype=torch.float64))
        run, dim, count = [], int(stage.low.numel()), count + 1
    mats.append(compose(run).matrix if run else torch.eye(dim, dtype=torch.float64))
    return mats, count


def _product(
    mats: Sequence[Tensor], mids: Sequence[Tensor], halves: Sequence[Tensor], inner: Sequence[Tensor] | None = None
) -> Enclosure:
    """The centred-form enclosure (module docstring) of ``M_K D_K ... D_1 M_0`` where ``D_j`` is
    ``diag(mids[j] +- halves[j])`` (``(n, dim)``; ``inner`` None) or, with ``inner`` given,
    ``mids[j] +- halves[j]`` as ``(n, dim, dim)`` matrices (the blocks' own enclosures)."""
    n = len(mids[0]) if mids else 1
    g = mats[0].expand(n, *mats[0].shape)
    w = torch.zeros_like(g)
    before: list[tuple[Tensor, Tensor]] = []
    for j, (a, b) in enumerate(zip(mids, halves, strict=True)):
        before.append((g, w))
        m = mats[j + 1]
        if inner is None:
            g, w = m @ (a[:, :, None] * g), m.abs() @ ((a.abs() + b)[:, :, None] * w + b[:, :, None] * g.abs())
        else:
            g, w = m @ (a @ g), m.abs() @ ((a.abs() + b) @ w + b @ g.abs())
    q = mats[-1].expand(n, *mats[-1].shape)
    radius = torch.zeros_like(g)
    for j in range(len(mids) - 1, -1, -1):
        gj, wj = before[j]
        a, b = mids[j], halves[j]
        if inner is None:
            radius = radius + q.abs() @ (b[:, :, None] * (gj.abs() + wj))
            q = (q * a[:, None, :]) @ mats[j]
        else:
            radius = radius + q.abs() @ (b @ (gj.abs() + wj))
            q = (q @ a) @ mats[j]
    return Enclosure(g, radius)


def enclose(stages: Sequence[Stage], slopes: Sequence[Slopes]) -> Enclosure:
    """The enclosure of one chain's Jacobian over each box, from its activation stages' slope
    ranges ``slopes`` (in order, ``(n, dim)``: :func:`~.intervals.box_slopes`)."""
    mats, count = _runs(stages)
    if count != len(slopes):
        raise ValueError(f"the chain has {count} activation stages, {len(slopes)} slope ranges were given")
    mids = [((s.low + s.high) / 2).to(torch.float64) for s in slopes]
    halves = [((s.high - s.low) / 2).clamp_min(0).to(torch.float64) for s in slopes]
    if not slopes:
        return Enclosure(mats[0][None], torch.zeros_like(mats[0])[None])
    return _product(mats, mids, halves)


def block_enclosures(blocks: Sequence[Sequence[Stage]], slopes: Sequence[Slopes]) -> list[Enclosure]:
    """Every block's own Jacobian enclosure over each box (``d x d``), in order. ``slopes``: the
    activation stages' ranges of all blocks, in order."""
    it = iter(slopes)
    return [enclose(block, [next(it) for s in block if isinstance(s, Slopes)]) for block in blocks]


def product_enclosure(parts: Sequence[Enclosure]) -> Enclosure:
    """The enclosure of the product of the blocks' Jacobians (``parts[0]`` applied first), in
    centred form (module docstring)."""
    n = max(len(p.mid) for p in parts)
    mids = [p.mid.expand(n, *p.mid.shape[1:]) for p in parts]
    halves = [p.radius.expand(n, *p.radius.shape[1:]) for p in parts]
    dims = [int(p.mid.shape[2]) for p in parts] + [int(parts[-1].mid.shape[1])]
    eyes = [torch.eye(d, dtype=torch.float64) for d in dims]
    return _product(eyes, mids, halves, inner=mids)


def chain_enclosure(blocks: Sequence[Sequence[Stage]], slopes: Sequence[Slopes]) -> Enclosure:
    """The enclosure of a flow's Jacobian over each box, block by block: every block's own
    (``d x d``), multiplied in centred form. ``slopes``: the activation stages' ranges of all
    blocks, in order."""
    return product_enclosure(block_enclosures(blocks, slopes))


def inverse_parts(parts: Sequence[Enclosure]) -> tuple[list[Enclosure], Tensor]:
    """The enclosures of the blocks' inverses, in the order the inverse flow applies them (the
    last block's first: :func:`~.interval_inverse.inverse_enclosure`), with their infinite
    radii set to 0, and per box whether every block's inverse is certified."""
    out: list[Enclosure] = []
    certified: Tensor | None = None
    for p in reversed(parts):
        if p.mid.shape[1] != p.mid.shape[2]:
            return [], torch.zeros(len(p.mid), dtype=torch.bool)
        x, r = inverse_enclosure(p.mid, p.radius)
        ok = torch.isfinite(r).flatten(1).all(1)
        certified = ok if certified is None else certified & ok
        out.append(Enclosure(x, torch.where(ok[:, None, None], r, torch.zeros_like(r))))
    assert certified is not None
    return out, certified


def _top(m: Tensor) -> Tensor:
    return torch.linalg.matrix_norm(m, ord=2) * (1 + ROUNDING_MARGIN)


def forward_bound(e: Enclosure) -> Tensor:
    """``sup ||J(x)||`` over each box from its enclosure (module docstring), ``(n,)``."""
    found = torch.minimum(_top(e.mid) + _top(e.radius), _top(e.mid.abs() + e.radius))
    if e.mid.shape[1] * e.mid.shape[2] <= 4:
        signs = torch.tensor(
            [[1.0 if (k >> t) & 1 else -1.0 for t in range(e.mid[0].numel())] for k in range(2 ** e.mid[0].numel())],
            dtype=torch.float64,
        ).reshape(-1, 1, *e.mid.shape[1:])
        vertices = e.mid[None] + signs * e.radius[None]
        found = torch.minimum(found, _top(vertices).amax(0))
    return found


def weyl_inverse(e: Enclosure) -> Tensor:
    """``sup ||J(x)^-1||`` over each box by Weyl's inequality, inf where not certified."""
    if e.mid.shape[1] != e.mid.shape[2]:
        return torch.full((len(e.mid),), math.inf, dtype=torch.float64)
    low = torch.linalg.svdvals(e.mid)[:, -1] * (1 - ROUNDING_MARGIN) - _top(e.radius)
    return torch.where(low > 0, 1.0 / low.clamp_min(1e-300), torch.full_like(low, math.inf))


@dataclass(frozen=True)
class BoxBounds:
    """Per box ``(n,)`` float64: certificates of ``sup ||J||`` (``forward``) and ``sup ||J^-1||``
    (``inverse``, inf: not certified) over it; and lower bounds of ``||J(c)||`` and ``1 /
    sigma_min(J(c))`` at its centre, ``||M|| - ||R||`` and ``1 / (sigma_min(M) + ||R||)`` from the
    point's enclosure ``|J(c) - M| <= R``: exact where every activation is stable there (``R =
    0``), within the slope rules' rounding for smooth activations, NaN where not positive (a
    kink at the centre)."""

    forward: Tensor
    inverse: Tensor
    centre_forward: Tensor
    centre_inverse: Tensor


def _split(slopes: Sequence[Slopes], n: int) -> tuple[list[Slopes], list[Slopes]]:
    first = [Slopes(s.low[:n], s.high[:n], s.act, s.carry) for s in slopes]
    second = [Slopes(s.low[n:], s.high[n:], s.act, s.carry) for s in slopes]
    return first, second


def _reordered(blocks: Sequence[Sequence[Stage]], slopes: Sequence[Slopes]) -> list[Slopes]:
    """The forward's ranges in the order a mirrored inverse chain (the blocks' inverses in
    reverse order) meets them."""
    groups, it = [], iter(slopes)
    for block in blocks:
        groups.append([next(it) for s in block if isinstance(s, Slopes)])
    return [s for group in reversed(groups) for s in group]


def box_bounds_batch(
    blocks: Sequence[Sequence[Stage]],
    inverses: Sequence[Sequence[Stage]] | None,
    low: Tensor,
    high: Tensor,
) -> BoxBounds | None:
    """The certificates over each box ``[low, high]`` (``(n, d)``) of the flow whose blocks'
    chains are ``blocks`` (``inverses``: each block's mirrored inverse chain, same order, or
    None), and the exact values at the boxes' centres; None when an activation cannot be
    evaluated."""
    n = len(low)
    stages = [s for block in blocks for s in block]
    centre = (low + high).double() / 2
    radius = ((high - low).double() / 2).clamp_min(0)
    slopes = box_slopes(stages, torch.cat([centre, centre]), torch.cat([radius, torch.zeros_like(radius)]))
    if slopes is None:
        return None
    boxes, points = _split(slopes, n)
    parts = block_enclosures(blocks, boxes)
    e = product_enclosure(parts)
    forward, inverse = forward_bound(e), weyl_inverse(e)
    if inverses is not None:  # the mirrored chain: its blocks' inverses enclosed from their own slopes
        mirrored = chain_enclosure(list(reversed(inverses)), _reordered(blocks, boxes))
        inverse = torch.minimum(inverse, forward_bound(mirrored))
    else:
        back, certified = inverse_parts(parts)
        if back:
            per_block = forward_bound(product_enclosure(back))
            inverse = torch.minimum(inverse, torch.where(certified, per_block, torch.full_like(per_block, math.inf)))
    exact = chain_enclosure(blocks, points)
    sv = torch.linalg.svdvals(exact.mid)
    slack = _top(exact.radius)  # ||J(c) - mid|| <= ||radius||: 0 where every activation is stable at c
    top = sv[:, 0] - slack
    nan = torch.full_like(top, math.nan)
    top = torch.where(top > 0, top, nan)
    bottom = 1.0 / (sv[:, -1] + slack)
    bottom = torch.where(torch.isfinite(bottom), bottom, nan)
    if exact.mid.shape[1] != exact.mid.shape[2]:
        bottom = nan
    return BoxBounds(*(v.expand(n).clone() for v in (forward, inverse, top, bottom)))  # a chain without activations
