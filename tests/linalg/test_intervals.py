"""Bound propagation through a chain: known answers for the local certificate over a box."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from innaudit.linalg.chain import Affine, Slopes, net_stages, skip_stages
from innaudit.linalg.intervals import box_certificate, box_slopes, evaluate, interval_slopes
from tests.linalg.nets import relu_net


def _net(gen: torch.Generator, width: int = 16, dim: int = 3, out: int | None = None) -> nn.Sequential:
    return relu_net(gen, width, dim, out)


def _jacobian(fn, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(fn, x)


def test_the_chain_evaluates_to_the_net() -> None:
    net = _net(torch.Generator().manual_seed(0))
    stages = net_stages(list(net), (3,))
    assert stages is not None
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    value = evaluate(stages, x)
    assert value is not None
    torch.testing.assert_close(value, net(x), rtol=1e-12, atol=1e-12)


def test_every_unit_stable_in_the_ball_gives_the_dense_jacobians_norm() -> None:
    """A ball so small that no pre-activation changes sign: B = 0 everywhere, and the local
    certificate is exactly ||J(c)||, the dense Jacobian's norm."""
    net = _net(torch.Generator().manual_seed(2))
    stages = net_stages(list(net), (3,))
    assert stages is not None
    centre = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    slopes = box_slopes(stages, centre, torch.full_like(centre, 1e-7))
    assert slopes is not None
    for i in range(4):
        cert = box_certificate(stages, slopes, i)
        assert cert is not None and cert.unstable == 0.0 and cert.delta == pytest.approx(0.0, abs=1e-12)
        j = _jacobian(net, centre[i])
        assert cert.forward == pytest.approx(float(torch.linalg.matrix_norm(j, ord=2)), rel=1e-8)
        assert cert.inverse == pytest.approx(1.0 / float(torch.linalg.svdvals(j)[-1]), rel=1e-8)


def test_a_linear_map_with_chosen_singular_values() -> None:
    gen = torch.Generator().manual_seed(4)
    u, _ = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=torch.float64))
    s = torch.tensor([7.0, 3.0, 2.0, 0.5, 0.25], dtype=torch.float64)
    stages = [Affine(u @ torch.diag(s) @ v.T, torch.ones(5, dtype=torch.float64))]
    centre = torch.zeros(1, 5, dtype=torch.float64)
    slopes = box_slopes(stages, centre, torch.full_like(centre, 10.0))
    assert slopes == []
    cert = box_certificate(stages, slopes, 0)
    assert cert is not None
    assert 7.0 <= cert.forward == pytest.approx(7.0, rel=1e-8)  # exact, widened by the rounding margins
    assert cert.inverse is not None and 4.0 <= cert.inverse == pytest.approx(4.0, rel=1e-8)


def test_a_ball_across_kinks_is_never_below_the_sampled_sup() -> None:
    """``x + g(x)`` with a small ReLU ``g`` on 2 coordinates, a ball wide enough to hold kinks:
    the certificates hold over a dense grid of the ball and are not far above it."""
    gen = torch.Generator().manual_seed(5)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(8, 2, generator=gen, dtype=torch.float64))
        net[0].bias.copy_(torch.randn(8, generator=gen, dtype=torch.float64) * 0.3)
        net[2].weight.copy_(0.3 * torch.randn(2, 8, generator=gen, dtype=torch.float64) / 8**0.5)
    inner = net_stages(list(net), (2,))
    assert inner is not None
    stages = skip_stages(inner, 2)
    centre = torch.zeros(1, 2, dtype=torch.float64)
    radius = 0.4
    slopes = box_slopes(stages, centre, torch.full_like(centre, radius))
    assert slopes is not None
    cert = box_certificate(stages, slopes, 0)
    assert cert is not None and cert.unstable > 0 and cert.inverse is not None
    axis = torch.linspace(-radius, radius, 81, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    jac = torch.stack([_jacobian(lambda t: t + net(t), p) for p in grid])
    sv = torch.linalg.svdvals(jac)
    assert float(sv[:, 0].max()) <= cert.forward * (1 + 1e-9)
    assert float((1 / sv[:, -1]).max()) <= cert.inverse * (1 + 1e-9)
    assert cert.forward <= 2.0 * float(sv[:, 0].max())


@pytest.mark.parametrize(
    "act", [nn.ReLU(), nn.LeakyReLU(0.2), nn.Tanh(), nn.Sigmoid(), nn.Softplus(), nn.SiLU()], ids=type
)
def test_interval_slopes_hold_every_derivative_inside_the_interval(act: nn.Module) -> None:
    gen = torch.Generator().manual_seed(6)
    lo = torch.randn(200, generator=gen, dtype=torch.float64) * 3
    hi = lo + torch.rand(200, generator=gen, dtype=torch.float64) * 4
    stage = Slopes.uniform(200, -10.0, 10.0, act)
    low, high = interval_slopes(stage, lo, hi)
    t = torch.linspace(0, 1, 401, dtype=torch.float64)
    points = (lo[:, None] + (hi - lo)[:, None] * t[None]).requires_grad_(True)
    (slope,) = torch.autograd.grad(act(points).sum(), points)
    assert bool((slope >= low[:, None] - 1e-12).all()) and bool((slope <= high[:, None] + 1e-12).all())
    if not isinstance(act, (nn.ReLU, nn.LeakyReLU)):  # smooth: the range is the derivative's own
        torch.testing.assert_close(slope.min(1).values, low, atol=1e-3, rtol=0)
        torch.testing.assert_close(slope.max(1).values, high, atol=1e-3, rtol=0)
