"""Certified upper bounds on spectral norms by Gram iteration: matrices and 2-D convolutions.

Gram iteration (Delattre, Barthelemy, Araujo, Allauzen, "Efficient Bound of Lipschitz Constant
for Convolutional Layers by Gram Iteration", ICML 2023, https://arxiv.org/abs/2305.16173):
with ``G_0 = A`` and ``G_{t+1} = G_t^H G_t``, ``G_t = (A^H A)^(2^(t-1))``, so

    ||A||_2 = ||G_t||_2^(1 / 2^t) <= ||G_t||_F^(1 / 2^t),

an upper bound at every ``t`` that falls to ``||A||_2`` super-linearly (the factor over the true
norm is at most ``rank^(1 / 2^t)``, far less when the top singular value is separated). Each
``G_t`` is rescaled by its Frobenius norm and the logarithms of the scales are accumulated, so
nothing overflows.

A convolution is a structured operator; its norm is not the norm of its reshaped kernel.

- **Circular padding** on an ``n x n`` input is block-diagonalized by the 2-D DFT: its singular
  values are those of the ``n^2`` matrices ``K_hat(w)`` (``c_out x c_in``), the kernel's DFT at
  each frequency (Sedghi, Gupta, Long, "The Singular Values of Convolutional Layers", ICLR 2019,
  https://arxiv.org/abs/1805.10408). The exact norm is the largest of their SVD norms
  (:func:`circular_conv_norm` with ``exact=True``, the test oracle); the certificate is the
  largest of their Gram bounds.
- **Stride** ``s`` (``n`` divisible by ``s``) is rewritten exactly as a stride-1 correlation on
  the ``s^2`` polyphase components of the input (``n/s x n/s`` images with ``s^2 c_in``
  channels) with the kernel ``K'[o, (c, r), q] = K[o, c, s q + r]``. **Dilation** ``d`` is the
  kernel with ``d - 1`` zeros between its taps.
- **Zero padding**: the padded input is an isometric embedding of the input into a longer
  signal, and a valid correlation of length ``L`` never reads past ``L``, so it is a restriction
  of the circular correlation on any ``N >= L``. Hence ``||T_zero|| <= ||T_circ,N||`` for
  ``N = ceil(L / s) s``: a certified bound, tight when ``n`` is large against the kernel
  (Delattre, Barthelemy, Allauzen, "Spectral Norm of Convolutional Layers with Circular and Zero
  Paddings", 2024, https://arxiv.org/abs/2402.00240, bound the gap). Small layers are better
  served by the SVD of their dense operator (:func:`operator_matrix`), which is exact for every
  padding mode.

Everything is computed in float64 (complex128 after the DFT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GRAM_STEPS",
    "ROUNDING_MARGIN",
    "ConvGeometry",
    "circular_blocks",
    "circular_conv_norm",
    "conv_geometry",
    "conv_norm_bound",
    "gram_bound",
    "matrix_norm_bound",
    "operator_matrix",
]

GRAM_STEPS = 12
"""Most Gram steps by default: the bound exceeds the norm by at most ``rank^(1/4096)`` (``1.002``
for rank 1000 with a repeated top singular value; below float64 rounding otherwise, usually
after 6 to 8 steps, where the iteration stops)."""

ROUNDING_MARGIN = 1e-10
"""Relative margin added to every computed bound: float64 rounding in the norms and products
(about ``n eps``) must not carry a bound below the norm it certifies."""

EIGEN_MAX_SIDE = 2048
"""Up to this smaller side a dense matrix's norm is taken from the eigenvalues of its Gram
matrix (float64), beyond it by Gram iteration."""


def gram_bound(a: Tensor, steps: int = GRAM_STEPS) -> Tensor:
    """Upper bounds on ``||A_i||_2`` for a batch ``(..., m, n)`` of real or complex matrices.

    At most ``steps`` Gram steps with Frobenius rescaling, fewer once no bound moves by more
    than ``1e-13`` (relative); each bound is the smallest of the bounds of all steps taken (every
    one is valid), widened by :data:`ROUNDING_MARGIN`. Returns float64 of the batch shape; a zero
    matrix gives 0.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    g = a.to(torch.complex128 if a.is_complex() else torch.float64)
    if g.shape[-1] > g.shape[-2]:
        g = g.mH  # the Gram matrix of the smaller side
    log_scale = torch.zeros(g.shape[:-2], dtype=torch.float64, device=g.device)
    power = 1.0
    best = _frobenius(g)
    for _ in range(steps):
        norm = _frobenius(g)
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        g = g / safe[..., None, None].to(g.dtype)
        log_scale = 2.0 * (log_scale + safe.log())
        g = g.mH @ g
        power /= 2.0
        bound = _frobenius(g).pow(power) * torch.exp(log_scale * power)
        bound = torch.where(norm > 0, bound, torch.zeros_like(bound))
        moved = ((best - bound) > 1e-13 * best).any()
        best = torch.minimum(best, bound)
        if not bool(moved):
            break
    return best * (1.0 + ROUNDING_MARGIN)


