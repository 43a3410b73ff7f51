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
    assert how.startswith("dense operator")
    truth = torch.linalg.matrix_norm(_operator_matrix(layer, (3, 6, 6)), ord=2)
    assert float(truth) <= norm <= float(truth) * (1 + 1e-9)  # exact, widened by the rounding margin
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
        assert m["forward"]["tightness"] == pytest.approx(m["forward"]["bound"] / m["forward"]["measured"])
        assert m["violation_fraction"] == 0.0
        # the whole flow is one chain (its couplings' hidden states are 1088 wide, joined through
        # 64 coordinates): the certificate is the chain bound, far below the blocks' product
        for d in ("forward", "inverse"):
            assert m[d]["bound"] == m[d]["chain"] and m[d]["chain"] * 4 < m[d]["product"]
        assert len(r.series["blocks"]) == m["blocks"] == m["certified_blocks"] == 25
        for row in r.series["blocks"]:  # every block's certificate holds where it was measured
            assert row["certificate"] == "global" and row["forward_measured"] <= row["forward_bound"] * (1 + 1e-3)
            assert row["inverse_measured"] <= row["inverse_bound"] * (1 + 1e-3)


@pytest.mark.skipif(not (CHECKPOINTS / "digits-affine.pt").exists(), reason="no shipped checkpoints")
def test_affine_checkpoint_certificate_is_empirical_with_the_measured_log_scale_range() -> None:
    audit = _bounds_report("affine").audits[0]
    assert audit.status is Status.WARN
    for r in audit.results:
        m = r.metrics
        assert m["empirical_blocks"] == 8 and m["certified_blocks"] == 17
        assert m["forward"]["bound"] == math.inf and m["inverse"]["tightness"] == math.inf
        assert m["log_scale"]["min"] < 0 < m["log_scale"]["max"]
        assert "certificate empirical" in r.message and "exp scale" in r.message
        coupling = [row for row in r.series["blocks"] if row["kind"] == "affine_scale_unbounded"]
        assert len(coupling) == 8 and all(row["certificate"] == "empirical" for row in coupling)
        low = min(row["log_scale_min"] for row in coupling)
        assert low == pytest.approx(m["log_scale"]["min"])


def _bounds(model, x: torch.Tensor):
    report = innaudit.audit(model, data=x, ood=[], audits=["bounds"], config={"bounds": {"samples": len(x)}})
    return report.audits[0]


def test_a_stale_spectral_normalization_fails_with_the_layer_named_and_the_estimate_called_out() -> None:
    from tests.adapters.iterative_models import linear_residual

    audit = _bounds(linear_residual(), torch.rand(8, 2, generator=GEN().manual_seed(0)))
    (r,) = audit.results
    assert audit.status is Status.FAIL
    (row,) = r.series["blocks"]
    # A = diag(1.5, 0.5): certified exactly, while the stale sigma lets the block believe 0.5
    assert row["lip_g"] == pytest.approx(1.5, rel=1e-9) and row["lip_g_estimate"] == pytest.approx(0.5)
    assert row["lip_g_measured"] == pytest.approx(1.5, rel=1e-6) and row["inverse_bound"] is None
    assert r.metrics["residual"] == {
        "lip_g_max": pytest.approx(1.5, rel=1e-9),
        "lip_g_measured_max": pytest.approx(1.5, rel=1e-6),
        "uncertified": 1,
        "estimate_misses": 1,
    }
    assert "certified Lip(g) = 1.5 >= 1" in r.message and "largest layer 0:Linear" in r.message
    assert "estimate says 0.5 < 1" in r.message


def test_a_contraction_is_certified_below_one_and_a_linear_block_exactly() -> None:
    from tests.adapters.iterative_models import stable_linear_residual

    audit = _bounds(stable_linear_residual(), torch.rand(8, 2, generator=GEN().manual_seed(0)))
    (r,) = audit.results
    assert audit.status is Status.PASS
    (row,) = r.series["blocks"]
    # float32 weights: 0.9 is 0.89999998
    assert row["lip_g"] == pytest.approx(0.9, rel=1e-7) and row["lip_g_measured"] == pytest.approx(0.9, rel=1e-6)
    # F = I + diag(0.9, 0.3): Lip(F) = 1.9 (the chain bound is exact for a linear block);
    # Lip(F^-1) = 1 / (1 + 0.3) locally, certified 1 / (1 - 0.9) = 10 (A could have been -A)
    assert r.metrics["forward"]["bound"] == pytest.approx(1.9, rel=1e-7)
    assert r.metrics["forward"]["tightness"] == pytest.approx(1.0, rel=1e-6)
    assert r.metrics["inverse"]["bound"] == pytest.approx(10.0, rel=1e-6)
    assert r.metrics["residual"]["uncertified"] == 0


