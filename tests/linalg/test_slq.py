"""Known answers for the batched stochastic Lanczos quadrature of ``log|det J|``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from innaudit.linalg import log_abs_det_estimate
from innaudit.linalg.slq import log_abs_det_slq
from tests.audits.linear_models import linear_model, log_spaced

GEN = torch.Generator


def _forward(model):  # type: ignore[no-untyped-def]
    return lambda t: model.forward(t, grad=True)


def _x(n: int, dim: int, seed: int = 0) -> Tensor:
    return torch.rand(n, dim, dtype=torch.float64, generator=GEN().manual_seed(seed))


def test_a_diagonal_map_gives_its_log_det_exactly() -> None:
    s = torch.linspace(0.5, 2.0, 30, dtype=torch.float64)
    est = log_abs_det_slq(lambda t: t * s, _x(3, 30), probes=4, steps=30, generator=GEN().manual_seed(0))
    # Rademacher probes of a diagonal matrix: every probe's form is the trace itself
    assert torch.allclose(est.values, s.log().sum().expand(3), atol=1e-9)
    assert float(est.stderr.max()) < 1e-9
    assert (est.probes, est.steps, est.how) == (4, 30, "probes batched")


def test_chosen_singular_values_lie_within_the_error_bar() -> None:
    s = log_spaced(48, low=0.2, high=5.0)
    truth = float(s.log().sum())
    model = linear_model(s, seed=5)
    est = log_abs_det_slq(_forward(model), _x(20, 48), probes=16, steps=48, generator=GEN().manual_seed(1))
    assert float(est.stderr.min()) > 0  # a rotated map: the probes disagree, the bar is real
    # 48 steps span the whole space: the quadrature is exact and only the probe noise remains
    z = (est.values - truth).abs() / est.stderr
    assert float(z.max()) < 4.0
    assert abs(float(est.values.mean()) - truth) < 3 * float(est.stderr.mean()) / math.sqrt(20)


def test_batched_equals_the_one_probe_at_a_time_estimator_for_the_same_seed() -> None:
    model = linear_model(log_spaced(40, low=1e-2, high=10.0), seed=2)
    x = _x(7, 40, seed=3)
    fast = log_abs_det_slq(_forward(model), x, probes=6, steps=12, generator=GEN().manual_seed(4))
    slow, slow_err = log_abs_det_estimate(_forward(model), x, probes=6, steps=12, generator=GEN().manual_seed(4))
    assert fast.how == "probes batched"
    assert torch.allclose(fast.values, slow, rtol=1e-12, atol=1e-10)
    assert torch.allclose(fast.stderr, slow_err, rtol=1e-9, atol=1e-10)


def test_chunks_of_samples_give_the_same_estimate() -> None:
    model = linear_model(log_spaced(16, low=0.1, high=3.0), seed=1)
    x = _x(5, 16, seed=6)
    whole = log_abs_det_slq(_forward(model), x, probes=3, steps=8, generator=GEN().manual_seed(7))
    chunked = log_abs_det_slq(_forward(model), x, probes=3, steps=8, generator=GEN().manual_seed(7), max_rows=4)
    assert torch.allclose(whole.values, chunked.values, rtol=1e-12)


def test_a_krylov_space_that_closes_early_stops_that_probe() -> None:
    """Two distinct singular values: every Krylov space is invariant after 2 steps, and the
    quadrature on those 2 nodes is exact for the probe's form."""
    s = torch.tensor([2.0] * 5 + [0.5] * 5, dtype=torch.float64)
    model = linear_model(s, seed=3)
    x = _x(2, 10)
    est = log_abs_det_slq(_forward(model), x, probes=8, steps=10, generator=GEN().manual_seed(0))
    slow, _ = log_abs_det_estimate(_forward(model), x, probes=8, steps=10, generator=GEN().manual_seed(0))
    assert torch.isfinite(est.values).all()
    assert torch.allclose(est.values, slow, rtol=1e-10)
    assert (est.values - float(s.log().sum())).abs().max() < 4 * est.stderr.max() + 1e-9


class _NoForwardMode(torch.autograd.Function):
    """``2 x`` with a backward but no forward-mode or vmap rule: torch.func cannot batch its JVP."""

    @staticmethod
    def forward(x):  # type: ignore[no-untyped-def, override]
        return 2 * x

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def, override]
        pass

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        return 2 * grad