def _frobenius(g: Tensor) -> Tensor:
    return torch.linalg.matrix_norm(g).real.to(torch.float64)


def matrix_norm_bound(matrix: Tensor, steps: int = GRAM_STEPS) -> tuple[float, str]:
    """``||M||_2`` of a dense matrix, widened by :data:`ROUNDING_MARGIN`: the square root of the
    largest eigenvalue of the Gram matrix of its smaller side when that side is at most
    :data:`EIGEN_MAX_SIDE` (``"SVD"``: float64 rounding, about ``n eps`` relative, is inside the
    margin), by Gram iteration otherwise (``"Gram"``)."""
    m = matrix.detach().to(torch.float64)
    if min(m.shape[-2:]) == 0:
        return 0.0, "empty"
    if min(m.shape[-2:]) <= EIGEN_MAX_SIDE:
        gram = m @ m.mT if m.shape[-2] <= m.shape[-1] else m.mT @ m
        top = float(torch.linalg.eigvalsh(gram)[..., -1].max())
        return math.sqrt(max(top, 0.0)) * (1.0 + ROUNDING_MARGIN), "SVD"
    return float(gram_bound(m, steps)), f"Gram ({steps} steps)"


@dataclass(frozen=True)
class ConvGeometry:
    """How a 2-D convolution is applied: input size, stride, padding, dilation, groups, mode.

    Attributes:
        size: input ``(H, W)``.
        stride, dilation: per dimension.
        padding: ``((top, bottom), (left, right))`` added before the valid correlation.
        groups: channel groups (a block-diagonal operator).
        mode: ``"zeros"`` or ``"circular"`` (other modes have no Gram rule here).
    """

    size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    mode: str = "zeros"


