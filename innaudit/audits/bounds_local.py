"""Certificates where the model is used (the ``bounds`` audit): over each sample's neighbourhood,
and over the model's domain box, by bound propagation through the whole model's chain.

The whole model is one chain (:mod:`innaudit.linalg.chain`) when every block is one. Bound
propagation (:mod:`innaudit.linalg.intervals`) gives each activation's slope range inside a box
around a sample (the L_inf ball of the ``attack`` audit's radius by default: half a
quantization bin, the dequantization cell the model was trained on), and the chain bound with
those ranges certifies ``sup ||J_F||`` over the box (the **local certificate**) and, by Weyl's
inequality on the mean-slope chain, ``sup ||J_F^-1||`` over its image. Where every block's
inverse is a chain that sees the forward's pre-activations (additive couplings, linear blocks:
:func:`~innaudit.linalg.lipschitz.register_mirrored`), the inverse chain with the forward's slope
ranges bounds the inverse too, and the smaller bound is kept.

Over the model's domain box (``[low, high]^d``, widened to hold every audited sample) the same
bound is the **domain certificate**: in few dimensions the box is split by branch and bound
(:func:`cell_search`: the cells with the largest bounds halved along their widest side, a batch
at a time, each bounded by the centred-form enclosure of the flow's Jacobian and, for the
inverse, of its blocks' inverses, :mod:`innaudit.linalg.boxes`), until the largest bound is
within a target of the largest value found at a cell centre or ``cells`` boxes are spent; the
largest bound over the cells holds for the whole box.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from innaudit.linalg.boxes import box_bounds_batch
from innaudit.linalg.chain import Slopes, Stage, chain_bound
from innaudit.linalg.intervals import box_certificate, box_slopes, evaluate, with_slopes
from innaudit.linalg.lipschitz import block_mirrored, block_stages
from innaudit.model.contract import InvertibleModel

__all__ = [
    "CellSearch",
    "DomainCertificate",
    "LocalCertificates",
    "ModelChain",
    "block_shapes",
    "box_bounds",
    "cell_search",
    "chain_mismatch",
    "domain_search",
    "local_certificates",
    "model_chain",
]


def block_shapes(model: InvertibleModel, blocks: Sequence[InvertibleModel]) -> list[tuple[int, ...]]:
    """The input shape of every block, from a zero probe through the chain."""
    where = next(iter(model.module.parameters()), None)
    h = torch.zeros(1, *model.info.domain.shape, dtype=model.dtype, device=where.device if where is not None else "cpu")
    shapes = []
    for block in blocks:
        shapes.append(tuple(h.shape[1:]))
        h = block.carry(block.forward(h))
    return shapes


@dataclass(frozen=True)
class ModelChain:
    """The whole model as a chain, block by block.

    Attributes:
        blocks: each block's forward chain, in order.
        inverses: each block's inverse chain (same order), when every block is mirrored (its
            inverse sees its forward's pre-activations); None otherwise.
    """

    blocks: tuple[tuple[Stage, ...], ...]
    inverses: tuple[tuple[Stage, ...], ...] | None

    @property
    def stages(self) -> list[Stage]:
        """The forward chain of the whole model."""
        return [s for block in self.blocks for s in block]

    def inverse_stages(self) -> list[Stage] | None:
        """The inverse chain of the whole model (the blocks' inverses in reverse order)."""
        if self.inverses is None:
            return None
        return [s for block in reversed(self.inverses) for s in block]

    def inverse_slopes(self, forward: Sequence[Slopes]) -> list[Slopes]:
        """The forward chain's activation ranges in the order the inverse chain meets them."""
        groups, it = [], iter(forward)
        for block in self.blocks:
            groups.append([next(it) for s in block if isinstance(s, Slopes)])
        return [s for group in reversed(groups) for s in group]


def model_chain(model: InvertibleModel) -> ModelChain | None:
    """The model as a chain, or None when a block is not one (or is too large)."""
    blocks = list(model.blocks())
    if blocks:
        pairs = [(b.module, s) for b, s in zip(blocks, block_shapes(model, blocks), strict=True)]
    else:
        pairs = [(model.module, tuple(model.info.domain.shape))]
    forward, inverse = [], []
    mirrored = True
    for module, shape in pairs:
        found = block_stages(module, shape, False)
        if found is None:
            return None
        forward.append(tuple(found))
        back = block_stages(module, shape, True) if mirrored else None
        plain = not any(isinstance(s, Slopes) for s in found)
        mirrored = mirrored and back is not None and (plain or block_mirrored(module))
        inverse.append(tuple(back or ()))
    return ModelChain(tuple(forward), tuple(inverse) if mirrored else None)


def chain_mismatch(chain: ModelChain, model: InvertibleModel, x: Tensor) -> str | None:
    """Why the chain is not the model at the points ``x`` (None when it reproduces
    ``model.forward`` within float32 rounding): a local certificate is given only for a chain
    that is the model."""
    value = evaluate(chain.stages, x.reshape(len(x), -1).double().cpu())
    if value is None:
        return "an activation of the chain cannot be evaluated"
    with torch.no_grad():
        z = model.forward(x).reshape(len(x), -1).double().cpu()
    if value.shape != z.shape:
        return f"the chain gives {value.shape[1]} outputs, the model {z.shape[1]}"
    scale = z.abs().max().clamp_min(1.0)
    diff = float((value - z).abs().max() / scale)
    if not diff <= 1e-3:
        return f"the chain differs from the model's forward pass by {diff:.3g} (relative)"
    return None


@dataclass(frozen=True)
class LocalCertificates:
    """Per sample (float64; NaN where not computed).

    Attributes:
        forward: a bound on ``sup ||J_F||`` over the sample's box.
        inverse: a bound on ``sup ||J_F^-1||`` over the box's image (inf: not certified).
        unstable: the share of activation coordinates whose slope is not fixed in the box.
    """

    forward: np.ndarray
    inverse: np.ndarray
    unstable: np.ndarray

    @staticmethod
    def missing(n: int) -> LocalCertificates:
        """Nothing computed for ``n`` samples."""
        nan = np.full(n, math.nan)
        return LocalCertificates(nan, nan.copy(), nan.copy())


def _unchanged(stages: Sequence[Stage], slopes: Sequence[Slopes], index: int) -> bool:
    """Whether no activation's range narrowed in box ``index`` (the chain bound would be the
    R^d one: not worth its cost)."""
    acts = [s for s in stages if isinstance(s, Slopes)]
    return all(
        bool((s.low[index] <= a.low).all() and (s.high[index] >= a.high).all())
        for a, s in zip(acts, slopes, strict=True)
    )


def _unstable(stages: Sequence[Stage], slopes: Sequence[Slopes], index: int) -> float:
    """The share of activation coordinates whose slope range in box ``index`` still spans more
    than half of the activation's own range (a ReLU that can switch; a smooth activation whose
    pre-activation moves far)."""
    acts = [s for s in stages if isinstance(s, Slopes)]
    total = sum(a.low.numel() - a.carry for a in acts)
    loose = 0
    for a, s in zip(acts, slopes, strict=True):
        k = a.carry
        width = s.high[index, k:] - s.low[index, k:]
        loose += int((width > 0.5 * (a.high[k:] - a.low[k:])).sum())
    return loose / total if total else 0.0


def box_bounds(
    chain: ModelChain,
    centre: Tensor,
    radius: Tensor,
    unchanged: tuple[float, float] | None = None,
    max_unstable: float = 1.0,
) -> LocalCertificates:
    """The certificates over each box ``|x - centre| <= radius`` (both ``(n, d)``); NaN where
    the chain cannot be evaluated. With ``unchanged`` (the R^d bounds), a box where no
    activation's range narrowed gets those instead of the same dynamic program again. A box
    where more than ``max_unstable`` of the activations keep a slope range is not bounded (the
    program would cost as much as the R^d one for little gain): ``unchanged`` where given, NaN
    otherwise; its ``unstable`` share is kept."""
    n = len(centre)
    out = LocalCertificates.missing(n)
    c, r = centre.reshape(n, -1).double().cpu(), radius.reshape(n, -1).double().cpu()
    slopes = box_slopes(chain.stages, c, r)
    if slopes is None:
        return out
    back = chain.inverse_stages()
    mirrored = chain.inverse_slopes(slopes) if back is not None else None
    for i in range(n):
        out.unstable[i] = _unstable(chain.stages, slopes, i)
        if unchanged is not None and math.isfinite(sum(unchanged)) and _unchanged(chain.stages, slopes, i):
            out.forward[i], out.inverse[i] = unchanged
            continue
        if out.unstable[i] > max_unstable:
            if unchanged is not None:
                out.forward[i], out.inverse[i] = unchanged
            continue
        cert = box_certificate(chain.stages, slopes, i)
        if cert is None:
            continue
        inverse = cert.inverse if cert.inverse is not None else math.inf
        if back is not None and mirrored is not None:
            local = with_slopes(back, mirrored, i)
            bound = chain_bound(local) if local is not None else None
            inverse = min(inverse, bound) if bound is not None else inverse
        out.forward[i], out.inverse[i] = cert.forward, inverse
    return out


@dataclass(frozen=True)
class CellSearch:
    """Branch and bound over root boxes, per root ``(R,)``: the certified ``sup ||J_F||``
    (``forward``) and ``sup ||J_F^-1||`` (``inverse``) over the box, the largest exact values
    found at cell centres (``forward_best``, ``inverse_best``; -inf: none) and where
    (``forward_point``, ``inverse_point``, ``(R, d)``); ``cells``: boxes evaluated;
    ``converged``: every root's certificate within ``target`` times its best value."""

    forward: np.ndarray
    inverse: np.ndarray
    forward_best: np.ndarray
    inverse_best: np.ndarray
    forward_point: Tensor
    inverse_point: Tensor
    cells: int
    converged: bool


def _best(values: Tensor, root: Tensor, points: Tensor, best: Tensor, where: Tensor) -> None:
    """Raise each root's best value (and its point) by the cells' centre values (NaN: none)."""
    values = torch.where(torch.isnan(values), torch.full_like(values, -math.inf), values)
    for r in torch.unique(root).tolist():
        mine = torch.nonzero(root == r).flatten()
        k = int(torch.argmax(values[mine]))
        if values[mine[k]] > best[r]:
            best[r], where[r] = values[mine[k]], points[mine[k]]


def _ratio(upper: Tensor, best: Tensor) -> Tensor:
    lower = best.clamp_min(1e-300)
    return torch.where(best > 0, upper / lower, torch.full_like(upper, math.inf))


def cell_search(
    chain: ModelChain,
    low: Tensor,
    high: Tensor,
    *,
    target: float,
    cells: int,
    batch: int = 256,
    stop: Callable[[], bool] = lambda: False,
    unchanged: tuple[float, float] = (math.inf, math.inf),
) -> CellSearch | None:
    """Branch and bound on ``sup ||J_F||`` and ``sup ||J_F^-1||`` over each root box
    ``[low, high]`` (``(R, d)``): while a root's certificate (the largest bound over its cells)
    exceeds ``target`` times the largest exact value at a cell centre, its cells with the largest
    bound-to-value ratios are halved along their widest side, ``batch`` at a time, every batch's
    cells bounded at once (:func:`~innaudit.linalg.boxes.box_bounds_batch`); up to ``cells``
    cells in all, or until ``stop()``. A cell's bound is never above its parent's, nor above
    ``unchanged`` (bounds that hold everywhere). None when the chain cannot be evaluated."""
    lo, hi = low.double().reshape(len(low), -1), high.double().reshape(len(high), -1)
    n = len(lo)
    found = box_bounds_batch(chain.blocks, chain.inverses, lo, hi)
    if found is None:
        return None
    root = torch.arange(n)
    up_f = found.forward.clamp_max(unchanged[0])
    up_i = found.inverse.clamp_max(unchanged[1])
    best_f = torch.full((n,), -math.inf, dtype=torch.float64)
    best_i = best_f.clone()
    at_f, at_i = ((lo + hi) / 2).clone(), ((lo + hi) / 2).clone()
    centres = (lo + hi) / 2
    _best(found.centre_forward, root, centres, best_f, at_f)
    _best(found.centre_inverse, root, centres, best_i, at_i)
    used = n
    while True:
        r_f, r_i = _ratio(up_f, best_f[root]), _ratio(up_i, best_i[root])
        need = (r_f > target) | (r_i > target)
        k = min(batch, int(need.sum()), (cells - used) // 2)
        if k <= 0 or stop():
            break
        priority = torch.where(need, torch.maximum(r_f, r_i), torch.full_like(r_f, -math.inf))
        pick = torch.topk(priority, k).indices
        keep = torch.ones(len(lo), dtype=torch.bool)
        keep[pick] = False
        a, b = lo[pick], hi[pick]
        axis = torch.argmax(b - a, 1)
        middle = ((a + b) / 2).gather(1, axis[:, None])
        left_hi, right_lo = b.clone(), a.clone()
        left_hi.scatter_(1, axis[:, None], middle)
        right_lo.scatter_(1, axis[:, None], middle)
        new_lo, new_hi = torch.cat([a, right_lo]), torch.cat([left_hi, b])
        new_root = root[pick].repeat(2)
        child = box_bounds_batch(chain.blocks, chain.inverses, new_lo, new_hi)
        if child is None:
            return None
        child_f = torch.minimum(child.forward, up_f[pick].repeat(2))
        child_i = torch.minimum(child.inverse, up_i[pick].repeat(2))
        mids = (new_lo + new_hi) / 2
        _best(child.centre_forward, new_root, mids, best_f, at_f)
        _best(child.centre_inverse, new_root, mids, best_i, at_i)
        lo, hi, root = torch.cat([lo[keep], new_lo]), torch.cat([hi[keep], new_hi]), torch.cat([root[keep], new_root])
        up_f, up_i = torch.cat([up_f[keep], child_f]), torch.cat([up_i[keep], child_i])
        used += 2 * k
    done = not bool(((_ratio(up_f, best_f[root]) > target) | (_ratio(up_i, best_i[root]) > target)).any())
    empty = torch.full((n,), -math.inf, dtype=torch.float64)
    top_f = empty.scatter_reduce(0, root, up_f, "amax")
    top_i = empty.clone().scatter_reduce(0, root, up_i, "amax")
    return CellSearch(top_f.numpy(), top_i.numpy(), best_f.numpy(), best_i.numpy(), at_f, at_i, used, done)


def local_certificates(
    chain: ModelChain,
    x: Tensor,
    radius: float,
    max_unstable: float = 1.0,
    cells: int = 1,
    split_max_dim: int = 0,
    target: float = 1.1,
    stop: Callable[[], bool] = lambda: False,
) -> LocalCertificates:
    """The certificates over the L_inf ball of ``radius`` around each sample of ``x``: the
    smaller of the chain bound with the ball's slope ranges (where at most ``max_unstable`` of
    the activations keep a slope range: NaN otherwise) and the centred-form enclosure of the
    Jacobian (:mod:`innaudit.linalg.boxes`). Where ``d <= split_max_dim`` the balls are split by
    branch and bound (:func:`cell_search`, ``cells`` boxes per ball on average, until each
    ball's certificate is within ``target`` of the largest exact value found in it); in more
    dimensions a ball is not split, and one where more than ``max_unstable`` of the activations
    keep a slope range gets no enclosure either (it would cost more than the R^d bound and say
    less)."""
    flat = x.reshape(len(x), -1).double().cpu()
    found = box_bounds(chain, flat, torch.full_like(flat, float(radius)), max_unstable=max_unstable)
    split = flat.shape[1] <= split_max_dim
    rows = np.arange(len(flat)) if split else np.flatnonzero(found.unstable <= max_unstable)
    if not len(rows):
        return found
    pick = torch.as_tensor(rows)
    budget = len(rows) * (cells if split else 1)
    searched = cell_search(chain, flat[pick] - radius, flat[pick] + radius, target=target, cells=budget, stop=stop)
    if searched is None:
        return found
    forward, inverse = found.forward.copy(), found.inverse.copy()
    forward[rows] = np.fmin(forward[rows], searched.forward)
    inverse[rows] = np.fmin(inverse[rows], searched.inverse)
    return LocalCertificates(forward, inverse, found.unstable)


@dataclass(frozen=True)
class DomainCertificate:
    """The certificates over the domain box and the search behind them.

    Attributes:
        forward, inverse: certified ``sup ||J_F||`` and ``sup ||J_F^-1||`` over the box (NaN:
            the chain cannot be evaluated; inf: not certified).
        points: the cells' centres with the largest exact ``||J_F||`` and ``1 / sigma_min`` found
            (``(2, d)``, forward then inverse; empty when none), for the witness to measure.
        cells: boxes evaluated; converged: whether the certificate reached the target.
    """

    forward: float
    inverse: float
    points: Tensor
    cells: int
    converged: bool


def domain_search(
    chain: ModelChain,
    low: Tensor,
    high: Tensor,
    cells: int,
    split_max_dim: int,
    unchanged: tuple[float, float] | None = None,
    max_unstable: float = 1.0,
    target: float = 1.1,
    stop: Callable[[], bool] = lambda: False,
) -> DomainCertificate:
    """The certificates over the box ``[low, high]`` (``(d,)``): branch and bound
    (:func:`cell_search`, up to ``cells`` boxes, only where ``d <= split_max_dim``) with the
    centred-form bound of every cell, and the chain bound of the whole box; the smaller holds.
    ``unchanged``: the R^d bounds (computed when None)."""
    if unchanged is None:
        back = chain.inverse_stages()
        inverse = chain_bound(back) if back is not None else None
        forward = chain_bound(chain.stages)
        unchanged = (forward if forward is not None else math.inf, inverse if inverse is not None else math.inf)
    lo, hi = low.double().flatten(), high.double().flatten()
    whole = box_bounds(chain, ((lo + hi) / 2)[None], ((hi - lo) / 2)[None], unchanged, max_unstable)
    if math.isnan(whole.forward[0]):
        return DomainCertificate(math.nan, math.nan, torch.zeros(0, lo.numel()), 1, False)
    budget = cells if lo.numel() <= split_max_dim else 1
    searched = cell_search(
        chain,
        lo[None],
        hi[None],
        target=target,
        cells=budget,
        stop=stop,
        unchanged=(whole.forward[0], whole.inverse[0]),
    )
    if searched is None:
        return DomainCertificate(float(whole.forward[0]), float(whole.inverse[0]), torch.zeros(0, lo.numel()), 1, False)
    points = torch.stack([searched.forward_point[0], searched.inverse_point[0]])
    return DomainCertificate(
        float(min(whole.forward[0], searched.forward[0])),
        float(min(whole.inverse[0], searched.inverse[0])),
        points,
        searched.cells,
        searched.converged,
    )