def test_a_map_without_forward_mode_runs_probe_by_probe_by_double_backward() -> None:
    s = torch.linspace(0.5, 1.5, 12, dtype=torch.float64)
    fn = lambda t: _NoForwardMode.apply(t) * s  # noqa: E731
    est = log_abs_det_slq(fn, _x(2, 12), probes=3, steps=12, generator=GEN().manual_seed(0))
    assert est.how == "probe by probe"
    assert torch.allclose(est.values, (2 * s).log().sum().expand(2), atol=1e-9)


class _NoVmap(_NoForwardMode):
    """``2 x`` with forward- and reverse-mode rules but no vmap rule."""

    @staticmethod
    def jvp(ctx, tangent):  # type: ignore[no-untyped-def, override]
        return 2 * tangent


def test_a_map_vmap_cannot_batch_runs_probe_by_probe_with_the_same_answer() -> None:
    model = linear_model(log_spaced(9, low=0.5, high=3.0), seed=8)
    x = _x(3, 9, seed=2)
    doubled = lambda t: _NoVmap.apply(model.forward(t, grad=True))  # noqa: E731
    est = log_abs_det_slq(doubled, x, probes=4, steps=9, generator=GEN().manual_seed(3))
    plain = log_abs_det_slq(
        lambda t: 2 * model.forward(t, grad=True), x, probes=4, steps=9, generator=GEN().manual_seed(3)
    )
    assert (est.how, plain.how) == ("probe by probe", "probes batched")
    assert torch.allclose(est.values, plain.values, rtol=1e-12)


def test_a_non_finite_map_gives_nan_not_an_exception() -> None:
    x = _x(3, 6)

    def fn(t: Tensor) -> Tensor:
        scale = torch.where(t[:, :1].detach() > 0.5, float("inf"), 2.0)  # per sample: no NaN leaks across
        return t * scale

    est = log_abs_det_slq(fn, x, probes=2, steps=6, generator=GEN().manual_seed(0))
    broken = x[:, 0] > 0.5
    assert 0 < int(broken.sum()) < 3
    assert torch.isnan(est.values[broken]).all()
    assert torch.isnan(est.bias[broken]).all() and (est.bias[~broken] == 0).all()  # no bias claimed there
    assert torch.allclose(est.values[~broken], torch.tensor(6 * math.log(2.0), dtype=torch.float64))


def test_one_probe_has_no_error_bar() -> None:
    est = log_abs_det_slq(lambda t: 3 * t, _x(2, 4), probes=1, steps=4, generator=GEN().manual_seed(0))
    assert torch.isnan(est.stderr).all()
    assert torch.allclose(est.values, torch.tensor(4 * math.log(3.0), dtype=torch.float64))


def test_a_run_without_tolerance_is_not_ended_by_a_deflated_top_ritz_vector() -> None:
    """Singular values over five decades: the top Ritz vector of ``J^T J`` converges to a
    residual of exactly 0 long before the bottom of the spectrum is reached. With ``tol = 0``
    that must not end the run (it once did, after about 30 of 64 steps, and the estimate lay
    5 to 9 standard errors above the truth)."""
    from innaudit.linalg.lanczos import _Operator, lanczos

    s = log_spaced(64, low=1e-3, high=1e2)
    model = linear_model(s, seed=1)
    x = _x(6, 64)
    with torch.enable_grad():
        op = _Operator(_forward(model), x)
        start = torch.randint(0, 2, (6, 64), generator=GEN().manual_seed(0)).double() * 2 - 1
        assert lanczos(op.apply, start, 0.0, 64).iters.tolist() == [64] * 6
    est = log_abs_det_slq(_forward(model), x, probes=8, steps=64, generator=GEN().manual_seed(0))
    z = (est.values - float(s.log().sum())) / est.stderr
    assert float(z.abs().max()) < 4.0


