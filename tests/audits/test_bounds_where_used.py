"""The bounds audit where the model is used: the witness search, the domain-box certificate and
the local certificate over each sample's ball, on toys with known answers and on the shipped
checkpoints (never below a measured value)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import innaudit
from innaudit.audits.bounds_local import ModelChain, domain_search, local_certificates
from innaudit.audits.bounds_search import search_witness
from innaudit.core.results import Status
from innaudit.linalg.chain import Affine, Slopes

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


def _kink(gain: float) -> ModelChain:
    """``x -> x + gain relu(x_0 - 0.9) e_0`` on 2 coordinates as a chain: Jacobian ``I`` left of
    the kink, ``diag(1 + gain, 1)`` right of it."""
    pick = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    first = Affine(pick, torch.tensor([0.0, 0.0, -0.9], dtype=torch.float64))
    ones = torch.ones(2, dtype=torch.float64)
    act = Slopes(
        torch.cat([ones, torch.zeros(1, dtype=torch.float64)]), torch.ones(3, dtype=torch.float64), nn.ReLU(), 2
    )
    last = Affine(torch.tensor([[1.0, 0.0, gain], [0.0, 1.0, 0.0]], dtype=torch.float64))
    return ModelChain(((first, act, last),), None)


def _kink_map(gain: float):
    def fn(x: Tensor) -> Tensor:
        bump = torch.relu(x[:, :1] - 0.9) * gain
        return torch.cat([x[:, :1] + bump, x[:, 1:]], 1)

    return fn


def test_the_search_finds_the_steep_region_the_data_never_visit() -> None:
    """The starts all sit left of the kink (Jacobian I, gradient zero): random steps must carry
    the search to ``x_0 > 0.9`` to find 4 (forward) and, for ``gain = -0.9``, 10 (inverse)."""
    starts = torch.rand(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5
    gen = torch.Generator().manual_seed(1)
    up = search_witness(_kink_map(3.0), starts, 0.0, 1.0, steps=30, proposals=4, generator=gen)
    assert up.value == pytest.approx(4.0) and float(up.point[0]) > 0.9
    down = search_witness(_kink_map(-0.9), starts, 0.0, 1.0, steps=30, proposals=4, generator=gen, inverse=True)
    assert down.value == pytest.approx(10.0)


def test_the_domain_certificate_of_the_kink_is_its_sup() -> None:
    low, high = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    found = domain_search(_kink(3.0), low, high, cells=16, split_max_dim=4)
    forward, inverse = found.forward, found.inverse
    assert 4.0 <= forward == pytest.approx(4.0, rel=1e-8)
    inverse = domain_search(_kink(-0.5), low, high, cells=16, split_max_dim=4).inverse
    assert 2.0 <= inverse == pytest.approx(2.0, rel=1e-8)  # the mean-slope chain minus delta: exact here


def test_local_certificates_are_exact_away_from_the_kink_and_hold_across_it() -> None:
    x = torch.tensor([[0.2, 0.5], [0.95, 0.5], [0.9, 0.5]], dtype=torch.float64)
    found = local_certificates(_kink(3.0), x, 0.01)
    assert found.forward[0] == pytest.approx(1.0, rel=1e-9) and found.unstable[0] == 0.0
    assert found.forward[1] == pytest.approx(4.0, rel=1e-9) and found.unstable[1] == 0.0
    assert found.forward[2] >= 4.0 and found.unstable[2] > 0  # the ball holds the kink


SHIPPED = ("checkerboard-additive", "checkerboard-residual", "digits-residual")
"""The shipped checkpoints with a chain; digits-additive's run is test_bounds.py's (its PASS holds
the same checks: a violation or a witness above the certificate fails the audit)."""


def _run(name: str, **options: object):
    cfg = {"samples": 8, "ood": ["uniform"], "bounds": {"samples": 8, "search_steps": 8, **options}}
    return innaudit.audit(str(CHECKPOINTS / f"{name}.pt"), audits=["bounds"], config=cfg).audits[0]


@pytest.mark.slow
@pytest.mark.skipif(not (CHECKPOINTS / "digits-additive.pt").exists(), reason="no shipped checkpoints")
@pytest.mark.parametrize("name", SHIPPED)
def test_on_shipped_checkpoints_no_certificate_is_below_a_measured_value(name: str) -> None:
    audit = _run(name)
    assert audit.status in (Status.PASS, Status.WARN)
    for r in audit.results:
        m = r.metrics
        assert m["violation_fraction"] == 0.0 and m["witness_exceeds"] == 0
        for d in ("forward", "inverse"):
            v = m[d]
            assert v["measured"] <= v["witness"] * (1 + 1e-6)
            assert v["witness"] <= v["global"] * (1 + 1e-3)
            assert v["global"] <= v["bound"]
            if math.isfinite(v["local"]):
                assert v["measured"] <= v["local"] * (1 + 1e-3)


@pytest.mark.skipif(not (CHECKPOINTS / "checkerboard-additive.pt").exists(), reason="no shipped checkpoints")
def test_the_local_certificate_of_an_additive_flow_is_far_tighter_than_the_global() -> None:
    audit = _run("checkerboard-additive")
    m = audit.results[0].metrics
    assert m["forward"]["local_tightness"] < 10 and m["inverse"]["local_tightness"] < 10
    assert m["forward"]["global_tightness"] <= m["forward"]["tightness"]
    assert "local certificate" in audit.results[0].message and "search witness" in audit.results[0].message


@pytest.mark.skipif(not (CHECKPOINTS / "checkerboard-additive.pt").exists(), reason="no shipped checkpoints")
def test_blocks_above_block_max_dim_are_named_with_the_option_to_raise() -> None:
    audit = _run("checkerboard-additive", block_max_dim=1, search_steps=0)
    r = audit.results[0]
    assert audit.status is Status.WARN and r.metrics["unmeasured_blocks"] == r.metrics["blocks"]
    assert "raise bounds.block_max_dim" in r.message and "0:" in r.message


@pytest.mark.slow
@pytest.mark.skipif(not (CHECKPOINTS / "checkerboard-additive.pt").exists(), reason="no shipped checkpoints")
@pytest.mark.parametrize("name", ("checkerboard-additive", "checkerboard-residual"))
def test_the_shipped_2d_flows_are_certified_within_10x_of_the_witness_both_ways(name: str) -> None:
    """The goal read end to end through the audit: the global certificate over the domain box
    within 10x of the largest local constant measured in it, forward and inverse."""
    audit = _run(name)
    for r in audit.results:
        for d in ("forward", "inverse"):
            v = r.metrics[d]
            assert v["witness"] <= v["global"] * (1 + 1e-3) and v["witness_tightness"] < 10, (d, v)
