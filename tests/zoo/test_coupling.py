"""Known-answer tests of the coupling flows in innaudit.zoo.coupling / innaudit.zoo.layers."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch import nn

from innaudit import zoo
from innaudit.core.errors import LoadError
from innaudit.zoo.coupling import CouplingFlow
from innaudit.zoo.layers import ConvNet, Coupling, MLPNet

COUPLINGS = ("additive", "affine")
SCALES = ("exp", "sigmoid", "bounded")
PERMUTATIONS = ("reverse", "shuffle", "conv1x1")


def _perturb(model: nn.Module, seed: int = 1, size: float = 0.3) -> nn.Module:
    """Randomize every parameter (incl. the zero-initialized last layers and ActNorm)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(size * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return model


def _image_config(**kw: Any) -> dict[str, Any]:
    return {"shape": [1, 4, 4], "steps": 2, "hidden": 8, "seed": 0, **kw}


def _vector_config(**kw: Any) -> dict[str, Any]:
    return {"shape": [5], "steps": 2, "hidden": 8, "seed": 0, **kw}


@pytest.mark.parametrize("coupling,scale,permutation", list(itertools.product(COUPLINGS, SCALES, PERMUTATIONS)))
@pytest.mark.parametrize("name", ["coupling-image", "coupling-vector"])
def test_inverse_of_forward_is_identity(name: str, coupling: str, scale: str, permutation: str) -> None:
    make = _image_config if name == "coupling-image" else _vector_config
    model = _perturb(zoo.build(name, make(coupling=coupling, scale=scale, permutation=permutation)))
    shape = (16, *make()["shape"])
    x = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        z, log_det = model(x)
        assert log_det.shape == (16,)
        assert torch.allclose(model.inverse(z), x, atol=1e-5)
        for block in model.blocks:  # block by block too
            y, _ = block(x)
            assert torch.allclose(block.inverse(y), x, atol=1e-5)
            x = y


def test_perturbation_makes_the_test_non_trivial() -> None:
    model = _perturb(zoo.build("coupling-image", _image_config(coupling="affine")))
    x = torch.rand(4, 1, 4, 4)
    with torch.no_grad():
        z, log_det = model(x)
    assert log_det.abs().min() > 1e-3
    assert (model.blocks[0](x)[0] - z).abs().max() > 1e-2


def _exact_log_det(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    def f(sample: torch.Tensor) -> torch.Tensor:
        return model(sample.unsqueeze(0))[0].flatten()

    values = []
    for sample in x:
        jac = torch.func.jacrev(f)(sample).reshape(sample.numel(), sample.numel())
        values.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(values)


@pytest.mark.parametrize(
    "name,coupling,scale,permutation",
    [
        ("coupling-image", "affine", "sigmoid", "conv1x1"),
        ("coupling-image", "affine", "exp", "shuffle"),
        ("coupling-image", "additive", "sigmoid", "conv1x1"),
        ("coupling-vector", "affine", "bounded", "linear"),
        ("coupling-vector", "affine", "sigmoid", "reverse"),
    ],
)
def test_log_det_matches_slogdet_of_jacobian(name: str, coupling: str, scale: str, permutation: str) -> None:
    make = _image_config if name == "coupling-image" else _vector_config
    model = _perturb(zoo.build(name, make(coupling=coupling, scale=scale, permutation=permutation))).double()
    x = torch.rand((3, *make()["shape"]), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        _, log_det = model(x)
    assert torch.allclose(log_det, _exact_log_det(model, x), atol=1e-8)


@pytest.mark.parametrize("permutation", ["reverse", "shuffle"])
def test_additive_without_actnorm_preserves_volume(permutation: str) -> None:
    model = _perturb(
        zoo.build("coupling-image", _image_config(coupling="additive", permutation=permutation, actnorm=False))
    )
    with torch.no_grad():
        _, log_det = model(torch.rand(8, 1, 4, 4))
    assert torch.equal(log_det, torch.zeros(8))


@pytest.mark.parametrize("name,make", [("coupling-image", _image_config), ("coupling-vector", _vector_config)])
def test_build_rebuilds_an_identical_model(name: str, make: Any) -> None:
    config = make(coupling="affine", permutation="shuffle")
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            zoo.build(name, config).state_dict().values(), zoo.build(name, config).state_dict().values(), strict=False
        )
    )
    trained = _perturb(zoo.build(name, config))
    rebuilt = zoo.build(name, config)
    rebuilt.load_state_dict(trained.state_dict())
    x = torch.rand((4, *config["shape"]))
    with torch.no_grad():
        assert torch.equal(trained(x)[0], rebuilt(x)[0])
        assert torch.equal(
            trained.inverse(x.reshape(trained(x)[0].shape)), rebuilt.inverse(x.reshape(trained(x)[0].shape))
        )


def test_build_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    zoo.build("coupling-image", _image_config())
    assert torch.equal(torch.rand(3), expected)


def test_model_contract() -> None:
    model = zoo.build("coupling-image", _image_config())
    assert isinstance(model, CouplingFlow)
    assert model.inverse_kind == "analytic" and model.log_det_kind == "exact"
    assert isinstance(model.blocks, nn.ModuleList)
    z, _ = model(torch.rand(2, 1, 4, 4))
    assert z.shape == (2, 4, 2, 2)


def _planted_coupling(scale: str, h_bias: float) -> Coupling:
    """A 4-channel affine coupling whose net outputs t = 0 and h = h_bias everywhere."""
    block = Coupling(ConvNet(2, 4, 8, torch.Generator().manual_seed(0)), 4, "affine", scale)
    with torch.no_grad():
        block.net.out.bias[2:] = h_bias
    return block


def test_sigmoid_scale_underflow_breaks_the_inverse() -> None:
    block = _planted_coupling("sigmoid", -200.0)
    x = torch.rand(4, 4, 2, 2) + 0.1
    with torch.no_grad():
        y, _ = block(x)
        assert block.scales(x).min() == 0.0  # sigmoid(-198) underflows in float32
        assert not torch.isfinite(block.inverse(y)).all()


def test_bounded_scale_keeps_the_inverse_factor_below_two() -> None:
    block = _planted_coupling("bounded", -200.0)
    x = torch.rand(4, 4, 2, 2) + 0.1
    with torch.no_grad():
        y, _ = block(x)
        assert (1.0 / block.scales(x)).max() <= 2.0
        assert torch.allclose(block.inverse(y), x, atol=1e-6)


def test_additive_coupling_scales_are_one() -> None:
    block = Coupling(MLPNet(2, 2, 8, torch.Generator().manual_seed(0)), 4, "additive")
    assert torch.equal(block.scales(torch.rand(3, 4)), torch.ones(3, 2))


@pytest.mark.parametrize(
    "config,message",
    [
        ({"coupling": "spline"}, "coupling"),
        ({"scale": "tanh"}, "scale"),
        ({"permutation": "random"}, "permutation"),
        ({"shape": [1, 5, 4]}, "even"),
    ],
)
def test_bad_config_says_what_is_expected(config: dict[str, Any], message: str) -> None:
    with pytest.raises(LoadError, match=message):
        zoo.build("coupling-image", _image_config(**config))
