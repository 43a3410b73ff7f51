"""Issue 29's six cases, each on a model whose answer is known by hand (``fidelity_models``).

1. float64 finite is not float64 invertible: the float64 verdict rests on the float64 error.
2. "Not invertible" cites the metric that failed (a large finite error; a singular Jacobian).
3. Every value leaving a model is detached: outputs and ``scales()`` that require grad.
4. A log-det of the wrong shape: a one-line error naming both shapes; the round trip still runs.
5. A failed reference (LAPACK) is innaudit's error, and the same seed gives the same report.
6. A Jacobian singular on every sample fails the spectrum audit, with its own diagnosis line.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from innaudit import audit
from innaudit.audits import REGISTRY
from innaudit.core.results import Status
from innaudit.verdict.diagnosis import Kind, diagnose
from tests.helpers import invoke_cli, invoke_subprocess, read_report, subprocess_env

from .fidelity_models import GradOutputs, Pooling, WrongFar, known_log_det

MODELS = Path(__file__).resolve().parent / "fidelity_models.py"


def _uniform(n: int, dim: int, high: float, seed: int = 0) -> torch.Tensor:
    return high * torch.rand(n, dim, generator=torch.Generator().manual_seed(seed))


def _statements(report, kind=None):
    return [s for s in diagnose(report).statements if kind is None or s.kind is kind]


# -- 1. finite is not invertible -------------------------------------------------------------
def test_float64_finite_but_wrong_is_not_called_precision_loss() -> None:
    far = _uniform(500, 4, 50.0)
    report = audit(WrongFar(), data=_uniform(200, 4, 1.0), ood={"far": far}, audits=["roundtrip"], float64_check=True)
    result = report.result("roundtrip", "far")
    share = float((far > 34.03).any(1).float().mean())  # c x overflows float32 beyond 3.4e38 / 1e37
    assert result.metrics["nonfinite_fraction"] == pytest.approx(share, abs=0.01) and share > 0.1
    assert result.metrics["float64"]["nonfinite_fraction"] == 0.0
    assert result.metrics["float64"]["rel_error_l2"]["max"] == pytest.approx(0.35, rel=0.05)
    (f64,) = [s for s in _statements(report) if s.rule == "float64"]
    assert "finite but wrong (max relative error 0.35" in f64.text and "precision is lost" not in f64.text
    assert "finite but wrong" in result.message and "computable with more precision" not in result.message
    data = report.result("roundtrip", "data")
    assert data.status is Status.PASS and "float64" not in [s.rule for s in _statements(report) if "data" in s.text]


# -- 2. the evidence that failed ---------------------------------------------------------------
def test_not_invertible_cites_the_finite_error_that_failed_and_the_singular_jacobian() -> None:
    x = _uniform(256, 4, 1.0)
    report = audit(Pooling(), data=x, ood=[], audits=["roundtrip", "spectrum"])
    result = report.result("roundtrip")
    expected = float(((x[:, 0] - x[:, 1]).abs() / math.sqrt(2) / x.norm(dim=1)).max())
    assert result.metrics["nonfinite_fraction"] == 0.0
    assert result.metrics["rel_error_l2"]["max"] == pytest.approx(expected, rel=1e-4)
    (line,) = [s for s in _statements(report, Kind.NOT_INVERTIBLE) if s.rule == "roundtrip-in-distribution"]
    cited = {(e.audit, e.metric) for e in line.evidence}
    assert ("roundtrip", "rel_error_l2.max") in cited and ("roundtrip", "nonfinite_fraction") not in cited
    assert ("spectrum", "singular_fraction") in cited and "non-finite" not in line.text
    assert f"max relative round-trip error {expected:.3g} on data (limit 0.01)" in line.text
    assert "J_F is singular to the model's precision on 100.0 % of 64 samples of data" in line.text


# -- 3. detached at the boundary ---------------------------------------------------------------
def test_every_audit_runs_on_a_model_whose_outputs_and_scales_require_grad() -> None:
    x = _uniform(64, 4, 1.0)
    with torch.no_grad():
        z, _ = GradOutputs()(x)
    assert z.requires_grad  # the model hands out tensors that require grad, even under no_grad
    report = audit(GradOutputs(), data=x, samples=32, seed=0)
    ran = {a.id: a for a in report.audits}
    assert set(ran) == set(REGISTRY)
    for a in report.audits:
        assert a.status is not Status.ERROR, (a.id, a.message)
    layers = report.result("layers", "data")
    assert layers.metrics["scale_min"] == pytest.approx(0.5)  # min |g| over both blocks' scales
    assert report.result("roundtrip", "data").metrics["rel_error_l2"]["max"] < 1e-6


# -- 4. the log-det's shape --------------------------------------------------------------------
def test_a_per_element_log_det_is_refused_by_shape_and_the_round_trip_still_runs() -> None:
    result = invoke_cli(
        "run",
        f"{MODELS}:per_element_log_det",
        "--audit",
        "roundtrip",
        "--audit",
        "logdet",
        "--samples",
        "16",
        "-o",
        "json",
    )
    assert result.code == 2, result.stderr  # no trustworthy verdict: the log-det cannot be read
    assert "Traceback" not in result.stdout + result.stderr
    report = json.loads(result.stdout)
    audits = {a["id"]: a for a in report["audits"]}
    assert audits["roundtrip"]["status"] == "pass"
    assert audits["roundtrip"]["results"][0]["metrics"]["rel_error_l2"]["max"] < 1e-6
    logdet = audits["logdet"]
    assert logdet["status"] == "error" and "\n" not in logdet["message"]
    assert "log-det has shape (1, 2, 4, 4)" in logdet["message"] and "expected (1,)" in logdet["message"]
    assert "tuple indices" not in logdet["message"] and "reports no log-determinant" not in logdet["message"]


# -- 5. a failed reference, and the same report for the same seed ------------------------------
LU = """
import torch
torch.set_num_threads(2)
from innaudit.linalg import log_abs_det
a = torch.randn(2, 768, 768, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
got = log_abs_det(a)
want = torch.stack([torch.linalg.slogdet(m)[1] for m in a])
assert torch.equal(got, want), (got, want)
print("ok")
"""


def test_the_reference_log_det_survives_torch_s_threaded_batched_lu() -> None:
    """torch 2.13's batched CPU LU with two threads: "Intel oneMKL ERROR ... DLASWP" and a hang
    (or garbage) for 768 x 768 matrices; the reference takes one matrix at a time."""
    proc = subprocess.run(
        [sys.executable, "-c", LU],
        capture_output=True,
        text=True,
        env=subprocess_env({"OMP_NUM_THREADS": "2"}),
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout[-500:] + proc.stderr[-500:]
    assert "oneMKL ERROR" not in proc.stdout + proc.stderr


def test_a_reference_that_fails_is_innaudit_s_error_not_the_model_s(monkeypatch: pytest.MonkeyPatch) -> None:
    from innaudit.audits import logdet as logdet_module
    from innaudit.linalg import exact

    def broken(matrix: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("LAPACK failed")

    monkeypatch.setattr(exact.torch.linalg, "slogdet", broken)
    x = _uniform(8, 4, 1.0)
    recovered = audit(GradOutputs(), data=x, ood=[], audits=["logdet"])  # LU fails: the SVD gives it
    assert recovered.result("logdet").status is Status.PASS
    assert recovered.result("logdet").metrics["reference_failed_fraction"] == 0.0
    monkeypatch.setattr(exact.torch.linalg, "svdvals", broken)
    report = audit(GradOutputs(), data=x, ood=[], audits=["logdet"])
    result = report.result("logdet")
    assert result.metrics["reference_failed_fraction"] == 1.0 and result.metrics["nonfinite_fraction"] == 0.0
    assert result.status is Status.WARN and "innaudit's failure, not the model's" in result.message
    (line,) = [s for s in _statements(report) if any(e.metric == "reference_failed_fraction" for e in s.evidence)]
    assert line.kind is Kind.CAUTION and "innaudit could not compute" in line.text
    assert logdet_module.LogDet.thresholds["reference_failed_fraction"].fail is None  # never the model's FAIL


def _stable(report: dict) -> dict:
    """The report without what a clock decides (durations, start time, the plan's timings)."""
    run = {k: v for k, v in report["run"].items() if k not in ("started_at", "duration_s", "plan")}
    audits = [{k: v for k, v in a.items() if k != "duration_s"} for a in report["audits"]]
    return {**report, "run": run, "audits": audits}


@pytest.mark.slow
def test_the_squeeze_conv_case_gives_the_same_report_every_time(tmp_path: Path) -> None:
    """The issue's 1x1-convolution case, three times with two threads: the same report, the
    log-det equal to the known 64 * sum(log s), no MKL error."""
    reports, outputs = [], []
    for i in range(3):
        out = tmp_path / f"r{i}.json"
        result = invoke_subprocess(
            "run", f"{MODELS}:squeeze_conv", "--audit", "spectrum", "--audit", "roundtrip", "--audit", "logdet",
            "--samples", "4", "--ood", "uniform", "--seed", "0", "-o", f"json={out}", "-o", "console",
            env={"OMP_NUM_THREADS": "2"}, timeout=400,
        )  # fmt: skip
        assert result.code == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "oneMKL ERROR" not in result.stdout + result.stderr
        reports.append(_stable(read_report(out)))
        outputs.append(result.stdout)
    assert reports[0] == reports[1] == reports[2] and outputs[0] == outputs[1] == outputs[2]
    (logdet,) = [a for a in reports[0]["audits"] if a["id"] == "logdet"]
    values = logdet["results"][0]["series"]["values"]["log_abs_det_j"]
    assert logdet["results"][0]["metrics"]["reference"] == "exact"
    assert np.allclose(values, known_log_det(), rtol=1e-5)


# -- 6. a singular Jacobian fails spectrum -----------------------------------------------------
def test_a_jacobian_singular_on_every_sample_fails_the_spectrum_audit_alone() -> None:
    result = invoke_cli("run", f"{MODELS}:pooling", "--audit", "spectrum", "--ood", "uniform", "-o", "json")
    assert result.code == 1, result.stderr
    report = json.loads(result.stdout)
    (res,) = report["audits"][0]["results"]
    assert res["metrics"]["singular_fraction"] == 1.0 and res["status"] == "fail"
    assert res["metrics"]["forward"]["sv_min"]["max"] == 0.0  # rank 3 of 4: sigma_min 0 everywhere
    lines = [d for d in report["diagnosis"] if d["kind"] == "not-invertible"]
    assert any(
        "Jacobian J_F is singular to the model's precision on uniform 100.0 %" in d["text"]
        and {"audit": "spectrum", "set": "uniform", "metric": "singular_fraction", "value": 1.0} in d["evidence"]
        for d in lines
    ), lines


def test_a_jacobian_singular_to_float32_but_not_to_float64_also_fails() -> None:
    """``sigma_min / sigma_max = 1e-9``: resolved by the float64 SVD (not reported as 0), yet
    below float32's resolution (eps 1.2e-7): singular to the model's precision."""
    from .known_models import scaling_model

    report = audit(scaling_model([1.0, 1e-9, 1.0]), data=_uniform(32, 3, 1.0), ood=[], audits=["spectrum"])
    result = report.result("spectrum")
    assert result.metrics["forward"]["sv_min"]["min"] == pytest.approx(1e-9, rel=1e-3)
    assert result.metrics["singular_fraction"] == 1.0 and result.status is Status.FAIL
    fine = audit(scaling_model([1.0, 1e-5, 1.0]), data=_uniform(32, 3, 1.0), ood=[], audits=["spectrum"])
    assert fine.result("spectrum").metrics["singular_fraction"] == 0.0  # condition 1e5: only warns
    assert fine.result("spectrum").status is Status.WARN
