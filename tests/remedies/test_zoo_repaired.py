"""The ``repaired`` architecture: a zoo model with bounded coupling scales and float64 inverses."""

from __future__ import annotations

import io
import math

import pytest
import torch

from innaudit import zoo
from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.loading.native import checkpoint_bytes, parse_native
from innaudit.zoo.layers import Coupling
from innaudit.zoo.repaired import Float64Inverse, apply_float64_inverse

from . import models

DOMAIN = DataDomain(shape=(2,), low=0.0, high=1.0)


def test_coupling_clamp_bounds_h_and_keeps_small_h() -> None:
    block = models.overflow_flow().blocks[1]
    x = torch.tensor([[0.3, 0.0], [0.05, 0.0]])  # the block's x1 is column 0: h = 50 and h = 0
    block.clamp = 12.0
    with torch.no_grad():
        scales = block.scales(x)
    assert float(scales[0].log()) == pytest.approx(12 * math.tanh(50 / 12), rel=1e-5)  # 11.994, not 50
    assert float(scales[1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive, finite"):
        Coupling(block.net, 2, "affine", "exp", clamp=0.0)


def test_a_repaired_checkpoint_rebuilds_the_base_with_its_remedies() -> None:
    trained = models.overflow_flow()  # stands for the weights a repair fine-tuned
    apply_float64_inverse(trained, ["blocks.0"])  # a FixedPermutation: its integer buffers stay integers
    config = {
        "base": {"name": "coupling-vector", "config": models.overflow_config()},
        "scale_clamp": {"blocks.1": 12.0},
        "inverse_float64": ["blocks.0"],
    }
    built = zoo.build("repaired", config)
    built.load_state_dict(trained.state_dict())
    blob = checkpoint_bytes(built, "repaired", config, DOMAIN, {"test": True})
    module, name, _, _ = parse_native(torch.load(io.BytesIO(blob), weights_only=True))
    assert name == "repaired" and module.blocks[1].clamp == 12.0 and isinstance(module.blocks[0], Float64Inverse)
    x = torch.tensor([[0.5, 1.0]])
    z, _ = module(x)
    assert bool(torch.isfinite(z).all()) and torch.allclose(module.inverse(z), x, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scale_clamp": {"blocks.9": 1.0}}, "no module"),
        ({"scale_clamp": {"blocks.0": 1.0}}, "not an affine Coupling"),
        ({"scale_clamp": {"blocks.1": 1e9}}, "expected a number"),
        ({"inverse_float64": "blocks.0"}, "list of module paths"),
        ({"base": {"name": "repaired", "config": {}}}, "itself 'repaired'"),
        ({"base": {"name": "no-such", "config": {}}}, "does not know"),
    ],
)
def test_a_damaged_repaired_config_is_a_load_error(change: dict[str, object], message: str) -> None:
    config = {"base": {"name": "coupling-vector", "config": models.overflow_config()}, **change}
    with pytest.raises(LoadError, match=message):
        zoo.build("repaired", config)


def test_float64_inverse_recovers_what_the_float32_inverse_overflows() -> None:
    flow = models.precision_flow()  # ActNorm log_scale -90: the inverse multiplies by e^90 > 3.4e38
    actnorm = flow.blocks[0]
    x = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    y, _ = actnorm(x)
    assert bool(torch.isfinite(y).all()) and not bool(torch.isfinite(actnorm.inverse(y)).all())
    wrapped = Float64Inverse(actnorm)
    back = wrapped.inverse(y)
    assert back.dtype == torch.float32 and torch.allclose(back, x, rtol=1e-4)
    assert torch.equal(wrapped(x)[0], y)  # the forward is the block's own


def test_float64_inverse_passes_gradients_to_the_block() -> None:
    flow = models.ill_conditioned_flow(condition=10.0)
    wrapped = Float64Inverse(flow.blocks[0])
    z = torch.tensor([[0.3, -0.2]])
    wrapped.inverse(z).sum().backward()
    grad = flow.blocks[0].weight.grad
    assert grad is not None and bool(grad.abs().sum() > 0)
