"""Certified Lipschitz bounds of the zoo's blocks, registered with :mod:`innaudit.linalg.lipschitz`.

A block ``f`` has a global bound ``Lip(f)`` when ``||f(x) - f(y)|| <= Lip(f) ||x - y||`` for all
``x, y`` (L2 norm); a composition is bounded by the product of its blocks' bounds (Behrmann et
al., "Understanding and Mitigating Exploding Inverses in Invertible Neural Networks", AISTATS
2021, https://arxiv.org/abs/2006.09347, Section 3). The zoo's rules:

- ``Squeeze2d``, ``FixedPermutation``: orthogonal, ``(1, 1)``.
- ``ActNorm``: ``(max exp(log_scale), 1 / min exp(log_scale))``.
- ``InvertibleConv1x1``: ``(sigma_max(W), 1 / sigma_min(W))``, SVD in float64 (the map is
  ``W`` at every position, a block-diagonal operator with the same singular values).
- additive ``Coupling``: ``J = [[I, 0], [J_t, I]]`` with ``||J_t|| <= L = Lip(t)``. The
  singular values of that block matrix are ``(s + sqrt(s^2 + 4)) / 2`` and its reciprocal for
  each singular value ``s`` of ``J_t``, so ``Lip <= (L + sqrt(L^2 + 4)) / 2 <= 1 + L`` (the
  paper's ``1 + Lip(t)``), and the same for the inverse ``[[I, 0], [-J_t, I]]``; the smaller of
  that and the chain bound of ``x + E t(P x)`` (:mod:`innaudit.linalg.chain`) is kept.
- affine ``Coupling``: no global bound. The cross term ``diag(x2 + t) g'(h) J_h`` grows with the
  input, and ``1 / g`` is unbounded for the ``exp`` and ``sigmoid(h + 2)`` scales; even the
  ``bounded`` scale (``g`` in ``(0.5, 1)``) keeps the cross term. The certificate is empirical:
  the ``bounds`` audit measures the log-scale range on the data instead.
- ``ResidualBlock``: a residual branch (``y = x + g(x)``) of linear / conv layers with their
  effective normalized weights and LipSwish (slope in ``[-0.0908, 0.9999]``); the library's own
  estimate is the stored power-iteration ``sigma`` of each layer: ``||W / max(1, sigma / c)||``
  is believed to be ``min(sigma, c)``.

Every affine zoo block is also registered as a chain stage (its matrix and offset, by probing the
map on the identity basis in float64), so a flow built only of them has a whole-model chain
bound. An additive coupling's inverse evaluates ``t`` at ``y_1 = x_1``, the forward's points, so
it is registered as mirrored: slope ranges found for the forward hold for its inverse. LipSwish's
slope range on an interval is SiLU's divided by 1.1.
"""

from __future__ import annotations

import copy
import math
from typing import Any, cast

import torch
from torch import Tensor, nn

from innaudit.core.bound_kind import BoundKind
from innaudit.linalg.chain import Affine, Stage, chain_bound, net_stages, skip_stages
from innaudit.linalg.intervals import register_interval_slopes, silu_slopes
from innaudit.linalg.lipschitz import (
    BlockBound,
    ResidualBranch,
    flat_layers,
    net_bound,
    register_chain,
    register_mirrored,
    register_net,
    register_residual,
    register_rule,
)
from innaudit.zoo.layers import ActNorm, ConvNet, Coupling, FixedPermutation, InvertibleConv1x1, MLPNet, Squeeze2d
from innaudit.zoo.residual import ResidualBlock
from innaudit.zoo.spectral import LipSwish, SpectralConv2d, SpectralLayer

__all__: list[str] = []

CHAIN_MAX_DIM = 4096
"""A zoo block is offered as a chain stage only when its matrices have at most this many rows."""


def _orthogonal(block: nn.Module, in_shape: tuple[int, ...]) -> BlockBound:
    return BlockBound("", 1.0, 1.0, "orthogonal", kind=BoundKind.LINEAR)


def _actnorm(block: ActNorm, in_shape: tuple[int, ...]) -> BlockBound:
    s = block.log_scale.detach().double()
    return BlockBound("", float(s.max().exp()), float((-s.min()).exp()), "per-channel scales", kind=BoundKind.LINEAR)


def _conv1x1(block: InvertibleConv1x1, in_shape: tuple[int, ...]) -> BlockBound:
    s = torch.linalg.svdvals(block.weight.detach().double())
    return BlockBound("", float(s[0]), float(1 / s[-1]), "SVD of W", kind=BoundKind.LINEAR)


