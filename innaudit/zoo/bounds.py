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
  paper's ``1 + Lip(t)``), and the same for the inverse ``[[I, 0], [-J_t, I]]``.
- affine ``Coupling``: no global bound (the cross term ``diag(x2) g'(h) J_h`` grows with the
  input and ``1/g`` is unbounded for sigmoid and exp scales): ``None``, said so.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from innaudit.linalg.lipschitz import BlockBound, net_lipschitz, register_net, register_rule
from innaudit.zoo.layers import ActNorm, ConvNet, Coupling, FixedPermutation, InvertibleConv1x1, MLPNet, Squeeze2d

__all__: list[str] = []


def _orthogonal(block: nn.Module, in_shape: tuple[int, ...]) -> BlockBound:
    return BlockBound("", 1.0, 1.0, "orthogonal")


def _actnorm(block: ActNorm, in_shape: tuple[int, ...]) -> BlockBound:
    s = block.log_scale.detach().double()
    return BlockBound("", float(s.max().exp()), float((-s.min()).exp()), "per-channel scales")


def _conv1x1(block: InvertibleConv1x1, in_shape: tuple[int, ...]) -> BlockBound:
    s = torch.linalg.svdvals(block.weight.detach().double())
    return BlockBound("", float(s[0]), float(1 / s[-1]), "SVD of W")


def _coupling(block: Coupling, in_shape: tuple[int, ...]) -> BlockBound:
    if block.coupling != "additive":
        return BlockBound(
            "", None, None, f"affine coupling ({block.scale} scale) has no global bound: only locally bi-Lipschitz"
        )
    half = (block.split, *in_shape[1:])
    lip = net_lipschitz(block.net, half)
    if lip is None:
        return BlockBound(
            "", None, None, f"coupling net {type(block.net).__name__} has layers without a known Lipschitz constant"
        )
    bound = (lip + math.sqrt(lip * lip + 4)) / 2
    return BlockBound("", bound, bound, f"additive coupling, Lip(t) <= {lip:.4g}")


register_net(MLPNet, lambda net: [*net.body, net.out])
register_net(ConvNet, lambda net: [*net.body, net.out])
for _kind in (Squeeze2d, FixedPermutation):
    register_rule(_kind, _orthogonal)
register_rule(ActNorm, _actnorm)
register_rule(InvertibleConv1x1, _conv1x1)
register_rule(Coupling, _coupling)
