"""Certified global Lipschitz bounds of invertible blocks, from their parameters.

For a block ``f`` the pair ``(L, L_inv)`` bounds ``Lip(f)`` and ``Lip(f^-1)`` on all of
``R^d`` in the L2 norm (paper-spec.md 3.1; Behrmann et al., AISTATS 2021, block lemmas). A
composition is bounded by the product of its blocks' bounds.

The hook: any block (``nn.Module``) may define ``lipschitz_bounds(self) -> tuple[float, float] |
None``; when present it is used as is (``None``: no global bound exists). Residual blocks
(``innaudit.zoo.residual``) return ``(1 + c, 1 / (1 - c))``. Zoo blocks without the method are
handled by :data:`RULES`, keyed by block type:

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

import torch
import torch.nn.functional as F
from torch import nn

from .zoo.layers import ActNorm, ConvNet, Coupling, FixedPermutation, InvertibleConv1x1, MLPNet, Squeeze2d

__all__ = ["RULES", "BlockBound", "block_bound", "conv_operator_norm", "layer_norm",
           "net_lipschitz"]

EXACT_CONV_ENTRIES = 1 << 24

ACTIVATIONS: dict[type[nn.Module], float] = {
    nn.ReLU: 1.0, nn.Tanh: 1.0, nn.ELU: 1.0, nn.Identity: 1.0, nn.Softplus: 1.0,
    nn.Dropout: 1.0, nn.Sigmoid: 0.25, nn.SiLU: 1.0998, nn.Hardtanh: 1.0,
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


def _layers(net: nn.Module) -> list[nn.Module] | None:
    if isinstance(net, (MLPNet, ConvNet)):
        return [*net.body, net.out]
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
        return BlockBound("", None, None, f"affine coupling ({block.scale} scale) has no global "
                          "bound: only locally bi-Lipschitz")
    half = (block.split, *in_shape[1:])
    lip = net_lipschitz(block.net, half)
    if lip is None:
        return BlockBound("", None, None, f"coupling net {type(block.net).__name__} has layers "
                          "without a known Lipschitz constant")
    bound = (lip + math.sqrt(lip * lip + 4)) / 2
    return BlockBound("", bound, bound, f"additive coupling, Lip(t) <= {lip:.4g}")


RULES: dict[type[nn.Module], Callable[[nn.Module, tuple[int, ...]], BlockBound]] = {
    Squeeze2d: _orthogonal,
    FixedPermutation: _orthogonal,
    ActNorm: _actnorm,
    InvertibleConv1x1: _conv1x1,
    Coupling: _coupling,
}


def block_bound(block: nn.Module, in_shape: tuple[int, ...], name: str = "") -> BlockBound:
    """Bounds of ``block`` on inputs of shape ``in_shape`` (no batch dimension)."""
    name = name or type(block).__name__
    hook = getattr(block, "lipschitz_bounds", None)
    if callable(hook):
        pair = hook()
        if pair is None:
            return BlockBound(name, None, None, f"{type(block).__name__}.lipschitz_bounds(): none")
        return BlockBound(name, float(pair[0]), float(pair[1]),
                          f"{type(block).__name__}.lipschitz_bounds()")
    for kind, rule in RULES.items():
        if isinstance(block, kind):
            b = rule(block, in_shape)
            return BlockBound(name, b.forward, b.inverse, b.how)
    return BlockBound(name, None, None, f"no Lipschitz rule for block type {type(block).__name__}")