def _coupling(block: Coupling, in_shape: tuple[int, ...]) -> BlockBound:
    if block.coupling != "additive":
        reason = {
            "exp": "the exp scale is unbounded above and below",
            "sigmoid": "the sigmoid(h + 2) scale is unbounded below (1/g has no bound)",
            "bounded": "the scale lies in (0.5, 1), but the cross term (x2 + t) g'(h) J_h grows with the input",
        }.get(block.scale, f"the {block.scale} scale")
        return BlockBound(
            "",
            None,
            None,
            f"affine coupling ({block.scale} scale) has no global bound: only locally bi-Lipschitz",
            kind=BoundKind.AFFINE_SCALE_BOUNDED if block.scale == "bounded" else BoundKind.AFFINE_SCALE_UNBOUNDED,
            empirical=reason,
        )
    half = (block.split, *in_shape[1:])
    found = net_bound(block.net, half)
    if found is None:
        return BlockBound(
            "",
            None,
            None,
            f"coupling net {type(block.net).__name__} has layers without a known Lipschitz constant",
            kind=BoundKind.ADDITIVE,
        )
    lip = found.bound
    forward = inverse = (lip + math.sqrt(lip * lip + 4)) / 2
    how = f"additive coupling, Lip(t) <= {lip:.4g} ({found.describe()})"
    for direction in (False, True):
        stages = _coupling_stages(block, in_shape, direction)
        chained = chain_bound(stages) if stages is not None else None
        if chained is not None:
            if direction:
                inverse = min(inverse, chained)
            else:
                forward = min(forward, chained)
    return BlockBound("", forward, inverse, how, kind=BoundKind.ADDITIVE, layers=found.layers)


def _coupling_stages(block: Coupling, in_shape: tuple[int, ...], inverse: bool) -> list[Stage] | None:
    """``x -> x +- E t(P x)``: ``P`` picks the first ``split`` channels, ``E`` writes the rest."""
    if block.coupling != "additive":
        return None
    dim = math.prod(in_shape)
    if dim > CHAIN_MAX_DIM:
        return None
    inner = net_stages(flat_layers(block.net), (block.split, *in_shape[1:]))
    if inner is None or any(isinstance(s, Affine) and max(s.matrix.shape) > CHAIN_MAX_DIM for s in inner):
        return None
    spatial = math.prod(in_shape[1:])
    first = block.split * spatial
    index = torch.arange(dim)
    return skip_stages(inner, dim, index[:first], index[first:], -1.0 if inverse else 1.0)


def _affine_map(block: nn.Module, in_shape: tuple[int, ...], inverse: bool) -> Affine | None:
    """An affine block (or its inverse, on the block's output shape) by probing a float64 copy:
    column ``i`` of the matrix is ``f(e_i) - f(0)``, the offset ``f(0)``."""
    dim = math.prod(in_shape)
    if dim > CHAIN_MAX_DIM:
        return None
    double: Any = copy.deepcopy(block).double().eval()
    shape = in_shape
    with torch.no_grad():
        if inverse:
            shape = tuple(double(torch.zeros(1, *in_shape, dtype=torch.float64))[0].shape[1:])
        basis = torch.cat([torch.zeros(1, dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64)])
        basis = basis.reshape(dim + 1, *shape)
        out = cast(Tensor, double.inverse(basis)) if inverse else double(basis)[0]
    out = out.reshape(dim + 1, -1)
    return Affine((out[1:] - out[:1]).t(), out[0].clone())


def _affine_stages(block: nn.Module, in_shape: tuple[int, ...], inverse: bool) -> list[Stage] | None:
    stage = _affine_map(block, in_shape, inverse)
    return [stage] if stage is not None else None


def _effective(layer: SpectralLayer) -> nn.Module:
    """A plain ``nn.Linear`` / ``nn.Conv2d`` holding the normalized weight the layer applies in eval."""
    was = layer.training
    layer.eval()
    with torch.no_grad():
        weight = layer.normalized_weight().detach().clone()
    layer.train(was)
    bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
    if isinstance(layer, SpectralConv2d):
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[-1], padding=layer.padding)
        conv.weight, conv.bias = nn.Parameter(weight, requires_grad=False), bias
        return conv
    linear = nn.Linear(weight.shape[1], weight.shape[0])
    linear.weight, linear.bias = nn.Parameter(weight, requires_grad=False), bias
    return linear


def _residual(block: ResidualBlock, in_shape: tuple[int, ...]) -> ResidualBranch:
    spectral = [cast(SpectralLayer, la) for la in block.layers]
    layers: list[nn.Module] = []
    for i, layer in enumerate(spectral):
        if i:
            layers.append(block.act)
        layers.append(_effective(layer))
    believed = [min(float(la.sigma), la.coeff) for la in spectral]
    estimate = math.prod(believed) * block.act.lipschitz ** (len(spectral) - 1)
    return ResidualBranch(
        tuple(layers), estimate, "stored power-iteration sigma of each layer: ||W_eff|| = min(sigma, c)"
    )


def _lipswish_slopes(act: LipSwish, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """LipSwish is SiLU / 1.1: its slopes on ``[lo, hi]`` are SiLU's divided by 1.1."""
    low, high = silu_slopes(lo, hi)
    return low / 1.1, high / 1.1


register_net(MLPNet, lambda net: [*net.body, net.out])
register_net(ConvNet, lambda net: [*net.body, net.out])
for _kind in (Squeeze2d, FixedPermutation):
    register_rule(_kind, _orthogonal)
register_rule(ActNorm, _actnorm)
register_rule(InvertibleConv1x1, _conv1x1)
register_rule(Coupling, _coupling)
for _affine in (Squeeze2d, FixedPermutation, ActNorm, InvertibleConv1x1):
    register_chain(_affine, _affine_stages)
register_chain(Coupling, _coupling_stages)
register_residual(lambda block: isinstance(block, ResidualBlock), _residual)
register_mirrored(Coupling)
register_interval_slopes(LipSwish, _lipswish_slopes)
