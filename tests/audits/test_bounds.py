"""Certified Lipschitz bounds: the block rules against exact answers, and the audit on the
shipped checkpoints (finite for additive, never exceeded by measured constants)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import innaudit
from innaudit.core.results import Status
from innaudit.linalg.lipschitz import block_bound, conv_operator_norm, net_lipschitz
from innaudit.zoo.layers import ActNorm, ConvNet, Coupling, InvertibleConv1x1, MLPNet

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
GEN = torch.Generator


def _operator_matrix(layer: nn.Conv2d, shape: tuple[int, ...]) -> torch.Tensor:
    n = math.prod(shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    out = torch.nn.functional.conv2d(eye, layer.weight.double(), None, layer.stride, layer.padding)
    return out.reshape(n, -1)


def test_conv_operator_norm_is_exact_and_kernel_bound_is_an_upper_bound() -> None:
    layer = nn.Conv2d(3, 5, 3, padding=1)
    torch.manual_seed(0)
    norm, how = conv_operator_norm(layer, (3, 6, 6))
    assert how == "exact operator SVD"
    truth = torch.linalg.matrix_norm(_operator_matrix(layer, (3, 6, 6)), ord=2)
    assert norm == pytest.approx(float(truth), rel=1e-12)
    kernel = torch.linalg.matrix_norm(layer.weight.detach().double().reshape(5, -1), ord=2)
    assert 3 * float(kernel) >= norm  # the sqrt(kh kw) bound holds
    assert float(kernel) < norm  # the reshaped kernel alone is not a bound here


def test_additive_coupling_bound_matches_the_block_matrix_formula() -> None:
    net = MLPNet(2, 2, 16, GEN().manual_seed(0))
    with torch.no_grad():
        net.out.weight.normal_(generator=GEN().manual_seed(1))
    block = Coupling(net, 4, "additive")
    lip = net_lipschitz(net, (2,))
    b = block_bound(block, (4,))
    assert b.forward == pytest.approx((lip + math.sqrt(lip**2 + 4)) / 2)
    assert b.forward <= 1 + lip and b.inverse == b.forward
    # a linear t with ||A|| = a attains the bound: J = [[I, 0], [A, I]]
    a = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    j = torch.eye(4, dtype=torch.float64)
    j[2:, :2] = a
    assert float(torch.linalg.matrix_norm(j, ord=2)) == pytest.approx((3 + math.sqrt(13)) / 2)


def test_block_rules_and_hook() -> None:
    act = ActNorm(3)
    with torch.no_grad():
        act.log_scale.copy_(torch.tensor([0.0, 1.0, -2.0]))
    b = block_bound(act, (3,))
    assert (b.forward, b.inverse) == (pytest.approx(math.e), pytest.approx(math.exp(2)))
    conv = InvertibleConv1x1(4, GEN().manual_seed(0))
    s = torch.linalg.svdvals(conv.weight.detach().double())
    b = block_bound(conv, (4, 2, 2))
    assert (b.forward, b.inverse) == (pytest.approx(float(s[0])), pytest.approx(float(1 / s[-1])))
    affine = Coupling(ConvNet(2, 4, 8, GEN().manual_seed(0)), 4, "affine")
    assert block_bound(affine, (4, 2, 2)).forward is None

    class Hooked(nn.Module):
        def lipschitz_bounds(self) -> tuple[float, float]:
            return 1.5, 4.0

    assert (block_bound(Hooked(), (2,)).forward, block_bound(Hooked(), (2,)).inverse) == (1.5, 4.0)


def _bounds_report(name: str):
    cfg = {"audits": ["bounds"], "samples": 8, "ood": ["uniform", "gaussian"], "bounds": {"samples": 8}}
    return innaudit.audit(str(CHECKPOINTS / f"digits-{name}.pt"), config=cfg)


@pytest.mark.skipif(not (CHECKPOINTS / "digits-additive.pt").exists(), reason="no shipped checkpoints")
def test_additive_checkpoint_bounds_are_finite_and_never_exceeded() -> None:
    audit = _bounds_report("additive").audits[0]
    assert audit.status is Status.PASS
    for r in audit.results:
        m = r.metrics
        assert math.isfinite(m["forward"]["bound"]) and math.isfinite(m["inverse"]["bound"])
        assert m["forward"]["measured"] <= m["forward"]["bound"]
        assert m["inverse"]["measured"] <= m["inverse"]["bound"]
        assert m["violation_fraction"] == 0.0
        assert len(r.series["blocks"]["name"]) == m["blocks"] == 25


@pytest.mark.skipif(not (CHECKPOINTS / "digits-affine.pt").exists(), reason="no shipped checkpoints")
def test_affine_checkpoint_is_skipped_with_the_reason() -> None:
    audit = _bounds_report("affine").audits[0]
    assert audit.status is Status.SKIP
    assert "affine coupling" in audit.message
