"""Residual flows: exact/estimated log-det, fixed-point inverse, cap accounting, certificates."""

from __future__ import annotations

import math

import pytest
import torch

from innaudit import zoo
from innaudit.core.domain import DataDomain
from innaudit.loading.adapt import adapt_module
from innaudit.model.contract import InverseKind, LogDetKind
from innaudit.zoo.residual import ResidualBlock, ResidualFlow, SpectralConv2d, SpectralLinear


def _randomize(model: torch.nn.Module, scale: float, seed: int = 0) -> None:
    """Give every raw weight large random entries (far above the coefficient), then calibrate."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen))
    model.calibrate()
    model.eval()


def _jacobian(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten()
    fn = lambda t: model(t.view(1, *x.shape))[0].flatten()  # noqa: E731
    return torch.autograd.functional.jacobian(fn, flat)


def test_exact_log_det_matches_brute_force_and_metadata_is_read() -> None:
    model = zoo.build("residual-vector", {"shape": [3], "blocks": 3, "coeff": 0.9})
    _randomize(model, 1.0)
    x = torch.randn(4, 3, dtype=torch.float64)
    model.double()
    _, log_det = model(x)
    for i in range(4):
        assert float(log_det[i]) == pytest.approx(float(torch.linalg.slogdet(_jacobian(model, x[i]))[1]), abs=1e-9)
    info = adapt_module(model, DataDomain((3,)), {}).info
    assert info.inverse_kind is InverseKind.ITERATIVE and info.log_det_kind is LogDetKind.EXACT
    assert info.inverse_tolerance == 1e-6 and info.inverse_max_iter == 1000


def test_series_log_det_is_an_unbiased_estimate_of_the_truncated_series() -> None:
    model = zoo.build(
        "residual-image", {"shape": [1, 4, 4], "blocks": 1, "hidden": 8, "coeff": 0.5, "log_det_terms": 12}
    )
    _randomize(model, 0.5)
    model.double()
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    exact = float(torch.linalg.slogdet(_jacobian(model, x[0]))[1])
    _, estimates = model(x.expand(4000, 1, 4, 4).contiguous())
    assert model.log_det_kind == "estimated"
    # c = 0.5 and 12 terms: truncation < 16 * 0.5^13 / 13 ~ 1.5e-4; Hutchinson noise / sqrt(4000)
    assert float(estimates.mean()) == pytest.approx(exact, abs=4 * float(estimates.std()) / math.sqrt(4000) + 1e-3)
    assert torch.equal(model(x)[1], model(x)[1]), "eval estimates use fixed-seed probes"


@pytest.mark.parametrize("name,shape", [("residual-vector", (2,)), ("residual-image", (1, 8, 8))])
def test_fixed_point_inverse_reconstructs_within_the_banach_bound(name: str, shape: tuple) -> None:
    model = zoo.build(name, {"shape": list(shape), "blocks": 3, "coeff": 0.8, "hidden": 8})
    _randomize(model, 1.0)
    x = 4 * torch.randn(64, *shape, generator=torch.Generator().manual_seed(3))
    z, _ = model(x)
    back = model.inverse(z)
    hits = model.inverse_cap_hits
    assert hits == 0 and 1 < model.last_inverse_iterations < 200
    assert float((back - x).abs().max()) < 1e-4 * (1 + float(x.abs().max()))
    # a cap of 2 iterations with a zero tolerance: every (sample, block) solve is counted
    for block in model.residual_blocks():
        block.inverse_max_iter, block.inverse_tolerance = 2, 0.0
    model.inverse(z)
    assert model.inverse_cap_hits == 3 * 64


def test_lipschitz_certificate_holds_and_uses_the_exact_norms() -> None:
    model = zoo.build("residual-vector", {"shape": [2], "blocks": 2, "coeff": 0.7})
    _randomize(model, 3.0)  # raw weights far above c: spectral normalization must bring them down
    for block in model.residual_blocks():
        for layer in block.layers:
            assert float(layer.exact_norm()) == pytest.approx(0.7, rel=1e-5)
        c = block.lipschitz_coefficient()
        assert c == pytest.approx(0.7**3 * block.act.lipschitz**2, rel=1e-4)
        f_bound, i_bound = block.lipschitz_bounds()
        assert (f_bound, i_bound) == (pytest.approx(1 + c), pytest.approx(1 / (1 - c)))
        x, y = torch.randn(2000, 2), torch.randn(2000, 2)
        ratio = (block(x)[0] - block(y)[0]).norm(dim=1) / (x - y).norm(dim=1)
        assert float(ratio.max()) <= f_bound and float(ratio.min()) >= 1 / i_bound


def test_a_stale_power_iteration_estimate_is_caught_by_the_certificate() -> None:
    layers = [SpectralLinear(4, 4, 0.5, 0, torch.Generator().manual_seed(0)) for _ in range(2)]
    with torch.no_grad():
        layers[0].weight.copy_(torch.diag(torch.tensor([10.0, 1.0, 1.0, 1.0])))
        layers[1].weight.copy_(torch.eye(4))
        for layer in layers:
            layer.sigma.fill_(1.0)  # stale estimates, as with too few power iterations
    block = ResidualBlock(layers, 1e-6, 10, "exact", 1)
    block.eval()
    assert float(layers[0].exact_norm()) == pytest.approx(5.0)  # 10 / max(1, 1 / 0.5), not 0.5
    assert block.lipschitz_coefficient() == pytest.approx(2.5 * block.act.lipschitz, rel=1e-5)
    assert block.lipschitz_bounds() == (pytest.approx(1 + 2.5 * block.act.lipschitz, rel=1e-5), math.inf)


def test_conv_operator_norm_is_the_matrix_norm() -> None:
    conv = SpectralConv2d(2, 3, 3, (4, 4), 0.9, 5, torch.Generator().manual_seed(1))
    conv.power_iterate(200)
    matrix = conv.matrix(conv.weight.detach())
    assert matrix.shape == (48, 32)
    x = torch.randn(5, 2, 4, 4)
    direct = torch.nn.functional.conv2d(x, conv.weight.detach(), padding=1).flatten(1)
    assert torch.allclose(direct, x.flatten(1) @ matrix.t(), atol=1e-5)
    assert float(conv.sigma) == pytest.approx(float(torch.linalg.matrix_norm(matrix, 2)), rel=1e-4)


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="coeff"):
        zoo.ARCHITECTURES["residual-vector"](coeff=1.0)
    with pytest.raises(ValueError, match="shape"):
        zoo.ARCHITECTURES["residual-image"](shape=[1, 7, 8])
    assert isinstance(zoo.build("residual-vector", {}), ResidualFlow)
