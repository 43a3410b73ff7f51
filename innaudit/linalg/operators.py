"""Layers as operators: certified norms of linear and convolutional layers, slopes of activations.

A feed-forward layer is either linear (``nn.Linear``, ``nn.Conv2d``: bias excluded, it does not
change a Lipschitz constant) or an element-wise activation whose derivative lies in a known
interval ``[low, high]`` everywhere (its *slope range*). Both views are what the Lipschitz
certificates of :mod:`innaudit.linalg.lipschitz` and :mod:`innaudit.linalg.chain` compose.

Norms (:func:`layer_norm`): a linear layer's ``||W||_2`` by SVD, or by Gram iteration when both
sides exceed a thousand; a convolution by the SVD of its dense operator at the input resolution
when it has at most :data:`DENSE_MAX_ENTRIES` entries (exact for every padding mode, stride,
dilation and group count), otherwise by the Gram bound of :mod:`innaudit.linalg.gram` with its
real padding, stride and dilation (zero and circular padding; reflect and replicate padding are
bounded by the padded image's norm, at most ``sqrt(m_h m_w)`` times the input's with ``m`` the
most copies of one pixel in a dimension (3 for reflect, ``1 + p_lo + p_hi`` for replicate),
times the valid convolution's bound).

Slope ranges (:data:`SLOPES`): ReLU ``[0, 1]``; LeakyReLU(a) ``[min(a, 1), max(a, 1)]``;
Tanh, Hardtanh, Softplus ``[0, 1]``; ELU(a) ``[0, max(1, a)]``; Sigmoid ``[0, 1/4]``; SiLU
``[-0.0999, 1.0999]`` (the extremes of ``s(x)(1 + x(1 - s(x)))`` are -0.09984 and 1.09984 at
``x = -+2.3994``, rounded outward); GELU ``[-0.1701, 1.1290]``; Identity and Dropout (eval)
``[1, 1]``. Libraries register theirs with :func:`register_activation`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from innaudit.linalg.gram import GRAM_STEPS, conv_geometry, conv_norm_bound, matrix_norm_bound, operator_matrix

__all__ = [
    "DENSE_MAX_ENTRIES",
    "SLOPES",
    "dense_matrix",
    "is_linear_layer",
    "layer_norm",
    "register_activation",
    "slope_range",
]

DENSE_MAX_ENTRIES = 1 << 21
"""A convolution whose operator matrix has at most this many entries (e.g. 1448 x 1448) is
measured exactly by the SVD of that matrix."""

SLOPES: dict[type[nn.Module], tuple[float, float] | Callable[[Any], tuple[float, float]]] = {
    nn.ReLU: (0.0, 1.0),
    nn.Tanh: (0.0, 1.0),
    nn.Hardtanh: (0.0, 1.0),
    nn.Softplus: (0.0, 1.0),
    nn.Sigmoid: (0.0, 0.25),
    nn.SiLU: (-0.0999, 1.0999),
    nn.GELU: (-0.1701, 1.1290),
    nn.Identity: (1.0, 1.0),
    nn.Dropout: (1.0, 1.0),
    nn.LeakyReLU: lambda m: (min(float(m.negative_slope), 1.0), max(float(m.negative_slope), 1.0)),
    nn.ELU: lambda m: (0.0, max(1.0, float(m.alpha))),
}
"""Slope range of each activation type (a pair, or a function of the module)."""


def register_activation(
    kind: type[nn.Module], slopes: tuple[float, float] | Callable[[Any], tuple[float, float]]
) -> None:
    """Declare that modules of type ``kind`` act element-wise with derivative in ``slopes``
    (``(low, high)``, or a function of the module returning it) everywhere."""
    SLOPES[kind] = slopes


def slope_range(layer: nn.Module) -> tuple[float, float] | None:
    """``(low, high)`` for an element-wise activation (exact type match first, then the first
    registered base class, so a subclass that changes the function is not taken for its base
    unless registered); None for anything else. A module may also declare
    ``slope_range() -> (low, high)`` itself."""
    own = getattr(layer, "slope_range", None)
    if callable(own):
        low, high = own()
        return float(low), float(high)
    entry = SLOPES.get(type(layer))
    if entry is None:
        for kind, value in SLOPES.items():
            if isinstance(layer, kind) and kind not in (nn.Identity, nn.Dropout):
                entry = value
                break
    if entry is None:
        return None
    low, high = entry(layer) if callable(entry) else entry
    return float(low), float(high)


def is_linear_layer(layer: nn.Module) -> bool:
    """``nn.Linear`` or ``nn.Conv2d``: the linear layers whose norms are certified here."""
    return isinstance(layer, (nn.Linear, nn.Conv2d))


def dense_matrix(layer: nn.Module, in_shape: tuple[int, ...], max_entries: int | None = None) -> Tensor | None:
    """The float64 matrix ``(out numel, in numel)`` of a linear layer on inputs of ``in_shape``
    (bias excluded), or None when it is not a linear layer or would exceed ``max_entries``
    (:data:`DENSE_MAX_ENTRIES` by default)."""
    max_entries = DENSE_MAX_ENTRIES if max_entries is None else max_entries
    if isinstance(layer, nn.Linear):
        if len(in_shape) != 1:
            return None
        w = layer.weight.detach().to(torch.float64)
        return w if w.numel() <= max_entries else None
    if isinstance(layer, nn.Conv2d):
        n = math.prod(in_shape)
        out = _conv_out_numel(layer, in_shape)
        return operator_matrix(layer, in_shape) if n * out <= max_entries else None
    return None


def _conv_out_numel(layer: nn.Conv2d, in_shape: tuple[int, ...]) -> int:
    w = layer.weight
    with torch.no_grad():
        probe = torch.zeros(1, *in_shape, dtype=w.dtype, device=w.device)
        return int(layer._conv_forward(probe, w, None).numel())


def layer_norm(layer: nn.Module, in_shape: tuple[int, ...], steps: int = GRAM_STEPS) -> tuple[float, str] | None:
    """A certified bound on ``||layer||`` as an operator on inputs of ``in_shape`` and how it
    was computed: linear layers by SVD or Gram, activations by their largest absolute slope;
    None for a layer of unknown type."""
    if isinstance(layer, nn.Linear):
        return matrix_norm_bound(layer.weight, steps)
    if isinstance(layer, nn.Conv2d):
        return conv_operator_norm(layer, in_shape, steps)
    slopes = slope_range(layer)
    if slopes is not None:
        return max(abs(slopes[0]), abs(slopes[1])), f"{type(layer).__name__} slope range [{slopes[0]:g}, {slopes[1]:g}]"
    hook = getattr(layer, "lipschitz_constant", None)
    if callable(hook):
        return float(hook()), f"{type(layer).__name__}.lipschitz_constant()"
    return None


def conv_operator_norm(layer: nn.Conv2d, in_shape: tuple[int, ...], steps: int = GRAM_STEPS) -> tuple[float, str]:
    """Operator norm bound of ``layer`` (bias excluded) on inputs of shape ``(C, H, W)``."""
    weight = layer.weight.detach().to(torch.float64)
    if weight.shape[-2:] == (1, 1) and layer.groups == 1 and _no_padding(layer) and layer.stride == (1, 1):
        # a 1x1 convolution applies the same matrix at every position: its norm is ||W||_2
        norm, how = matrix_norm_bound(weight.flatten(1), steps)
        return norm, f"1x1 convolution: ||W||_2 ({how})"
    dense = dense_matrix(layer, in_shape)
    if dense is not None:
        norm, how = matrix_norm_bound(dense, steps)
        return norm, f"dense operator {dense.shape[0]}x{dense.shape[1]} ({how})"
    geometry = conv_geometry(layer, in_shape)
    if geometry.mode in ("zeros", "circular"):
        return conv_norm_bound(weight, geometry, steps)
    # reflect / replicate: the padded image has at most m copies of a pixel per dimension
    copies = 1.0
    for lo, hi in geometry.padding:
        copies *= 3.0 if geometry.mode == "reflect" else float(1 + lo + hi)
    valid = replace(
        geometry,
        size=(geometry.size[0] + sum(geometry.padding[0]), geometry.size[1] + sum(geometry.padding[1])),
        padding=((0, 0), (0, 0)),
        mode="zeros",
    )
    bound, how = conv_norm_bound(weight, valid, steps)
    return math.sqrt(copies) * bound, f"{how}, times sqrt({copies:g}) for {geometry.mode} padding"


def _no_padding(layer: nn.Conv2d) -> bool:
    pad = layer.padding
    if isinstance(pad, str):
        return pad == "valid"
    return all(p == 0 for p in pad)
