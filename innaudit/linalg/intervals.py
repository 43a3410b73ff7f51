"""Bound propagation through a chain: every activation's slope range inside a box, and the
certificates of ``sup ||J||`` and ``sup ||J^-1||`` over the box that follow.

A chain (:mod:`.chain`) whose stages carry their offsets and activations can be evaluated. Pushed
through it, a box ``{x : |x_i - c_i| <= r_i}`` stays, at every state ``h``, inside
``{h : |h_i - h_i(c)| <= r_h,i}`` by centre-radius interval arithmetic (interval bound
propagation; Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training
Verifiably Robust Models", 2018, https://arxiv.org/abs/1810.12715):

- affine ``h -> M h + b``: centre ``M h(c) + b``, radius ``|M| r`` (runs of affine stages are
  multiplied first, ``|M_2 M_1| <= |M_2| |M_1|``);
- element-wise ``s``: the pre-activation interval is ``[h(c) - r, h(c) + r]``, the slopes of ``s``
  on it lie in ``[lo, hi]`` (:func:`interval_slopes`), the centre is ``s(h(c))`` and the radius
  ``max(|lo|, |hi|) r`` (mean value theorem).

Up to :data:`ZONOTOPE_MAX_DIM` input coordinates, the affine form ``h(x) - h(c) = G (x - c) + e``
is carried too (zonotope propagation, as in DeepZ: Singh et al., "Fast and Effective Robustness
Certification", NeurIPS 2018): ``G`` through an affine map ``M G``, through an activation
``diag(mid) G`` with the error ``|mid| |e| + half r``; the radius ``|G| r_0 + |e|`` is exact through
stable activations, and the smaller of the two radii is used.

The chain with each activation's slope range replaced by its range inside the box (a ReLU whose
pre-activation keeps its sign over the box has slope exactly 0 or 1, so it adds no cut set) is
bounded by the same dynamic program (:func:`~.chain.chain_parts`): a certificate of
``sup ||J(x)||`` over the box, which bounds the chain's Lipschitz constant on the box (it is
convex). With the mean-slope chain ``J_mid`` and ``delta = bound - ||J_mid||`` (the sum over the
non-empty cut sets, a bound on ``||J(x) - J_mid||`` over the box), Weyl's inequality gives
``sigma_min(J(x)) >= sigma_min(J_mid) - delta``, so ``sup ||J(x)^-1|| <= 1 / (sigma_min(J_mid) -
delta)`` where that is positive: the inverse's local constant over the image of the box. Where
every activation is stable in the box, both are exact: ``||J(c)||`` and ``1 / sigma_min(J(c))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from innaudit.linalg.chain import Affine, Slopes, Stage, chain_parts, compose

__all__ = [
    "INTERVAL_SLOPES",
    "BoxCertificate",
    "box_certificate",
    "box_slopes",
    "evaluate",
    "interval_slopes",
    "register_interval_slopes",
    "silu_slopes",
    "with_slopes",
]

SlopeRule = Callable[[Any, Tensor, Tensor], tuple[Tensor, Tensor]]

ZONOTOPE_MAX_DIM = 256
"""Up to this many input coordinates the propagation also carries the affine form of every
state (a ``(state, input)`` matrix per box), which keeps stable activations exact."""

SILU_CRITICAL = 2.399357280515467
"""``+-x*`` are the only critical points of ``d/dx x sigmoid(x)`` (its minimum and maximum)."""


def _relu(m: nn.Module, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    return (lo > 0).to(lo.dtype), (hi >= 0).to(lo.dtype)


def _leaky(m: nn.LeakyReLU, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    a = float(m.negative_slope)
    neg = torch.full_like(lo, a)
    pos = torch.ones_like(lo)
    low = torch.where(lo > 0, pos, torch.where(hi < 0, neg, torch.minimum(neg, pos)))
    high = torch.where(lo > 0, pos, torch.where(hi < 0, neg, torch.maximum(neg, pos)))
    return low, high


def _unimodal(derivative: Callable[[Tensor], Tensor]) -> SlopeRule:
    """A derivative that rises up to 0 and falls after it (tanh, sigmoid): its largest value on
    ``[lo, hi]`` is at the point nearest 0, its smallest at an end."""

    def rule(m: Any, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        peak = derivative(torch.clamp(torch.zeros_like(lo), lo, hi))
        return torch.minimum(derivative(lo), derivative(hi)), peak

    return rule


def _silu_derivative(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def silu_slopes(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """The range of ``d/dx x sigmoid(x)`` on ``[lo, hi]``: the smallest and largest of its values
    at the ends and at the critical points ``+-x*`` inside, widened by ``1e-9`` (``x*`` is
    rounded)."""
    values = [_silu_derivative(lo), _silu_derivative(hi)]
    low = torch.minimum(*values)
    high = torch.maximum(*values)
    for point in (-SILU_CRITICAL, SILU_CRITICAL):
        inside = (lo <= point) & (point <= hi)
        at = _silu_derivative(torch.full_like(lo, point))
        low = torch.where(inside, torch.minimum(low, at), low)
        high = torch.where(inside, torch.maximum(high, at), high)
    return low - 1e-9, high + 1e-9


def _softplus(m: nn.Softplus, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    beta, threshold = float(m.beta), float(m.threshold)
    high = torch.where(hi * beta > threshold, torch.ones_like(hi), torch.sigmoid(beta * hi))
    return torch.sigmoid(beta * lo), high


def _ones(m: Any, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    return torch.ones_like(lo), torch.ones_like(hi)


INTERVAL_SLOPES: dict[type[nn.Module], SlopeRule] = {
    nn.ReLU: _relu,
    nn.LeakyReLU: _leaky,
    nn.Tanh: _unimodal(lambda x: 1 - torch.tanh(x) ** 2),
    nn.Sigmoid: _unimodal(lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x))),
    nn.Softplus: _softplus,
    nn.SiLU: lambda m, lo, hi: silu_slopes(lo, hi),
    nn.Identity: _ones,
    nn.Dropout: _ones,
}
"""The slope range of each activation type on an interval of pre-activations (exact type match)."""


def register_interval_slopes(kind: type[nn.Module], rule: SlopeRule) -> None:
    """Declare ``rule(module, lo, hi) -> (low, high)``: the range of the derivative of modules
    of type ``kind`` on the intervals ``[lo, hi]`` (element-wise)."""
    INTERVAL_SLOPES[kind] = rule


def interval_slopes(stage: Slopes, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """The slopes of ``stage``'s activation on the pre-activation intervals ``[lo, hi]`` (its
    non-carried coordinates), within the stage's own range; the stage's range where the
    activation has no interval rule."""
    low, high = stage.low[stage.carry :].to(lo.dtype), stage.high[stage.carry :].to(lo.dtype)
    rule = INTERVAL_SLOPES.get(type(stage.act)) if stage.act is not None else None
    if rule is None:
        return low.expand_as(lo), high.expand_as(hi)
    a, b = rule(stage.act, lo, hi)
    return torch.maximum(a, low), torch.minimum(b, high)


def _apply(stage: Slopes, h: Tensor) -> Tensor:
    assert stage.act is not None
    with torch.no_grad():
        return torch.cat([h[:, : stage.carry], stage.act(h[:, stage.carry :])], 1)


def _merged(stages: Sequence[Stage]) -> list[Stage]:
    """Adjacent affine stages multiplied into one (tighter radii)."""
    out: list[Stage] = []
    run: list[Affine] = []
    for stage in stages:
        if isinstance(stage, Affine):
            run.append(stage)
            continue
        if run:
            out.append(compose(run))
            run = []
        out.append(stage)
    if run:
        out.append(compose(run))
    return out


def _walk(stages: Sequence[Stage], centre: Tensor, radius: Tensor) -> tuple[Tensor, list[Slopes]] | None:
    """The chain's value at the centres ``(n, d)`` and, for every sample, each activation stage
    with its slope range inside the box of ``radius``, as ``Slopes`` with ``(n, dim)`` ranges.

    Two enclosures of ``h(x) - h(c)`` are carried and the tighter one used at every
    activation: the interval radius ``r`` and the affine form ``G (x - c) + e`` (``G`` the
    product of the affine maps and the activations' mean slopes, ``|e_i| <= err_i`` the error
    the slope ranges' half-widths add: a zonotope, exact through stable activations), whose
    radius is ``|G| r_0 + err``; at points (every radius 0) only the value is carried."""
    if any(isinstance(s, Slopes) and s.act is None for s in stages):
        return None
    c, r0 = centre.to(torch.float64), radius.to(torch.float64)
    r = r0.clone()
    # at points (every radius 0) the affine form adds nothing: its radius |G| 0 + 0 is the interval's
    boxes = r0.shape[1] <= ZONOTOPE_MAX_DIM and bool(r0.any())
    g = torch.diag_embed(torch.ones_like(r0)) if boxes else None
    err = torch.zeros_like(r0)
    found: list[Slopes] = []
    for stage in _merged(stages):
        if isinstance(stage, Affine):
            m = stage.matrix.to(torch.float64)
            c = c @ m.mT + (stage.offset.to(torch.float64) if stage.offset is not None else 0.0)
            r = r @ m.abs().mT
            if g is not None:
                g, err = torch.matmul(m, g), err @ m.abs().mT
            continue
        k = stage.carry
        if g is not None:
            r = torch.minimum(r, (g.abs() @ r0[:, :, None])[:, :, 0] + err)
        lo, hi = interval_slopes(stage, c[:, k:] - r[:, k:], c[:, k:] + r[:, k:])
        ones = torch.ones(len(c), k, dtype=torch.float64)
        low, high = torch.cat([ones, lo], 1), torch.cat([ones, hi], 1)
        found.append(Slopes(low, high, stage.act, k))
        c = _apply(stage, c)
        if g is not None:
            mid, half = (low + high) / 2, (high - low) / 2
            g, err = mid[:, :, None] * g, mid.abs() * err + half * r
        r = r * torch.maximum(low.abs(), high.abs())
    return c, found


def evaluate(stages: Sequence[Stage], x: Tensor) -> Tensor | None:
    """The chain at the points ``x`` ``(n, d)``, in float64; None when an activation is unknown."""
    walked = _walk(stages, x.reshape(len(x), -1), torch.zeros_like(x.reshape(len(x), -1), dtype=torch.float64))
    return walked[0] if walked is not None else None


def with_slopes(stages: Sequence[Stage], slopes: Sequence[Slopes], index: int) -> list[Stage] | None:
    """``stages`` with its activation stages' ranges replaced, in order, by sample ``index`` of
    ``slopes``; None when their number or sizes differ."""
    acts = [s for s in stages if isinstance(s, Slopes)]
    if len(acts) != len(slopes) or any(a.low.numel() != s.low.shape[1] for a, s in zip(acts, slopes, strict=True)):
        return None
    it = iter(slopes)
    out: list[Stage] = []
    for stage in stages:
        if isinstance(stage, Slopes):
            s = next(it)
            out.append(Slopes(s.low[index], s.high[index], stage.act, stage.carry))
        else:
            out.append(stage)
    return out


def box_slopes(stages: Sequence[Stage], centre: Tensor, radius: Tensor) -> list[Slopes] | None:
    """Every activation stage's slope range inside each box (``centre``, ``radius``: ``(n, d)``),
    ranges ``(n, dim)``; None when an activation is unknown (the chain cannot be evaluated)."""
    walked = _walk(stages, centre.reshape(len(centre), -1), radius.reshape(len(radius), -1))
    return walked[1] if walked is not None else None


@dataclass(frozen=True)
class BoxCertificate:
    """Certificates over one box.

    Attributes:
        forward: a bound on ``sup ||J(x)||`` over the box.
        inverse: a bound on ``sup ||J(x)^-1||`` over the box, ``1 / (sigma_min(J_mid) - delta)``;
            None when ``delta >= sigma_min(J_mid)`` (not certified) or the chain is not square.
        delta: the bound on ``||J(x) - J_mid||`` over the box.
        unstable: the share of activation coordinates whose slope is not fixed in the box.
    """

    forward: float
    inverse: float | None
    delta: float
    unstable: float


def box_certificate(stages: Sequence[Stage], slopes: Sequence[Slopes], index: int) -> BoxCertificate | None:
    """The certificates of the chain over sample ``index``'s box, from its slope ranges
    (:func:`box_slopes`); None when the chain is too wide (:func:`~.chain.chain_limit`)."""
    local = with_slopes(stages, slopes, index)
    parts = chain_parts(local) if local is not None else None
    if parts is None or local is None:
        return None
    delta = max(parts.bound - parts.mid_norm, 0.0)
    inverse = None
    if parts.mid.numel() and parts.mid.shape[0] == parts.mid.shape[1]:
        sigma_min = float(torch.linalg.svdvals(parts.mid)[-1])
        gap = sigma_min * (1 - 1e-9) - delta
        inverse = 1.0 / gap if gap > 0 else None
    acts = [s for s in local if isinstance(s, Slopes)]
    total = sum(a.low.numel() - a.carry for a in acts)
    loose = sum(int((a.high[a.carry :] > a.low[a.carry :]).sum()) for a in acts)
    return BoxCertificate(parts.bound, inverse, delta, loose / total if total else 0.0)