def conv_geometry(layer: nn.Conv2d, in_shape: tuple[int, ...]) -> ConvGeometry:
    """The geometry of ``layer`` on inputs of shape ``(C, H, W)``."""
    kh, kw = layer.kernel_size
    dh, dw = layer.dilation
    if isinstance(layer.padding, str):  # "valid" or "same" (PyTorch puts the odd pixel after)
        if layer.padding == "valid":
            pads = ((0, 0), (0, 0))
        else:
            th, tw = dh * (kh - 1), dw * (kw - 1)
            pads = ((th // 2, th - th // 2), (tw // 2, tw - tw // 2))
    else:
        ph, pw = layer.padding
        pads = ((ph, ph), (pw, pw))
    h, w = int(in_shape[-2]), int(in_shape[-1])
    mode = layer.padding_mode
    return ConvGeometry((h, w), tuple(layer.stride), pads, (dh, dw), layer.groups, mode)  # type: ignore[arg-type]


def _dilate(weight: Tensor, dilation: tuple[int, int]) -> Tensor:
    dh, dw = dilation
    if (dh, dw) == (1, 1):
        return weight
    o, c, kh, kw = weight.shape
    out = weight.new_zeros(o, c, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    out[..., ::dh, ::dw] = weight
    return out


def _polyphase(weight: Tensor, stride: tuple[int, int]) -> Tensor:
    """``K'[o, (c, rh, rw), qh, qw] = K[o, c, sh qh + rh, sw qw + rw]`` (zero past the kernel)."""
    sh, sw = stride
    if (sh, sw) == (1, 1):
        return weight
    o, c, kh, kw = weight.shape
    qh, qw = -(-kh // sh), -(-kw // sw)
    padded = F.pad(weight, (0, qw * sw - kw, 0, qh * sh - kh))
    phases = padded.reshape(o, c, qh, sh, qw, sw).permute(0, 1, 3, 5, 2, 4)
    return phases.reshape(o, c * sh * sw, qh, qw)


def _fold(weight: Tensor, size: tuple[int, int]) -> Tensor:
    """The kernel folded modulo ``size``: a circular correlation with a kernel larger than the
    image equals the one with the taps that land on the same pixel summed."""
    nh, nw = size
    o, c, kh, kw = weight.shape
    if kh <= nh and kw <= nw:
        return weight
    fh, fw = -(-kh // nh), -(-kw // nw)
    padded = F.pad(weight, (0, fw * nw - kw, 0, fh * nh - kh))
    return padded.reshape(o, c, fh, nh, fw, nw).sum(dim=(2, 4))


def circular_blocks(
    weight: Tensor, size: tuple[int, int], stride: tuple[int, int] = (1, 1), dilation: tuple[int, int] = (1, 1)
) -> Tensor:
    """The per-frequency matrices ``(n_h' n_w', c_out, c_in s_h s_w)`` of the stride-``s``
    circular correlation of ``weight`` on an input of ``size`` (divisible by the stride), with
    ``n' = n / s``: the operator is unitarily equivalent to their block diagonal."""
    sh, sw = stride
    if size[0] % sh or size[1] % sw:
        raise ValueError(f"input size {size} is not divisible by the stride {stride}")
    small = (size[0] // sh, size[1] // sw)
    kernel = _fold(_polyphase(_dilate(weight.detach().to(torch.float64), dilation), stride), small)
    spectrum = torch.fft.fft2(kernel, s=small)  # (c_out, c_in', n_h', n_w')
    o, c = spectrum.shape[:2]
    return spectrum.reshape(o, c, -1).permute(2, 0, 1)


def circular_conv_norm(
    weight: Tensor,
    size: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    *,
    exact: bool = False,
    steps: int = GRAM_STEPS,
) -> float:
    """Norm of the circular stride-``s`` correlation on ``size`` (one group): exact by the
    per-frequency SVD (Sedghi et al. 2019) when ``exact``, else the Gram upper bound."""
    blocks = circular_blocks(weight, size, stride, dilation)
    if exact:
        return float(torch.linalg.matrix_norm(blocks, ord=2).max())
    return float(gram_bound(blocks, steps).max())


def _circular_rows(n: int, pad: int, k: int, s: int) -> tuple[float, bool]:
    """For one dimension of a circular-mode conv (input ``n``, total padding ``pad``, effective
    kernel ``k``, stride ``s`` dividing ``n``): the factor for output rows that repeat, and
    whether the output is exactly one period (the full circular operator)."""
    out = (n + pad - k) // s + 1
    period = n // s
    if out <= period:
        return 1.0, out == period
    return math.sqrt(math.ceil(out / period)), False


def conv_norm_bound(weight: Tensor, geometry: ConvGeometry, steps: int = GRAM_STEPS) -> tuple[float, str]:
    """A certified upper bound on the operator norm of the convolution (bias excluded).

    ``circular`` mode: the per-frequency Gram bound of the circular operator (exact up to the
    Gram factor when the output has the input's period; rows that repeat multiply by the square
    root of their multiplicity; a stride that does not divide the input falls back to the
    stride-1 operator, of which it is a restriction). ``zeros``: the circular operator of
    length ``N = ceil(L / s) s`` that the padded correlation restricts (module docstring).
    Groups: the largest group's bound. Raises ValueError for other padding modes.
    """
    w = weight.detach().to(torch.float64)
    o = w.shape[0]
    per_group = o // geometry.groups
    groups = [w[g * per_group : (g + 1) * per_group] for g in range(geometry.groups)]
    bound, how = 0.0, ""
    for kernel in groups:
        value, how = _one_group(kernel, geometry, steps)
        bound = max(bound, value)
    return bound, how


def _one_group(kernel: Tensor, geometry: ConvGeometry, steps: int) -> tuple[float, str]:
    keff = [geometry.dilation[i] * (kernel.shape[2 + i] - 1) + 1 for i in range(2)]
    if geometry.mode == "circular":
        stride = geometry.stride
        if geometry.size[0] % stride[0] or geometry.size[1] % stride[1]:
            bound = circular_conv_norm(kernel, geometry.size, (1, 1), geometry.dilation, steps=steps)
            return bound, "Gram, circular (stride-1 operator: the stride does not divide the input)"
        factor, exact = 1.0, True
        for i in range(2):
            f, e = _circular_rows(geometry.size[i], sum(geometry.padding[i]), keff[i], stride[i])
            factor, exact = factor * f, exact and e
        bound = factor * circular_conv_norm(kernel, geometry.size, stride, geometry.dilation, steps=steps)
        return bound, "Gram, circular" + ("" if exact else " (a restriction of the circular operator)")
    if geometry.mode != "zeros":
        raise ValueError(f"padding mode {geometry.mode!r} has no Gram rule; expected zeros or circular")
    size = []
    for i in range(2):
        length = geometry.size[i] + sum(geometry.padding[i])
        s = geometry.stride[i]
        size.append(-(-length // s) * s)
    bound = circular_conv_norm(kernel, (size[0], size[1]), geometry.stride, geometry.dilation, steps=steps)
    return bound, f"Gram, zero padding (circular operator on {size[0]}x{size[1]})"


def operator_matrix(layer: nn.Conv2d, in_shape: tuple[int, ...]) -> Tensor:
    """The dense float64 matrix ``(out numel, in numel)`` of ``layer`` without its bias, on
    inputs of shape ``(C, H, W)``: the layer's own convolution (padding mode, stride, dilation,
    groups) applied to the identity basis."""
    n = math.prod(in_shape)
    weight = layer.weight.detach().to(torch.float64)
    basis = torch.eye(n, dtype=torch.float64, device=weight.device).reshape(n, *in_shape)
    out = layer._conv_forward(basis, weight, None)
    return out.reshape(n, -1).t()
