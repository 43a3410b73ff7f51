"""Known answers for innaudit.linalg: exact and matrix-free singular values, log-dets."""

from __future__ import annotations

import torch

from innaudit.linalg import (
    choose_method,
    extreme_singular_values,
    jacobian,
    jacobian_singular_values,
    log_abs_det,
    log_abs_det_estimate,
    top_singular_value,
)
from tests.audits.linear_models import linear_model, log_spaced

GEN = torch.Generator


def _maps(model):
    return (lambda t: model.forward(t, grad=True)), (lambda t: model.inverse(t, grad=True))


def test_exact_recovers_chosen_singular_values_of_a_float64_map() -> None:
    s = log_spaced(12)
    model = linear_model(s)
    fwd, _ = _maps(model)
    x = torch.rand(5, 12, dtype=torch.float64, generator=GEN().manual_seed(0))
    got = jacobian_singular_values(fwd, x)
    assert got.shape == (5, 12)
    # float64 Jacobian of a map with condition 1e5: SVD error ~ eps * sigma_max / sigma
    assert torch.allclose(got, s.expand(5, -1), rtol=1e-9)


def test_exact_jacobian_of_a_float32_map_is_exact_to_float32_rounding() -> None:
    s = log_spaced(8).float()
    model = linear_model(s, dtype=torch.float32)
    x = torch.rand(3, 8, generator=GEN().manual_seed(1))
    jac = jacobian(_maps(model)[0], x)
    assert jac.shape == (3, 8, 8)
    sv = jacobian_singular_values(_maps(model)[0], x)
    # W is stored in float32: each singular value moves by at most ~eps32 * sigma_max (Weyl)
    bound = 10 * torch.finfo(torch.float32).eps * float(s.max())
    assert float((sv - s.double().expand(3, -1)).abs().max()) <= bound


def test_sigma_min_via_inverse_agrees_with_forward() -> None:
    s = log_spaced(10)
    model = linear_model(s, seed=3)
    fwd, inv = _maps(model)
    x = torch.rand(4, 10, dtype=torch.float64, generator=GEN().manual_seed(2))
    forward_min = jacobian_singular_values(fwd, x)[:, -1]
    inverse_max = jacobian_singular_values(inv, fwd(x))[:, 0]
    assert torch.allclose(forward_min, 1 / inverse_max, rtol=1e-6)
    assert torch.allclose(forward_min, torch.tensor(1e-3, dtype=torch.float64), rtol=1e-9)


def test_matrix_free_extremes_within_five_percent_at_dimension_200() -> None:
    s = log_spaced(200)
    model = linear_model(s, seed=4)
    fwd, inv = _maps(model)
    x = torch.rand(3, 200, dtype=torch.float64, generator=GEN().manual_seed(3))
    top, inv_top = extreme_singular_values(fwd, inv, x, max_iter=64, generator=GEN().manual_seed(0))
    assert torch.allclose(top.values, torch.tensor(1e2, dtype=torch.float64), rtol=5e-2)
    assert torch.allclose(1 / inv_top.values, torch.tensor(1e-3, dtype=torch.float64), rtol=5e-2)
    assert (top.iterations <= 64).all() and (top.iterations >= 1).all()


def test_matrix_free_converges_exactly_on_small_map() -> None:
    s = torch.tensor([3.0, 2.0, 0.5], dtype=torch.float64)
    model = linear_model(s)
    x = torch.rand(2, 3, dtype=torch.float64, generator=GEN().manual_seed(0))
    est = top_singular_value(_maps(model)[0], x, generator=GEN().manual_seed(0))
    assert torch.allclose(est.values, torch.tensor(3.0, dtype=torch.float64), rtol=1e-6)
    assert est.converged.all() and (est.iterations <= 3).all()


def test_nan_map_gives_nan_not_an_exception() -> None:
    fn = lambda t: t * float("nan")  # noqa: E731
    x = torch.rand(2, 4)
    assert torch.isnan(jacobian_singular_values(fn, x)).all()
    est = top_singular_value(fn, x, generator=GEN().manual_seed(0))
    assert torch.isnan(est.values).all() and not est.converged.any()


def test_log_det_exact_and_stochastic() -> None:
    s = torch.linspace(0.5, 2.0, 30, dtype=torch.float64)
    truth = s.log().sum()
    diag = lambda t: t * s  # noqa: E731  (Hutchinson is exact for a diagonal matrix)
    x = torch.rand(2, 30, dtype=torch.float64)
    assert torch.allclose(log_abs_det(jacobian(diag, x)), truth.expand(2))
    est, err = log_abs_det_estimate(diag, x, probes=4, steps=30, generator=GEN().manual_seed(0))
    assert torch.allclose(est, truth.expand(2), atol=1e-6)
    model = linear_model(s, seed=5)
    est, err = log_abs_det_estimate(_maps(model)[0], x, probes=16, steps=30, generator=GEN().manual_seed(1))
    assert ((est - truth).abs() < 4 * err + 1e-6).all()


def test_choose_method() -> None:
    assert choose_method("auto", 64) == "exact"
    assert choose_method("auto", 100000) == "matrix-free"
    assert choose_method("matrix-free", 2) == "matrix-free"
