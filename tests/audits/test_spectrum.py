"""Known answers for the spectrum audit: chosen singular values, the inverse cross-check, and
the shipped checkpoints (the paper's table in miniature)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import innaudit
from innaudit.audits import REGISTRY
from innaudit.core.results import Status
from tests.audits.linear_models import linear_model, log_spaced

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


def _set(report, audit_id: str, dataset: str | None = None):
    audit = next(a for a in report.audits if a.id == audit_id)
    return audit if dataset is None else next(r for r in audit.results if r.dataset == dataset)


def _run(model, method: str, **extra):
    cfg = {
        "audits": ["spectrum"],
        "samples": 8,
        "ood": ["gaussian"],
        "spectrum": {"samples": 8, "method": method, **extra},
    }
    return innaudit.audit(model, data="uniform", config=cfg)


def test_audits_registered_in_run_order() -> None:
    ids = list(REGISTRY)
    mine = ["spectrum", "bounds", "layers", "logdet", "grid"]
    assert [i for i in ids if i in mine] == mine
    assert ids.index("sampling") < ids.index("spectrum")


@pytest.mark.parametrize("method, rtol", [("exact", 1e-2), ("matrix-free", 5e-2)])
def test_linear_map_with_chosen_singular_values(method: str, rtol: float) -> None:
    result = _set(_run(linear_model(log_spaced(16)), method), "spectrum", "uniform")
    m = result.metrics
    assert m["method"] == method
    for stat in ("min", "median", "max"):
        assert m["forward"]["sv_max"][stat] == pytest.approx(1e2, rel=rtol)
        assert m["forward"]["sv_min"][stat] == pytest.approx(1e-3, rel=rtol)
        assert m["inverse"]["sv_max"][stat] == pytest.approx(1e3, rel=rtol)
    assert m["condition"]["max"] == pytest.approx(1e5, rel=2 * rtol)
    assert m["nonfinite_fraction"] == 0.0
    assert result.status is Status.WARN  # condition 1e5 > warn 1e3, no fail level


def test_inverse_sigma_agrees_with_forward_sigma_in_exact_method() -> None:
    m = _set(_run(linear_model(log_spaced(10), seed=2), "exact"), "spectrum", "uniform").metrics
    assert m["forward"]["sv_min"]["min"] * m["inverse"]["sv_max"]["max"] == pytest.approx(1.0, rel=1e-6)
    assert m["cross_check"]["mismatch_fraction"] == 0.0
    assert m["cross_check"]["max_log10_gap"] < 1e-6


def test_inconsistent_inverse_is_flagged_by_the_cross_check() -> None:
    model = linear_model(torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64))
    model.module.inverse_weight.mul_(1.5)  # a wrong inverse: sigma_max(J_F^-1) off by 1.5x
    m = _set(_run(model, "exact"), "spectrum", "uniform").metrics
    assert m["cross_check"]["mismatch_fraction"] == 1.0
    assert m["cross_check"]["max_log10_gap"] == pytest.approx(math.log10(1.5), rel=1e-6)


def test_matrix_free_reports_iterations_and_tolerance() -> None:
    m = _set(_run(linear_model(log_spaced(6)), "matrix-free", tol=1e-6), "spectrum", "uniform").metrics
    assert 1 <= m["iterations"]["forward"]["max"] <= 6
    assert m["converged_fraction"] == 1.0 and m["tolerance"] == 1e-6


def test_nan_jacobian_is_a_finding_not_a_crash() -> None:
    from tests.audits.known_models import underflow_model

    cfg = {"audits": ["spectrum"], "samples": 16, "ood": ["gaussian"], "spectrum": {"samples": 16}}
    result = _set(innaudit.audit(underflow_model(), data="uniform", config=cfg), "spectrum", "uniform")
    assert result.status is Status.FAIL
    assert 0 < result.metrics["nonfinite_fraction"] < 1


@pytest.mark.skipif(not (CHECKPOINTS / "digits-affine.pt").exists(), reason="no shipped checkpoints")
def test_additive_checkpoint_has_much_larger_sigma_min_than_affine() -> None:
    """The paper's table in miniature: sigma_min of J_F over noise inputs, additive vs affine."""
    cfg = {"audits": ["spectrum"], "samples": 8, "ood": ["uniform", "gaussian"], "spectrum": {"samples": 8}}
    smallest = {}
    for name in ("additive", "affine"):
        report = innaudit.audit(str(CHECKPOINTS / f"digits-{name}.pt"), config=cfg)
        values = [r.metrics["forward"]["sv_min"]["min"] for r in _set(report, "spectrum").results]
        smallest[name] = min(v for v in values if math.isfinite(v))
        if name == "additive":
            assert all(r.status is Status.PASS for r in _set(report, "spectrum").results)
    assert smallest["additive"] > 0.5
    assert smallest["additive"] > 1e3 * smallest["affine"]


def test_regularized_classifiers_have_a_much_larger_sigma_min_than_the_unregularized_one() -> None:
    """Table C in miniature: FD and NF keep sigma_min of J_F on the test digits away from 0.

    The first 64 test digits suffice: 3 of them already have sigma_min < 1e-6 under the
    unregularized classifier (12 of all 360 do)."""
    cfg = {"audits": ["spectrum"], "samples": 64, "ood": ["one=constant:0.5"], "spectrum": {"samples": 64}}
    smallest = {}
    for reg in ("", "-fd", "-nf"):
        report = innaudit.audit(str(CHECKPOINTS / f"digits-classifier-affine{reg}.pt"), config=cfg)
        digits = next(r for r in _set(report, "spectrum").results if r.dataset == "digits:test")
        smallest[reg] = digits.metrics["forward"]["sv_min"]["min"]
    assert smallest[""] < 1e-6, "the unregularized affine classifier has a collapsed direction"
    assert smallest["-fd"] > 100 * smallest[""] and smallest["-nf"] > 100 * smallest[""]
