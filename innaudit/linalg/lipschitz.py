"""Certified global Lipschitz bounds of invertible blocks, from their parameters.

For a block ``f`` the pair ``(L, L_inv)`` bounds ``Lip(f)`` and ``Lip(f^-1)`` on all of
``R^d`` in the L2 norm (Behrmann et al., AISTATS 2021, https://arxiv.org/abs/2006.09347, the block lemmas of Section 3). A
composition is bounded by the product of its blocks' bounds.

The hook: any block (``nn.Module``) may define ``lipschitz_bounds(self) -> tuple[float, float] |
None``; when present it is used as is (``None``: no global bound exists). Residual blocks
(``innaudit.zoo.residual``) return ``(1 + c, 1 / (1 - c))``. Zoo blocks without the method are
handled by :data:`RULES`, keyed by block type and registered by the module that defines the
type (:mod:`innaudit.zoo.bounds` for the zoo's blocks).

``Lip(t)`` of a coupling net is the product of its layers' operator norms times the
activations' constants (ReLU, LeakyReLU, Tanh, ELU: 1; Sigmoid: 1/4; SiLU: 1.0998). Linear
layers: ``||W||_2`` by SVD in float64. Conv2d layers: the operator norm of the convolution *at
the input resolution* with its padding and stride, by SVD of the operator's matrix (built in
float64 by convolving the identity basis) when it has at most 2^24 entries; otherwise the bound
``sqrt(kh * kw) * ||W_mat||_2`` with ``W_mat`` the ``(C_out, C_in kh kw)`` kernel matrix:
``conv(x) = W_mat unfold(x)`` and every input element appears in at most ``kh kw`` patches, so
``||unfold(x)|| <= sqrt(kh kw) ||x||``. (The reshaped kernel's norm alone, what
``torch.nn.utils.spectral_norm`` uses, is not a bound of the operator.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RULES",
    "BlockBound",
    "block_bound",
    "conv_operator_norm",
    "layer_norm",
    "net_lipschitz",
    "register_net",
    "register_rule",
]

EXACT_CONV_ENTRIES = 1 << 24

ACTIVATIONS: dict[type[nn.Module], float] = {
    nn.ReLU: 1.0,
    nn.Tanh: 1.0,
    nn.ELU: 1.0,
    nn.Identity: 1.0,
    nn.Softplus: 1.0,
    nn.Dropout: 1.0,
    nn.Sigmoid: 0.25,
    nn.SiLU: 1.0998,
    nn.Hardtanh: 1.0,
}


@dataclass(frozen=True)
class BlockBound:
    """Bounds of one block: ``forward``/``inverse`` are None when no global bound exists.

    Attributes:
        name: the block's name (type and index).
        forward: bound on ``Lip(f)``.
        inverse: bound on ``Lip(f^-1)``.
        how: one line saying where the numbers come from, or why there are none.
    """

    name: str
    forward: float | None
    inverse: float | None
    how: str


def conv_operator_norm(layer: nn.Conv2d, in_shape: tuple[int, ...]) -> tuple[float, str]:
    """Operator norm of ``layer`` (bias excluded) on inputs of shape ``(C, H, W)``."""
    weight = layer.weight.detach().double()
    if weight.shape[-2:] == (1, 1) and layer.groups == 1 and _zero_padding(layer):
        # a 1x1 convolution applies the same matrix at every position: its norm is ||W||_2
        return float(torch.linalg.matrix_norm(weight.flatten(1), ord=2)), "exact (1x1: ||W||_2)"
    numel = math.prod(in_shape)
    out_numel = math.prod(_probe(layer, in_shape))
    if numel * out_numel <= EXACT_CONV_ENTRIES:
        basis = torch.eye(numel, dtype=torch.float64, device=weight.device).reshape(numel, *in_shape)
        out = F.conv2d(basis, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        return float(torch.linalg.matrix_norm(out.reshape(numel, -1), ord=2)), "exact operator SVD"
    kh, kw = weight.shape[-2:]
    if layer.groups == 1:
        mat = weight.reshape(weight.shape[0], -1)
        return float(math.sqrt(kh * kw) * torch.linalg.matrix_norm(mat, ord=2)), "sqrt(k) kernel bound"
    blocks = weight.reshape(layer.groups, -1, *weight.shape[1:]).flatten(2)
    norm = torch.linalg.matrix_norm(blocks, ord=2).max()
    return float(math.sqrt(kh * kw) * norm), "sqrt(k) grouped kernel bound"


def _zero_padding(layer: nn.Conv2d) -> bool:
    pad = layer.padding
    return pad != "same" and all(p == 0 for p in (pad if isinstance(pad, tuple) else (pad,)))


def layer_norm(layer: nn.Module, in_shape: tuple[int, ...]) -> float | None:
    """Lipschitz bound of one feed-forward layer (None when its type is unknown)."""
    if isinstance(layer, nn.Linear):
        return float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    if isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros":
        return conv_operator_norm(layer, in_shape)[0]
    if isinstance(layer, nn.LeakyReLU):
        return max(1.0, abs(layer.negative_slope))
    for kind, constant in ACTIVATIONS.items():
        if type(layer) is kind:
            return constant
    hook = getattr(layer, "lipschitz_constant", None)
    return float(hook()) if callable(hook) else None


NETS: dict[type[nn.Module], Callable[[Any], list[nn.Module]]] = {}
"""How to list the layers of a network type in order (the zoo registers its MLP and conv nets)."""


def _layers(net: nn.Module) -> list[nn.Module] | None:
    for kind, unpack in NETS.items():
        if isinstance(net, kind):
            return unpack(net)
    if isinstance(net, nn.Sequential):
        return list(net)
    return None


def _probe(layer: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    p = next(iter(layer.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    device = p.device if p is not None else "cpu"
    with torch.no_grad():
        return tuple(layer(torch.zeros(1, *in_shape, dtype=dtype, device=device)).shape[1:])


def net_lipschitz(net: nn.Module, in_shape: tuple[int, ...]) -> float | None:
    """``Lip(t)`` of a feed-forward net as the product of its layers' bounds (None if unknown)."""
    layers = _layers(net)
    if layers is None:
        return layer_norm(net, in_shape)
    total, shape = 1.0, in_shape
    for layer in layers:
        sub = _layers(layer)
        bound = net_lipschitz(layer, shape) if sub is not None else layer_norm(layer, shape)
        if bound is None:
            return None
        total *= bound
        shape = _probe(layer, shape)
    return total


