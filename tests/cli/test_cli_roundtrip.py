"""The factory path end to end: ``innaudit run tests/fixtures_models.py:NAME --data ... --ood ...``.

Known answers: the exact linear flow passes, the wrong inverse fails on the relative error, the
half-NaN inverse fails with a non-finite share of exactly 0.5; the report's error statistics
match a hand computation with the model itself; one seed gives one set of metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.fixtures_models import DIM, ExactLinear, WrongLinear
from tests.helpers import FIXTURE_MODELS, CliResult, read_report

N_DATA, N_FAR = 400, 300  # below the default batch size (500): one batch, as in the hand check


@pytest.fixture
def data_files(tmp_path: Path) -> tuple[Path, Path]:
    """``x.npy``: uniform data in [0, 1]; ``y.npy``: the same shape, 100 times farther out."""
    rng = np.random.default_rng(1234)
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, rng.random((N_DATA, DIM), dtype=np.float32))
    np.save(y, (100.0 * rng.standard_normal((N_FAR, DIM))).astype(np.float32))
    return x, y


def _run(run_cli: Any, name: str, files: tuple[Path, Path], out: Path, *extra: object) -> tuple[CliResult, dict]:
    x, y = files
    result = run_cli("run", f"{FIXTURE_MODELS}:{name}", "--data", x, "--ood", f"far={y}", "-o", f"json={out}", *extra)
    assert out.is_file(), f"no JSON report; stderr: {result.stderr}"
    return result, read_report(out)


def _roundtrip(report: dict) -> dict[str, dict]:
    (audit,) = [a for a in report["audits"] if a["id"] == "roundtrip"]
    return {r["dataset"]: r for r in audit["results"]}


def _hand_errors(model: torch.nn.Module, path: Path) -> np.ndarray:
    """``||x - F^-1(F(x))||_2`` per sample, with the model called directly on the whole file."""
    x = torch.from_numpy(np.load(path))
    with torch.no_grad():
        back = model.inverse(model(x)[0])
    diff = (back.numpy().astype(np.float64) - x.numpy().astype(np.float64)).reshape(len(x), -1)
    return np.linalg.norm(diff, axis=1)


def _without_durations(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_durations(v) for k, v in value.items() if k != "duration_s"}
    if isinstance(value, list):
        return [_without_durations(v) for v in value]
    return value


def test_exact_model_passes_with_full_roundtrip_metrics(run_cli, data_files, tmp_path) -> None:
    result, report = _run(run_cli, "exact", data_files, tmp_path / "r.json")
    assert result.code == 0, result.stderr
    assert report["summary"]["status"] == "pass" and report["summary"]["exit_code"] == 0
    sets = _roundtrip(report)
    assert set(sets) == {"x", "far"}
    for name, n in (("x", N_DATA), ("far", N_FAR)):
        metrics = sets[name]["metrics"]
        assert metrics["n"] == n
        assert metrics["nonfinite_fraction"] == 0.0
        err = metrics["error_l2"]
        assert set(err) >= {"median", "p99", "max", "mean"}
        assert all(isinstance(err[k], float) for k in ("median", "p99", "max", "mean"))
        assert 0.0 <= err["median"] <= err["p99"] <= err["max"]
        assert metrics["rel_error_l2"]["max"] < 1e-5  # float32 rounding, not a broken inverse
        assert sets[name]["status"] == "pass"


@pytest.mark.parametrize("name, cls", [("exact", ExactLinear), ("wrong", WrongLinear)])
def test_report_matches_hand_computed_errors(run_cli, data_files, tmp_path, name, cls) -> None:
    _, report = _run(run_cli, name, data_files, tmp_path / "r.json", "--audit", "roundtrip")
    sets = _roundtrip(report)
    for set_name, path in zip(("x", "far"), data_files, strict=False):
        expected = _hand_errors(cls(), path)
        got = sets[set_name]["metrics"]["error_l2"]
        assert got["median"] == pytest.approx(float(np.median(expected)), rel=1e-6)
        assert got["max"] == pytest.approx(float(expected.max()), rel=1e-6)
        assert got["mean"] == pytest.approx(float(expected.mean()), rel=1e-6)


def test_wrong_inverse_fails_on_relative_error(run_cli, data_files, tmp_path) -> None:
    result, report = _run(run_cli, "wrong", data_files, tmp_path / "r.json")
    assert result.code == 1, result.stderr
    assert report["summary"]["status"] == "fail" and report["summary"]["exit_code"] == 1
    for entry in _roundtrip(report).values():
        (check,) = [c for c in entry["checks"] if c["metric"] == "rel_error_l2.max"]
        assert entry["metrics"]["nonfinite_fraction"] == 0.0
        assert entry["metrics"]["rel_error_l2"]["max"] > check["fail"]
        assert check["status"] == "fail" and entry["status"] == "fail"


def test_nan_inverse_fails_with_half_nonfinite(run_cli, data_files, tmp_path) -> None:
    result, report = _run(run_cli, "nan_half", data_files, tmp_path / "r.json")
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    for entry in _roundtrip(report).values():
        metrics = entry["metrics"]
        assert metrics["nonfinite_fraction"] == 0.5
        assert metrics["nan_fraction"] == 0.5
        assert metrics["latent_nonfinite_fraction"] == 0.0  # forward is fine; the inverse breaks
        assert isinstance(metrics["error_l2"]["max"], float)  # statistics over the finite half
        assert entry["status"] == "fail"


def test_same_seed_gives_identical_metrics(run_cli, data_files, tmp_path) -> None:
    x, _ = data_files
    common = ("--data", x, "--ood", "uniform", "--ood", "gaussian", "--samples", "1000")
    reports = []
    for i, seed in enumerate((7, 7, 8)):
        out = tmp_path / f"r{i}.json"
        result = run_cli("run", f"{FIXTURE_MODELS}:exact", *common, "--seed", seed, "-o", f"json={out}")
        assert result.code == 0, result.stderr
        reports.append(_without_durations(read_report(out)["audits"]))
    assert reports[0] == reports[1]
    assert reports[0] != reports[2]  # the seed does reach the random sets