def test_freia_padding_mismatch_estimate_below_one_certificate_above() -> None:
    audit = _bounds("tests/adapters/iterative_models.py:freia_padding_mismatch", torch.rand(4, 2, 3, 3))
    (r,) = audit.results
    (row,) = r.series["blocks"]
    assert audit.status is Status.FAIL and row["kind"] == "residual"
    assert row["lip_g_estimate"] < 1.0 <= row["lip_g"]
    assert "padding 0" in row["estimate_how"] and r.metrics["residual"]["estimate_misses"] == 1
    # the first conv's norm as the layer really is (padding 1) is well above FrEIA's 1.0
    assert row["worst_layer"].startswith("0:Conv2d") and float(row["worst_layer"].split()[-1]) > 1.3


def test_library_residual_blocks_have_certificates_and_estimates() -> None:
    x = torch.rand(6, 2, generator=GEN().manual_seed(1))
    audit = _bounds("tests/adapters/iterative_models.py:normflows_residual", x)
    (r,) = audit.results
    assert audit.status is Status.PASS and r.metrics["blocks"] == 3
    for row in r.series["blocks"]:
        assert row["lip_g_measured"] <= row["lip_g"] < 1.0 and 0 < row["lip_g_estimate"] < 1.0


@pytest.mark.skipif(not (CHECKPOINTS / "checkerboard-residual.pt").exists(), reason="no shipped checkpoints")
def test_shipped_2d_flows_are_certified_far_tighter_than_before() -> None:
    """Before this certificate (the product of per-layer norm products), checkerboard-additive
    was bounded by 5.6e8 forward and checkerboard-residual by 22.9."""
    cfg = {"samples": 16, "ood": ["uniform"], "bounds": {"samples": 16}}
    additive = innaudit.audit(str(CHECKPOINTS / "checkerboard-additive.pt"), audits=["bounds"], config=cfg)
    residual = innaudit.audit(str(CHECKPOINTS / "checkerboard-residual.pt"), audits=["bounds"], config=cfg)
    for audit in (additive.audits[0], residual.audits[0]):
        assert audit.status is Status.PASS
        for r in audit.results:
            m = r.metrics
            assert m["violation_fraction"] == 0.0 and m["forward"]["chain"] <= m["forward"]["product"]
            assert m["forward"]["bound"] >= m["forward"]["measured"]
    assert additive.audits[0].results[0].metrics["forward"]["bound"] < 1e7
    assert residual.audits[0].results[0].metrics["forward"]["bound"] < 11


def test_block_jacobians_are_measured_and_planned_only_up_to_block_max_dim() -> None:
    """A block's exact Jacobian (and its SVD, ``d^3``) is the bounds audit's dearest part at
    image size: planned per set for ``block_samples`` samples of a block no wider than
    ``block_max_dim`` (a multi-scale model's later blocks are narrower than its input), never
    per sample, so a budgeted run at d = 3072 is not refused for it."""
    from innaudit.audits import REGISTRY
    from innaudit.audits.bounds import search_cost

    bounds = REGISTRY["bounds"]
    k = bounds.options["block_samples"]
    small, large = (bounds.costs(d, bounds.options)["matrix-free"] for d in (64, 3072))
    assert small.per_sample.dense == 0 and large.per_sample.dense == 0
    search = search_cost(64, bounds.options)  # the witness search, planned beside the blocks
    assert search.dense > 0 and search_cost(3072, bounds.options).dense == 0
    assert small.per_set.dense == k * 8 * 64.0**3 + search.dense
    assert small.per_set.vmap_vjp == k * 8 * 64 + search.vmap_vjp
    assert large.per_set.dense == k * 8 * 1024.0**3
    options = {**bounds.options, "block_max_dim": 4096, "block_samples": 2}
    wider = bounds.costs(3072, options)["matrix-free"]
    assert wider.per_set.dense == 2 * 8 * 3072.0**3 + search_cost(3072, options).dense


def test_block_constants_are_taken_on_the_first_block_samples_only() -> None:
    """``rows``: the exact Jacobians of the first samples only; the later samples' constants are
    NaN (not measured), their log-scale ranges still measured."""
    from innaudit.audits.block_constants import block_constants
    from innaudit.loading import load_model

    model = load_model(str(CHECKPOINTS / "checkerboard-residual.pt")).model
    x = torch.rand(6, *model.info.domain.shape, generator=GEN().manual_seed(0))
    chain = model.blocks()
    every = block_constants(chain, x, [True] * len(chain))
    first = block_constants(chain, x, [True] * len(chain), rows=2)
    assert len(chain) > 1
    for a, b in zip(every, first, strict=True):
        assert math.isfinite(a.forward.sum()) and math.isfinite(b.forward[:2].sum())
        assert all(math.isnan(v) for v in [*b.forward[2:], *b.lip_g[2:]])
        assert b.forward[:2].tolist() == pytest.approx(a.forward[:2].tolist())
