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
bound is the **domain certificate**: in few dimensions the box is split by branch and bound (the
box with the largest bound is halved along its widest side, up to ``cells`` boxes), and the
largest bound over the boxes holds for the whole box.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from innaudit.linalg.chain import Slopes, Stage, chain_bound
from innaudit.linalg.intervals import box_certificate, box_slopes, evaluate, with_slopes
from innaudit.linalg.lipschitz import block_mirrored, block_stages
from innaudit.model.contract import InvertibleModel

__all__ = [
    "LocalCertificates",
    "ModelChain",
    "block_shapes",
    "box_bounds",
    "chain_mismatch",
    "domain_certificate",
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


def local_certificates(
    chain: ModelChain, x: Tensor, radius: float, max_unstable: float = 1.0, cells: int = 1, split_max_dim: int = 0
) -> LocalCertificates:
    """The certificates over the L_inf ball of ``radius`` around each sample of ``x`` (NaN
    where more than ``max_unstable`` of the activations keep a slope range in the ball). Where
    ``d <= split_max_dim``, a ball whose activations are not all stable is split by branch and
    bound into at most ``cells`` boxes (the largest bound over them holds for the ball)."""
    flat = x.reshape(len(x), -1).double().cpu()
    found = box_bounds(chain, flat, torch.full_like(flat, float(radius)), max_unstable=max_unstable)
    if cells <= 1 or flat.shape[1] > split_max_dim:
        return found
    limits = ((math.inf, math.inf), max_unstable)
    for i in range(len(flat)):
        if not found.unstable[i] > 0 or math.isnan(found.forward[i]):
            continue
        low, high = flat[i] - radius, flat[i] + radius
        found.forward[i] = min(found.forward[i], _branch(chain, low, high, cells, 0, limits))
        found.inverse[i] = min(found.inverse[i], _branch(chain, low, high, cells, 1, limits))
    return found


def domain_certificate(
    chain: ModelChain,
    low: Tensor,
    high: Tensor,
    cells: int,
    split_max_dim: int,
    unchanged: tuple[float, float] | None = None,
    max_unstable: float = 1.0,
) -> tuple[float, float]:
    """``(forward, inverse)`` certificates over the box ``[low, high]`` (``(d,)``): the largest
    bound over its boxes after branch and bound (``cells`` boxes at most, only where
    ``d <= split_max_dim``); NaN where the chain cannot be evaluated, inf where not certified.
    ``unchanged``: the R^d bounds, for boxes where no range narrowed or more than
    ``max_unstable`` of the activations keep a slope range (computed when None)."""
    if unchanged is None:
        back = chain.inverse_stages()
        inverse = chain_bound(back) if back is not None else None
        forward = chain_bound(chain.stages)
        unchanged = (forward if forward is not None else math.inf, inverse if inverse is not None else math.inf)
    d = low.numel()
    budget = cells if d <= split_max_dim else 1
    limits = (unchanged, max_unstable)
    return _branch(chain, low, high, budget, 0, limits), _branch(chain, low, high, budget, 1, limits)


def _values(
    chain: ModelChain, lows: Tensor, highs: Tensor, which: int, limits: tuple[tuple[float, float], float]
) -> list[float]:
    found = box_bounds(chain, (lows + highs) / 2, (highs - lows) / 2, *limits)
    return [float(v) for v in (found.forward if which == 0 else found.inverse)]


def _branch(
    chain: ModelChain, low: Tensor, high: Tensor, budget: int, which: int, limits: tuple[tuple[float, float], float]
) -> float:
    """Branch and bound on certificate ``which`` (0: forward, 1: inverse) over ``[low, high]``."""
    low, high = low.double().flatten(), high.double().flatten()
    first = _values(chain, low[None], high[None], which, limits)[0]
    if math.isnan(first):
        return math.nan
    heap: list[tuple[float, int, Tensor, Tensor]] = [(-first, 0, low, high)]
    count, used = 1, 1
    while used + 2 <= budget:
        _, _, lo, hi = heapq.heappop(heap)
        axis = int(torch.argmax(hi - lo))
        middle = (lo[axis] + hi[axis]) / 2
        left_hi, right_lo = hi.clone(), lo.clone()
        left_hi[axis], right_lo[axis] = middle, middle
        values = _values(chain, torch.stack([lo, right_lo]), torch.stack([left_hi, hi]), which, limits)
        for value, (a, b) in zip(values, ((lo, left_hi), (right_lo, hi)), strict=True):
            heapq.heappush(heap, (-(value if not math.isnan(value) else math.inf), count, a, b))
            count += 1
        used += 2
    return -heap[0][0]
