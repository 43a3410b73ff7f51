"""Branch and bound over boxes (the domain and local certificates of ``bounds``): on a tiny 2-D
ReLU flow whose sup is known from an exhaustive fine grid, it converges to it within the target,
and it is never below a Jacobian sampled anywhere in the box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import jacrev, vmap

from innaudit.audits.bounds import model_certificate
from innaudit.audits.bounds_local import ModelChain, cell_search, domain_search, local_certificates
from innaudit.linalg import jacobian
from innaudit.linalg.chain import net_stages
from innaudit.loading import load_model
from tests.linalg.test_boxes import _net, flow


def _grid_values(fn, low: float, high: float, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    axis = torch.linspace(low, high, count, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    sv = torch.linalg.svdvals(vmap(jacrev(fn))(grid))
    return sv[:, 0], 1 / sv[:, -1]


def _chain(seed: int, steps: int, width: int) -> tuple[ModelChain, object]:
    blocks, inverses, fn = flow(seed, steps, width)
    return ModelChain(tuple(tuple(b) for b in blocks), tuple(tuple(b) for b in inverses)), fn


def test_branch_and_bound_converges_to_the_grid_sup_of_a_tiny_flow_within_the_target() -> None:
    chain, fn = _chain(11, 2, 4)
    top, bottom = _grid_values(fn, -3.0, 3.0, 401)
    low, high = torch.full((1, 2), -3.0, dtype=torch.float64), torch.full((1, 2), 3.0, dtype=torch.float64)
    found = cell_search(chain, low, high, target=1.05, cells=20000)
    assert found is not None and found.converged
    for cert, best, grid in ((found.forward, found.forward_best, top), (found.inverse, found.inverse_best, bottom)):
        sup = float(grid.max())
        assert sup <= cert[0] * (1 + 1e-9)  # never below a measured value
        assert cert[0] <= 1.05 * best[0] * (1 + 1e-9) and best[0] <= sup * (1 + 1e-9)
        assert cert[0] <= 1.05 * sup * (1 + 1e-6)  # the grid hits the linear region of the sup


def test_a_dense_grid_never_exceeds_the_certified_sup_of_a_deeper_flow() -> None:
    chain, fn = _chain(12, 4, 8)
    top, bottom = _grid_values(fn, -2.0, 2.0, 201)
    low, high = torch.full((2,), -2.0, dtype=torch.float64), torch.full((2,), 2.0, dtype=torch.float64)
    for cells in (1, 64, 2000):
        found = domain_search(chain, low, high, cells, split_max_dim=4, target=1.1)
        assert float(top.max()) <= found.forward * (1 + 1e-9)
        assert float(bottom.max()) <= found.inverse * (1 + 1e-9)
    assert found.cells > 64 and found.forward <= 1.1 * float(top.max()) * 1.5
    point = found.points[0]
    value = float(torch.linalg.svdvals(jacrev(fn)(point))[0])
    assert value >= float(top.max()) / 1.1 / 1.5  # the best point is measured by the model too


def test_local_balls_are_split_until_each_is_within_the_target() -> None:
    chain, fn = _chain(13, 3, 8)
    x = torch.rand(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4 - 2
    coarse = local_certificates(chain, x, 0.3, cells=1, split_max_dim=4)
    fine = local_certificates(chain, x, 0.3, cells=200, split_max_dim=4, target=1.02)
    for i in range(len(x)):
        axis = torch.linspace(-0.3, 0.3, 61, dtype=torch.float64)
        grid = x[i] + torch.cartesian_prod(axis, axis)
        sv = torch.linalg.svdvals(vmap(jacrev(fn))(grid))
        assert float(sv[:, 0].max()) <= fine.forward[i] * (1 + 1e-9) <= coarse.forward[i] * (1 + 1e-9)
        assert float((1 / sv[:, -1]).max()) <= fine.inverse[i] * (1 + 1e-9) <= coarse.inverse[i] * (1 + 1e-9)
        assert fine.forward[i] <= 1.02 * float(sv[:, 0].max()) * 1.2


CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


@pytest.mark.slow
@pytest.mark.skipif(not (CHECKPOINTS / "checkerboard-additive.pt").exists(), reason="no shipped checkpoints")
@pytest.mark.parametrize("name", ("checkerboard-additive", "checkerboard-residual"))
def test_a_dense_grid_of_a_shipped_2d_flow_never_exceeds_its_domain_certificate(name: str) -> None:
    """Every Jacobian on a 301 x 301 grid of the domain box lies below the box's certificate,
    both ways, and the certificate is within the goal (10x) of the grid's maximum."""
    model = load_model(str(CHECKPOINTS / f"{name}.pt")).model
    cert = model_certificate(model)
    assert cert.chain is not None
    dom = model.info.domain
    low = torch.full((2,), float(dom.low), dtype=torch.float64)
    high = torch.full((2,), float(dom.high), dtype=torch.float64)
    found = domain_search(cert.chain, low, high, 16384, 4, (cert.forward, cert.inverse))
    axis = torch.linspace(float(dom.low), float(dom.high), 301, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis).to(model.dtype)
    sv = torch.linalg.svdvals(jacobian(lambda t: model.forward(t, grad=True), grid).double())
    top, bottom = float(sv[:, 0].max()), float((1 / sv[:, -1]).max())
    assert top <= found.forward * (1 + 1e-3) and bottom <= found.inverse * (1 + 1e-3)  # float32 model
    assert found.forward <= 10 * top and found.inverse <= 10 * bottom


def test_a_ball_beyond_the_split_dimensions_with_mostly_unstable_units_gets_no_enclosure() -> None:
    """In 5 dimensions (above ``split_max_dim``) a ball so wide that most ReLUs switch gets no
    local certificate at all (the centred form would say less than the R^d bound), a small one
    gets the enclosure; ``max_unstable`` 1 bounds the wide one anyway, above every sample."""
    net = _net(torch.Generator().manual_seed(4), 24, 5)
    stages = net_stages(list(net), (5,))
    assert stages is not None
    chain = ModelChain((tuple(stages),), None)
    x = torch.zeros(1, 5, dtype=torch.float64)
    wide = local_certificates(chain, x, 50.0, max_unstable=0.5, split_max_dim=4)
    assert np.isnan(wide.forward[0]) and wide.unstable[0] > 0.5
    small = local_certificates(chain, x, 1e-6, max_unstable=0.5, split_max_dim=4)
    j = torch.autograd.functional.jacobian(net, x[0])
    assert float(small.forward[0]) == pytest.approx(float(torch.linalg.matrix_norm(j, ord=2)), rel=1e-6)
    forced = local_certificates(chain, x, 50.0, max_unstable=1.0, split_max_dim=4)
    points = 100 * torch.rand(300, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64) - 50
    sampled = torch.stack([torch.autograd.functional.jacobian(net, p) for p in points])
    assert float(torch.linalg.matrix_norm(sampled, ord=2).max()) <= float(forced.forward[0])