RULES: dict[type[nn.Module], Callable[[nn.Module, tuple[int, ...]], BlockBound]] = {}
"""Bounds of block types without a ``lipschitz_bounds`` method, registered by the modules that
define those types (the zoo registers its coupling, ActNorm, 1x1 conv and permutation rules)."""


def register_rule(kind: type[nn.Module], rule: Callable[[Any, tuple[int, ...]], BlockBound]) -> None:
    """Register the bound of blocks of type ``kind``: ``rule(block, in_shape) -> BlockBound``."""
    RULES[kind] = rule


def register_net(kind: type[nn.Module], layers: Callable[[Any], list[nn.Module]]) -> None:
    """Register how to list the layers of networks of type ``kind``, in order."""
    NETS[kind] = layers


def block_bound(block: nn.Module, in_shape: tuple[int, ...], name: str = "") -> BlockBound:
    """Bounds of ``block`` on inputs of shape ``in_shape`` (no batch dimension)."""
    name = name or type(block).__name__
    hook = getattr(block, "lipschitz_bounds", None)
    if callable(hook):
        pair = hook()
        if pair is None:
            return BlockBound(name, None, None, f"{type(block).__name__}.lipschitz_bounds(): none")
        return BlockBound(name, float(pair[0]), float(pair[1]), f"{type(block).__name__}.lipschitz_bounds()")
    for kind, rule in RULES.items():
        if isinstance(block, kind):
            b = rule(block, in_shape)
            return BlockBound(name, b.forward, b.inverse, b.how)
    return BlockBound(name, None, None, f"no Lipschitz rule for block type {type(block).__name__}")
