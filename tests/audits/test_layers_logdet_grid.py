"""Known answers for the layers, logdet and grid audits."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import numpy as np
import pytest

import innaudit
from innaudit.core.results import Status
from tests.audits.known_models import scaling_model, underflow_model
from tests.audits.linear_models import linear_model, log_spaced

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


def _results(report, audit_id: str):
    return next(a for a in report.audits if a.id == audit_id)


@pytest.mark.skipif(not (CHECKPOINTS / "digits-affine.pt").exists(), reason="no shipped checkpoints")
def test_layers_names_a_coupling_on_the_affine_checkpoint_and_nothing_on_additive() -> None:
    cfg = {"audits": ["layers"], "samples": 8, "ood": ["uniform"], "layers": {"samples": 8, "worst": 1}}
    affine = _results(innaudit.audit(str(CHECKPOINTS / "digits-affine.pt"), config=cfg), "layers")
    noise = next(r for r in affine.results if r.dataset == "uniform")
    assert noise.status is Status.FAIL
    assert "Coupling" in noise.metrics["culprit"] and noise.metrics["culprit_index"] > 0
    assert noise.metrics["scale_min"] < 1e-6  # an affine scale underflowed
    blocks = noise.series["blocks"]
    assert len(blocks["name"]) == 25 and blocks["nonfinite_fraction"][0] == 0.0
    additive = _results(innaudit.audit(str(CHECKPOINTS / "digits-additive.pt"), config=cfg), "layers")
    for r in additive.results:
        assert r.status is Status.PASS and r.metrics["culprit_index"] == -1


def test_logdet_exact_and_estimated_reference_agree_with_known_model() -> None:
    model = scaling_model([0.5, 2.0, 3.0, 0.25])
    for method in ("exact", "matrix-free"):
        cfg = {
            "audits": ["logdet"],
            "samples": 8,
            "ood": ["gaussian"],
            "logdet": {"samples": 8, "method": method, "probes": 4, "steps": 4},
        }
        audit = _results(innaudit.audit(model, data="uniform", config=cfg), "logdet")
        for r in audit.results:
            assert r.status is Status.PASS
            assert r.metrics["reference"] == ("exact" if method == "exact" else "estimated")
            assert r.metrics["error"]["max"] < 1e-5


def test_logdet_catches_a_wrong_log_det() -> None:
    model = linear_model(log_spaced(5, 0.1, 10.0))
    model.module.weight.data.mul_(2.0)  # the map doubles; its log-det term follows the weight...
    original = model.module.forward

    def forward(x):  # ...but this model reports log|det| of the old weight
        z, ld = original(x)
        return z, ld - 5 * math.log(2.0)

    model.module.forward = forward
    cfg = {"audits": ["logdet"], "samples": 4, "ood": ["gaussian"], "logdet": {"samples": 4}}
    r = _results(innaudit.audit(model, data="uniform", config=cfg), "logdet").results[0]
    assert r.status is Status.FAIL
    assert r.metrics["error"]["max"] == pytest.approx(5 * math.log(2.0), rel=1e-6)


def test_grid_finds_the_planted_failure_region() -> None:
    cfg = {"audits": ["grid"], "samples": 4, "ood": ["gaussian"], "grid": {"resolution": 32}}
    audit = _results(innaudit.audit(underflow_model(), data="uniform", config=cfg), "grid")
    r = audit.results[0]
    grid = r.series["grid"]
    xs = np.array(grid["x"])
    err = np.array(grid["error"], dtype=float)
    assert err.shape == (32, 32) and len(grid["y"]) == 32
    # NaN exactly for x1 > ~0.52 (column index = x1), finite and exact elsewhere
    assert np.isinf(err[:, xs > 0.6]).all()
    assert np.isfinite(err[:, xs < 0.25]).all() and (err[:, xs < 0.25] < 1e-5).all()
    assert r.metrics["nonfinite_fraction"] == pytest.approx((xs > 0.52).mean())
    assert np.array(grid["condition"], dtype=float).shape == (32, 32)


def test_grid_skips_models_that_are_not_2d() -> None:
    cfg = {"audits": ["grid"], "samples": 4, "ood": ["gaussian"]}
    report = innaudit.audit(scaling_model([1.0, 2.0, 3.0]), data="uniform", config=cfg)
    assert _results(report, "grid").status is Status.SKIP


def test_every_new_audit_explains_itself() -> None:
    from innaudit.audits import REGISTRY

    for aid in ("spectrum", "bounds", "layers", "logdet", "grid"):
        cls = REGISTRY[aid]
        doc = inspect.cleandoc(cls.__doc__ or "")
        assert "Reading" in doc and re.search(r"https?://|arXiv", doc), aid  # how to read it, and the source
        text = cls.explain()
        for path, threshold in cls.thresholds.items():
            line = next(line for line in text.splitlines() if line.strip().startswith(f"{path}:"))
            for level in (threshold.warn, threshold.fail):
                assert level is None or f"{level:g}" in line, (aid, path, line)


def _estimated_logdet(model, shift: float = 0.0):
    """``logdet`` against the matrix-free reference at the budget's shrunk size (2 probes x 16
    steps) on a 128-dimensional map with singular values from 10 down to 1e-3."""
    if shift:
        original = model.module.forward

        def forward(x):
            z, ld = original(x)
            return z, ld + shift

        model.module.forward = forward
    cfg = {
        "audits": ["logdet"],
        "samples": 4,
        "ood": ["gaussian"],
        "logdet": {"samples": 4, "method": "matrix-free", "probes": 2, "steps": 16},
    }
    return _results(innaudit.audit(model, data="uniform", config=cfg), "logdet")


def test_an_exact_log_det_is_not_failed_by_a_biased_estimate() -> None:
    """The estimate lies far above the exact log|det J| of an ill-conditioned map (its bias is
    one-sided); the model's exact log-det is then within the bound, warned by the raw gap only."""
    values = log_spaced(128, 1e-3, 10.0)
    audit = _estimated_logdet(linear_model(values))
    truth = float(values.log().sum())
    for r in audit.results:
        assert r.metrics["reference"] == "estimated"
        assert min(r.series["values"]["log_abs_det_j"]) > truth + 0.1 * abs(truth)  # the premise: biased high
        assert r.metrics["raw_rel_error"]["max"] > 0.1 and r.metrics["rel_error"]["max"] == 0.0
        assert r.status is Status.WARN
        assert {c.metric: c.status for c in r.checks}["raw_rel_error.max"] is Status.WARN


def test_a_log_det_above_the_estimates_bound_still_fails() -> None:
    """A model that over-reports by 600 nats (twice |log|det J||) is above ``ref + 3 stderr``:
    proven wrong, FAIL."""
    audit = _estimated_logdet(linear_model(log_spaced(128, 1e-3, 10.0)), shift=600.0)
    for r in audit.results:
        assert r.status is Status.FAIL
        excess = r.metrics["error"]["max"]
        assert 0 < excess <= 600.0 and r.metrics["raw_error"]["max"] >= excess
