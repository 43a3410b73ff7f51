"""Gram iteration against exact answers: the FFT singular values of circular convolutions
(Sedghi et al. 2019) and the SVD of dense operators for zero padding, strides and dilations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from innaudit.linalg import gram
from innaudit.linalg.gram import (
    ConvGeometry,
    circular_conv_norm,
    conv_geometry,
    conv_norm_bound,
    gram_bound,
    matrix_norm_bound,
    operator_matrix,
)
from innaudit.linalg.operators import conv_operator_norm

GEN = torch.Generator


def _kernel(c_out: int, c_in: int, k: int, seed: int) -> torch.Tensor:
    return torch.randn(c_out, c_in, k, k, dtype=torch.float64, generator=GEN().manual_seed(seed))


def _dense_norm(layer: nn.Conv2d, shape: tuple[int, ...]) -> float:
    return float(torch.linalg.matrix_norm(operator_matrix(layer, shape), ord=2))


def _conv(c_in: int, c_out: int, k: int, seed: int, **kwargs) -> nn.Conv2d:
    layer = nn.Conv2d(c_in, c_out, k, bias=False, **kwargs).double()
    with torch.no_grad():
        shape = layer.weight.shape  # (c_out, c_in / groups, k, k)
        layer.weight.copy_(_kernel(shape[0], shape[1], k, seed) / math.sqrt(shape[1] * k * k))
    return layer


CIRCULAR = [
    # c_out, c_in, k, n, stride, dilation
    (32, 32, 3, 16, 1, 1),
    (5, 3, 3, 8, 1, 1),
    (8, 16, 5, 12, 1, 2),
    (16, 8, 3, 8, 2, 1),
    (4, 6, 4, 9, 3, 1),
    (64, 3, 3, 32, 1, 1),
    (7, 5, 1, 4, 1, 1),
]


@pytest.mark.parametrize("c_out,c_in,k,n,s,d", CIRCULAR)
def test_gram_equals_the_exact_fft_singular_value_and_never_falls_below_it(c_out, c_in, k, n, s, d) -> None:
    w = _kernel(c_out, c_in, k, seed=c_out + k)
    exact = circular_conv_norm(w, (n, n), (s, s), (d, d), exact=True)
    bound = circular_conv_norm(w, (n, n), (s, s), (d, d))
    assert exact <= bound <= exact * (1 + 1e-6)


@pytest.mark.parametrize("c_out,c_in,k,n,s,d", CIRCULAR[1:5])
def test_the_fft_oracle_is_the_dense_circular_operator(c_out, c_in, k, n, s, d) -> None:
    """The oracle itself: polyphase strides, dilation and kernel folding against the SVD of the
    layer's own circular-padded operator (``padding_mode='circular'``, output = one period)."""
    keff = d * (k - 1) + 1
    pad = (keff - 1) // 2 if keff % 2 else None
    if pad is None:
        pytest.skip("an even kernel has no symmetric same padding")
    layer = _conv(c_in, c_out, k, c_out + k, stride=s, dilation=d, padding=pad, padding_mode="circular")
    with torch.no_grad():
        layer.weight.copy_(_kernel(c_out, c_in, k, seed=c_out + k))
    truth = _dense_norm(layer, (c_in, n, n))
    assert circular_conv_norm(layer.weight, (n, n), (s, s), (d, d), exact=True) == pytest.approx(truth, rel=1e-10)
    bound, how = conv_norm_bound(layer.weight, conv_geometry(layer, (c_in, n, n)))
    assert truth <= bound <= truth * (1 + 1e-6) and how == "Gram, circular"


ZERO = [
    # c_in, c_out, k, n, stride, dilation, padding, groups
    (3, 3, 3, 6, 1, 1, 1, 1),
    (3, 5, 3, 8, 2, 1, 1, 1),
    (2, 4, 3, 7, 2, 2, 2, 1),
    (4, 2, 1, 5, 1, 1, 0, 1),
    (4, 6, 3, 6, 1, 1, 1, 2),
    (2, 3, 5, 9, 3, 1, 2, 1),
    (3, 4, 3, 5, 1, 1, "same", 1),
    (2, 2, 4, 6, 1, 2, "same", 1),
]


@pytest.mark.parametrize("c_in,c_out,k,n,s,d,p,g", ZERO)
def test_zero_padding_bound_is_never_below_the_dense_operator_norm(c_in, c_out, k, n, s, d, p, g) -> None:
    layer = _conv(c_in, c_out, k, seed=k + n, stride=s, dilation=d, padding=p, groups=g)
    truth = _dense_norm(layer, (c_in, n, n))
    bound, how = conv_norm_bound(layer.weight, conv_geometry(layer, (c_in, n, n)))
    assert truth * (1 - 1e-12) <= bound and "zero padding" in how
    assert bound <= 2.0 * truth  # a bound that says something at these small sizes


