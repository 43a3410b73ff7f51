"""The bounded scale: the soft clamp, the measured ranges and bounds, zoo and normflows couplings."""

from __future__ import annotations

import math

import pytest
import torch

from innaudit.core.errors import UsageError
from innaudit.loading import load_object
from innaudit.remedies.bounded_scale import (
    SCALE_FLOOR,
    bound_scales,
    choose_clamps,
    floor_bound,
    measure_ranges,
    scale_targets,
    soft_clamp,
)

from . import models


def test_soft_clamp_is_odd_bounded_and_nearly_the_identity_near_zero() -> None:
    h = torch.linspace(-50, 50, 1001, dtype=torch.float64)
    bounded = soft_clamp(h, 3.0)
    assert bool((bounded.abs() < 3.0).all()) and torch.allclose(bounded, -soft_clamp(-h, 3.0))
    small = torch.tensor([1e-3, 0.1], dtype=torch.float64)
    assert torch.allclose(soft_clamp(small, 3.0), small - small**3 / 27, rtol=1e-6)


def test_the_overflow_flow_has_one_target_and_its_range_is_the_known_one() -> None:
    model = models.as_model(models.overflow_flow())
    targets = scale_targets(model.module)
    assert [(t.path, t.library, t.scale) for t in targets] == [("blocks.1", "zoo", "exp")]
    x = torch.tensor([[0.05, 0.0], [0.0, 0.1], [0.1, 0.05]])  # x1 (after the reverse) is column 1
    ranges = measure_ranges(model, targets, x)
    assert ranges == {"blocks.1": pytest.approx(10.0)}  # |200 x1 - 10| is largest at x1 = 0 and 0.1
    assert choose_clamps(ranges, 1.2) == {"blocks.1": 12.0}


def test_choose_clamps_floors_tiny_ranges_rounds_and_refuses_bad_margins() -> None:
    assert choose_clamps({"a": 0.01, "b": 1.23456789}, 1.5) == {"a": 0.75, "b": 1.852}
    for margin in (1.0, 0.5, math.inf, math.nan):
        with pytest.raises(UsageError, match="margin"):
            choose_clamps({"a": 1.0}, margin)


def test_the_floor_bound_is_the_clamp_whose_least_scale_is_the_floor() -> None:
    exp_c, sigmoid_c = floor_bound("exp"), floor_bound("sigmoid")
    assert exp_c == pytest.approx(math.log(100)) and floor_bound("sigmoid_inv") == sigmoid_c
    h = torch.tensor([-1e4, -30.0, 0.0], dtype=torch.float64)  # a collapsed scale input, far below -c
    assert float(torch.exp(soft_clamp(h, exp_c)).min()) == pytest.approx(SCALE_FLOOR, rel=1e-9)
    assert float(torch.sigmoid(soft_clamp(h, sigmoid_c) + 2).min()) == pytest.approx(SCALE_FLOOR, rel=1e-9)
    assert floor_bound("exp", 0.5) == pytest.approx(math.log(2))
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="floor"):
            floor_bound("exp", bad)
    with pytest.raises(ValueError, match="additive"):
        floor_bound("additive")


def test_choose_clamps_caps_only_the_bounds_above_the_cap() -> None:
    caps = {"low": 6.595, "high": 6.595}
    assert choose_clamps({"low": 3.0, "high": 14.55}, 1.2, caps) == {"low": 3.6, "high": 6.595}
    assert choose_clamps({"free": 14.55}, 1.2, {}) == {"free": 17.46}


def test_bounding_the_zoo_coupling_makes_every_noise_round_trip_finite() -> None:
    flow = models.overflow_flow()
    noise = torch.rand(2000, 2, generator=torch.Generator().manual_seed(0))
    model = models.as_model(flow)
    assert not bool(torch.isfinite(model.forward(noise)).all())  # exp(200 x1 - 10) overflows
    state = {k: v.clone() for k, v in flow.state_dict().items()}
    bound_scales(flow, {"blocks.1": 12.0})
    back = model.inverse(model.forward(noise))
    assert bool(torch.isfinite(back).all()) and float((back - noise).abs().max()) < 1e-5
    assert scale_targets(flow) == []  # bounded now
    assert all(torch.equal(state[k], v) for k, v in flow.state_dict().items())  # weights untouched


def test_bounding_a_normflows_coupling_uses_a_hook_that_a_second_call_replaces() -> None:
    flow = models.normflows_overflow()
    model = load_object(flow).model
    targets = scale_targets(flow)
    assert [(t.library, t.scale) for t in targets] == [("normflows", "exp")]
    noise = torch.rand(2000, 2, generator=torch.Generator().manual_seed(1))
    assert not bool(torch.isfinite(model.inverse(model.forward(noise))).all())
    bound_scales(flow, {targets[0].path: 100.0 / 2})
    bound_scales(flow, {targets[0].path: 12.0})  # replaces, does not stack
    net = flow.get_submodule(targets[0].path).param_map
    assert len(net._forward_hooks) == 1
    back = model.inverse(model.forward(noise))
    assert bool(torch.isfinite(back).all()) and float((back - noise).abs().max()) < 1e-4


def test_bound_scales_refuses_what_it_cannot_bound() -> None:
    flow = models.overflow_flow()
    with pytest.raises(UsageError, match="no module"):
        bound_scales(flow, {"blocks.7": 2.0})
    with pytest.raises(UsageError, match="FixedPermutation"):
        bound_scales(flow, {"blocks.0": 2.0})
    with pytest.raises(UsageError, match="expected a number"):
        bound_scales(flow, {"blocks.1": -1.0})
