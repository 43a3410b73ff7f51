"""``logdet`` against its batched stochastic reference, and what the cost model counts for it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import innaudit
from innaudit.audits import REGISTRY
from innaudit.audits.cost import Cost, Timing, Units
from innaudit.run.plan import kinds_used

from .linear_models import linear_model, log_spaced


def test_the_estimated_reference_says_what_ran_and_covers_the_known_log_det() -> None:
    s = log_spaced(12, low=0.3, high=4.0)
    x = torch.rand(6, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    config = {"logdet": {"samples": 6, "method": "matrix-free", "probes": 8, "steps": 32}}
    report = innaudit.audit(linear_model(s), data=x, ood=[], audits=["logdet"], config=config)
    result = report.audit("logdet").results[0]
    m = result.metrics
    assert m["reference"] == "estimated"
    assert (m["reference_probes"], m["reference_steps"]) == (8, 12)  # steps capped by d = 12
    assert "stochastic Lanczos quadrature, 8 probes x 12 steps" in result.message
    reference = torch.tensor(result.series["values"]["log_abs_det_j"], dtype=torch.float64)
    truth = float(s.log().sum())
    # 12 steps span the space: only probe noise is left, within the reported error bar
    assert float((reference - truth).abs().max()) <= 4 * m["reference_stderr"]["max"]
    assert m["error"]["max"] == 0.0  # the exact model log-det is never above ref + 3 stderr here
    assert m["reference_bias"]["max"] == 0.0  # the Krylov spaces are whole: the quadrature is exact
    assert "within [ref - bias - 3 stderr, ref + 3 stderr]" in result.message


def test_with_fewer_steps_than_the_dimension_the_reported_bar_covers_a_float32_map() -> None:
    """A float32 linear flow on d = 48 over three decades, 12 steps: each estimate lies above the
    truth by more than its probes' bar, and ``reference_bias`` widens the bar to cover it."""
    s = log_spaced(48, low=1e-2, high=10.0)
    model = linear_model(s, seed=4, dtype=torch.float32)
    truth = float(torch.linalg.slogdet(model.module.weight.detach().double())[1])
    x = torch.rand(6, 48, generator=torch.Generator().manual_seed(0))
    config = {"logdet": {"samples": 6, "method": "matrix-free", "probes": 8, "steps": 12}}
    report = innaudit.audit(model, data=x, ood=[], audits=["logdet"], config=config)
    result = report.audit("logdet").results[0]
    m = result.metrics
    reference = torch.tensor(result.series["values"]["log_abs_det_j"], dtype=torch.float64)
    se, bias = m["reference_stderr"]["max"], m["reference_bias"]["max"]
    assert float((reference - truth).min()) > 3 * m["reference_stderr"]["median"]  # the quadrature's bias
    assert float((reference - truth).max()) <= bias + 3 * se
    assert m["error"]["max"] == 0.0  # the model's exact log-det is below the upper bound


def test_the_matrix_free_cost_is_one_linearization_and_derivative_passes() -> None:
    logdet = REGISTRY["logdet"]
    options = {**logdet.options, "probes": 8, "steps": 32}
    cost = logdet.costs(3072, options)["matrix-free"].per_sample
    assert (cost.tangent, cost.backward) == (256, 248)  # the bidiagonalization's last step has no VJP
    assert (cost.jvp, cost.vjp) == (0, 0)  # no full JVP or VJP per step
    assert cost.forward == 2 + 32  # the model's own, the VJP's, and one per step shared by the probes
    assert cost.passes == pytest.approx(34 + 504)
    assert cost.dense == pytest.approx(8 * 8 * 32**2 / 3072**2)  # both bases reorthogonalized
    # steps beyond the dimension are not run, nor counted
    assert logdet.costs(8, options)["matrix-free"].per_sample.tangent == 8 * 8
    assert {"jvp", "vjp"} <= kinds_used([logdet.costs(3072, options)["matrix-free"]])


def _units(forward: float, jvp: float, vjp: float) -> Units:
    def per_sample(s: float) -> Timing:
        return Timing(0.0, s)

    return Units(per_sample(forward), per_sample(forward), per_sample(vjp), per_sample(jvp), 1e-9, 32, 3072)


def test_a_derivative_pass_is_priced_as_the_measured_pass_less_its_forward_pass() -> None:
    units = _units(forward=1.0, jvp=3.0, vjp=2.5)
    assert Cost(tangent=1).seconds(units) == pytest.approx(2.0)
    assert Cost(backward=1).seconds(units) == pytest.approx(1.5)
    # never below a forward pass: the derivative applies every linear layer again
    assert Cost(tangent=1).seconds(_units(forward=1.0, jvp=1.2, vjp=1.1)) == pytest.approx(1.0)


def test_under_a_budget_the_estimate_is_chosen_at_real_size_and_the_exact_jacobian_when_small() -> None:
    from innaudit.run.plan import _choose, _Speed

    logdet = REGISTRY["logdet"]
    units = _units(forward=1e-3, jvp=3e-3, vjp=3e-3)
    big = logdet.costs(3072, logdet.options)
    assert _choose(big, "auto", _Speed(units, 32), 32) == "matrix-free"
    small = logdet.costs(16, logdet.options)
    assert _choose(small, "auto", _Speed(replace(units, dim=16), 32), 32) == "exact"