def test_zero_padding_bound_approaches_the_exact_norm_on_large_inputs() -> None:
    layer = _conv(4, 4, 3, seed=3, padding=1)
    truth = _dense_norm(layer, (4, 24, 24))
    bound, _ = conv_norm_bound(layer.weight, conv_geometry(layer, (4, 24, 24)))
    assert truth <= bound <= 1.02 * truth


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_reflect_and_replicate_padding_are_bounded(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    layer = _conv(3, 4, 3, seed=5, padding=1, padding_mode=mode)
    truth = _dense_norm(layer, (3, 6, 6))
    dense, how = conv_operator_norm(layer, (3, 6, 6))
    assert dense == pytest.approx(truth, rel=1e-9) and how.startswith("dense operator")
    monkeypatch.setattr("innaudit.linalg.operators.DENSE_MAX_ENTRIES", 16)  # force the Gram route
    bound, how = conv_operator_norm(layer, (3, 6, 6))
    assert bound >= truth and mode in how


def test_conv_operator_norm_goes_from_dense_to_gram_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = _conv(3, 5, 3, seed=6, padding=1, stride=2)
    truth = _dense_norm(layer, (3, 10, 10))
    exact, how = conv_operator_norm(layer, (3, 10, 10))
    assert truth <= exact <= truth * (1 + 1e-9) and how.startswith("dense operator")
    monkeypatch.setattr("innaudit.linalg.operators.DENSE_MAX_ENTRIES", 16)
    bound, how = conv_operator_norm(layer, (3, 10, 10))
    assert truth <= bound and how.startswith("Gram, zero padding")


def test_gram_bound_on_matrices_batched_real_and_complex() -> None:
    a = torch.randn(6, 40, 25, dtype=torch.float64, generator=GEN().manual_seed(7))
    exact = torch.linalg.matrix_norm(a, ord=2)
    got = gram_bound(a)
    assert got.shape == (6,) and bool((got >= exact).all()) and bool((got <= exact * (1 + 1e-9)).all())
    c = torch.complex(a, torch.randn_like(a))
    assert bool((gram_bound(c) >= torch.linalg.matrix_norm(c, ord=2)).all())
    assert float(gram_bound(torch.zeros(3, 4))) == 0.0
    # every step is an upper bound: one step is the Frobenius-of-the-Gram bound
    one = gram_bound(a[0], steps=1)
    assert float(one) == pytest.approx(float(torch.linalg.matrix_norm(a[0].T @ a[0]) ** 0.5) * (1 + 1e-10))


def test_a_repeated_top_singular_value_costs_at_most_the_rank_factor() -> None:
    eye = torch.eye(500, dtype=torch.float64)
    assert 1.0 <= float(gram_bound(eye)) <= 500 ** (1 / 2**gram.GRAM_STEPS) * (1 + 1e-9)


def test_matrix_norm_bound_routes_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    a = torch.randn(30, 20, dtype=torch.float64, generator=GEN().manual_seed(8))
    exact = float(torch.linalg.matrix_norm(a, ord=2))
    value, how = matrix_norm_bound(a)
    assert how == "SVD" and exact <= value <= exact * (1 + 1e-9)
    monkeypatch.setattr(gram, "EIGEN_MAX_SIDE", 4)
    value, how = matrix_norm_bound(a)
    assert how.startswith("Gram") and exact <= value <= exact * (1 + 1e-6)


def test_power_iteration_underestimates_while_gram_certifies() -> None:
    """Ten power steps from a random start (what FrEIA's correction runs) land below the norm of
    a random 32x32x3x3 convolution on 16x16; Gram never does."""
    w = _kernel(32, 32, 3, seed=9)
    geometry = ConvGeometry((16, 16), padding=((1, 1), (1, 1)), mode="circular")
    exact = circular_conv_norm(w, (16, 16), exact=True)
    x = torch.randn(1, 32, 16, 16, dtype=torch.float64, generator=GEN().manual_seed(10))
    for _ in range(10):
        x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular"), w)
        x = x / x.norm()
        x = torch.nn.functional.conv_transpose2d(x, w, padding=0)[..., 1:-1, 1:-1]
        x = x / x.norm()
    estimate = float(torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular"), w).norm())
    assert estimate < exact <= conv_norm_bound(w, geometry)[0]


def test_non_divisible_stride_and_unknown_modes() -> None:
    w = _kernel(3, 3, 3, seed=11)
    bound, how = conv_norm_bound(w, ConvGeometry((7, 7), (2, 2), ((1, 1), (1, 1)), mode="circular"))
    layer = _conv(3, 3, 3, seed=11, padding=1, stride=2, padding_mode="circular")
    with torch.no_grad():
        layer.weight.copy_(w)
    assert bound >= _dense_norm(layer, (3, 7, 7)) and "stride-1" in how
    with pytest.raises(ValueError, match="padding mode 'reflect'"):
        conv_norm_bound(w, ConvGeometry((7, 7), mode="reflect"))