def _lanczos_on_products(fn, x: Tensor, probes: int, steps: int, seed: int) -> tuple[Tensor, Tensor]:  # type: ignore[no-untyped-def]
    """The estimator this module replaced: Lanczos on the products ``J^T (J v)``, same draws,
    and the Gauss rule ``e_1^T log(T_k) e_1`` of each run's tridiagonal ``T_k``."""
    from innaudit.linalg.lanczos import _Operator, lanczos, tridiagonal

    def quadrature_log(alpha: Tensor, beta: Tensor, iters: Tensor, broken: Tensor) -> Tensor:
        out = torch.full(iters.shape, float("nan"), dtype=torch.float64)
        for k in torch.unique(iters).tolist():
            rows = torch.nonzero((iters == k) & ~broken).flatten()
            if k and len(rows):
                vals, vecs = torch.linalg.eigh(tridiagonal(alpha[rows, :k], beta[rows, :k]))
                out[rows] = (vecs[:, 0, :] ** 2 * vals.clamp_min(1e-300).log()).sum(1)
        return out

    gen, dim = GEN().manual_seed(seed), x.shape[1]
    with torch.enable_grad():
        op = _Operator(fn, x)
        draws = []
        for _ in range(probes):
            v = torch.randint(0, 2, (len(x), dim), generator=gen).double() * 2 - 1
            kr = lanczos(op.apply, v, 0.0, steps)
            draws.append(dim * quadrature_log(kr.alpha, kr.beta, kr.iters, kr.broken))
    est = torch.stack(draws)
    return 0.5 * est.mean(0), 0.5 * est.std(0) / math.sqrt(probes)


def test_a_float32_map_over_five_decades_lies_within_the_bar_where_lanczos_on_products_did_not() -> None:
    """Singular values from 1e2 down to 1e-3 (condition 1e5, past float32's ``eps^-1/2``): the
    float32 products ``J^T (J v)`` give Ritz values near 0 or below it, and the old estimate
    lay hundreds of nats below the truth, far outside its bar; the bidiagonalization of ``J``
    keeps ``sigma_min`` and its bar covers the truth."""
    s = log_spaced(32, low=1e-3, high=1e2)
    model = linear_model(s, seed=1, dtype=torch.float32)
    truth = float(torch.linalg.slogdet(model.module.weight.detach().double())[1])  # the float32 map's
    x = _x(6, 32).float()
    old, old_err = _lanczos_on_products(_forward(model), x, probes=8, steps=32, seed=0)
    assert bool(((old - truth).abs() > 3 * old_err).any())
    est = log_abs_det_slq(_forward(model), x, probes=8, steps=32, generator=GEN().manual_seed(0))
    low, high = est.bounds()
    assert bool(((low <= truth) & (truth <= high)).all())
    assert float(est.bias.max()) == 0.0  # 32 steps span the space: the rule is exact


def test_the_bar_covers_the_quadrature_bias_of_too_few_steps() -> None:
    """16 steps on 64 singular values over three decades: every Gauss rule lies above its form,
    by 3 to 10 standard errors; the bias term ``G_{k/2} - G_k`` widens the bar below enough."""
    s = log_spaced(64, low=1e-2, high=1e1)
    model = linear_model(s, seed=1)
    truth = float(s.log().sum())
    est = log_abs_det_slq(_forward(model), _x(6, 64), probes=8, steps=16, generator=GEN().manual_seed(0))
    z = (est.values - truth) / est.stderr
    assert float(z.min()) > 2.0  # the estimate is biased up, beyond the probes' bar
    low, high = est.bounds()
    assert bool(((low <= truth) & (truth <= high)).all())
    assert bool((est.bias > est.stderr).all())


def test_batched_and_sequential_agree_on_a_float32_flow_and_cover_its_exact_log_det() -> None:
    """The shipped float32 ``digits-affine`` flow (d = 64) with 32 steps: the batched and the
    one-probe-at-a-time estimators agree to 1e-3 of a standard error, and the exact
    ``log|det J|`` (float64 Jacobian, ``slogdet``) lies within the bar on every sample."""
    from pathlib import Path

    from innaudit.data.digits import load_digits
    from innaudit.linalg import jacobian, log_abs_det
    from innaudit.loading import load_model

    model = load_model(str(Path(__file__).resolve().parents[2] / "checkpoints" / "digits-affine.pt")).model
    assert model.dtype == torch.float32
    x = torch.as_tensor(load_digits("test")[0][:12]).float()
    m64 = model.copy_as(torch.float64)
    exact = log_abs_det(jacobian(lambda t: m64.forward(t, grad=True), x.double()))
    est = log_abs_det_slq(_forward(model), x, probes=8, steps=32, generator=GEN().manual_seed(0))
    seq, _ = log_abs_det_estimate(_forward(model), x, probes=8, steps=32, generator=GEN().manual_seed(0))
    assert float(((est.values - seq).abs() / est.stderr).max()) <= 1e-3
    low, high = est.bounds()
    assert bool(((low <= exact) & (exact <= high)).all())
