"""The ``precision`` audit: known answers on a linear map with condition number 1e3, a map that
leaves float16's range, a model with ops float16 cannot run, and the required-precision gate."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import innaudit
from innaudit.audits import REGISTRY, metric_table
from innaudit.audits.precision import LADDER, PRECISIONS, Precision, _unsupported
from innaudit.core.domain import DataDomain
from innaudit.core.metrics import declared
from innaudit.core.results import Status, leaves
from innaudit.loading.adapt import adapt_module
from innaudit.render import plots
from tests.audits.precision_models import COND, DIM, BigScale, ConditionedLinear, FixedPoint, WithSlogdet
from tests.helpers import read_report

MODELS = Path(__file__).resolve().parent / "precision_models.py"


def _audit(module: torch.nn.Module, dim: int, low: float = 0.0, high: float = 1.0, **options: Any) -> Any:
    model = adapt_module(module, DataDomain(shape=(dim,), low=low, high=high), {"test": "precision"})
    cfg = {"audits": ["precision"], "samples": 128, "precision": {"spectrum_samples": 2, **options}}
    report = innaudit.audit(model, data="uniform", ood=["gaussian"], config=cfg)
    return report.audits[0]


@pytest.fixture(scope="module")
def linear() -> Any:
    return _audit(ConditionedLinear(), DIM)


def _set(audit: Any, name: str) -> Any:
    return next(r for r in audit.results if r.dataset == name)


def test_condition_1e3_is_invertible_in_float32_and_not_in_16_bits(linear: Any) -> None:
    assert [r.dataset for r in linear.results] == ["uniform", "gaussian", "prior@T=1"]
    for result in linear.results:
        m = result.metrics
        assert m["cond"]["median"] == pytest.approx(COND, rel=1e-3)
        assert m["float64"]["rel_error_l2"]["max"] < 1e-4  # the float32-stored weights' own error
        assert 1e-6 < m["float32"]["rel_error_l2"]["max"] < 1e-4  # ~1e-5
        assert 1e-2 < m["float16"]["rel_error_l2"]["max"] < 0.2  # ~0.07
        assert 0.2 < m["bfloat16"]["rel_error_l2"]["max"] < 2.0  # ~0.7
        assert m["float16"]["nonfinite_fraction"] == 0 and m["bfloat16"]["nonfinite_fraction"] == 0
        assert [m[p]["invertible"] for p in LADDER] == [1, 1, 0, 0]
        assert m["lowest_invertible"] == LADDER.index("float32") == 1
        assert "lowest invertible precision: float32" in result.message
        assert result.status is Status.PASS  # the default gate is float32


def test_prediction_is_cond_times_unit_roundoff_and_bounds_the_measured_error(linear: Any) -> None:
    m = _set(linear, "uniform").metrics
    for name, u in (("float32", 2.0**-24), ("float16", 2.0**-11), ("bfloat16", 2.0**-8)):
        assert m[name]["unit_roundoff"] == u
        predicted = m[name]["predicted_rel_error"]["median"]
        assert predicted == pytest.approx(COND * u, rel=1e-3)
        assert predicted / 100 < m[name]["rel_error_l2"]["max"] < predicted
    assert "float16: conditioning" in _set(linear, "uniform").message


def test_autocast_runs_on_cpu_and_matches_the_cast_for_a_linear_map(linear: Any) -> None:
    m = _set(linear, "uniform").metrics
    for dtype in ("float16", "bfloat16"):
        auto, cast = m[f"autocast_{dtype}"]["rel_error_l2"]["max"], m[dtype]["rel_error_l2"]["max"]
        assert auto == pytest.approx(cast, rel=0.1)


def test_every_metric_is_declared_and_the_plot_draws(linear: Any) -> None:
    table = metric_table()
    for result in linear.results:
        undeclared = [
            p
            for p, v in leaves(result.metrics)
            if isinstance(v, (int, float)) and declared(table, "precision", p) is None
        ]
        assert undeclared == []
        series = result.series["precisions"]
        assert series["name"] == [p.name for p in PRECISIONS]
        svg = plots.plot_series("precisions", series, "precision · uniform", "t")
        assert svg.startswith("<svg") and "rel error max" in svg


def test_required_bfloat16_fails_the_gate_and_float32_passes() -> None:
    strict = _audit(ConditionedLinear(), DIM, required="bfloat16", prior=False)
    assert strict.status is Status.FAIL
    for result in strict.results:
        assert result.metrics["required"]["rel_error_l2"]["max"] > 1e-2
        assert [c.metric for c in result.checks if c.status is Status.FAIL] == ["required.rel_error_l2.max"]
    loose = _audit(BigScale(), 2, high=6.0, required="bfloat16", prior=False)  # condition number 1
    assert loose.status is Status.PASS
    assert all(r.metrics["required"]["rel_error_l2"]["max"] < 1e-2 for r in loose.results)


def test_float16_overflow_is_range_and_bfloat16_survives() -> None:
    audit = _audit(BigScale(), 2, high=10.0, prior=False)
    result = _set(audit, "uniform")
    m = result.metrics
    assert 0.45 < m["float16"]["nonfinite_fraction"] < 0.7  # 1 - 0.655^2 = 0.57 have 1e4 x > 65504
    assert m["float16"]["latent_nonfinite_fraction"] == m["float16"]["nonfinite_fraction"]
    assert m["bfloat16"]["invertible"] == 1 and m["float16"]["invertible"] == 0
    assert m["lowest_invertible"] == 1
    assert "range: overflow of torch.float16 (max 65504)" in result.message
    assert "invertible again at bfloat16" in result.message


def test_ops_without_half_kernels_are_skipped_with_the_reason() -> None:
    audit = _audit(WithSlogdet(), DIM, prior=False)
    result = _set(audit, "uniform")
    assert "float16" not in result.metrics and "bfloat16" not in result.metrics
    assert "float16 skipped (raised RuntimeError: linalg.slogdet" in result.message
    assert result.metrics["autocast_bfloat16"]["nonfinite_fraction"] == 0.0
    assert result.status is Status.PASS
    unmeasured = _audit(WithSlogdet(), DIM, required="float16", prior=False)
    assert unmeasured.status is Status.FAIL  # a required precision that could not run cannot pass
    assert math.isnan(_set(unmeasured, "uniform").metrics["required"]["nonfinite_fraction"])
    assert "the required precision float16 was not measured" in _set(unmeasured, "uniform").message


def test_an_iterative_inverse_is_not_run_below_its_tolerance_unless_forced() -> None:
    result = _set(_audit(FixedPoint(), 2, prior=False), "uniform")
    assert [p for p in LADDER if p in result.metrics] == ["float64", "float32"]
    assert result.metrics["lowest_invertible"] == 1
    assert (
        "float16, bfloat16, autocast_float16, autocast_bfloat16 skipped (the iterative inverse's "
        "tolerance 1e-06 is below the unit roundoff"
    ) in result.message
    forced = _set(_audit(FixedPoint(), 2, prior=False, force_iterative=True), "uniform").metrics
    assert forced["float16"]["rel_error_l2"]["max"] < 1e-2 and forced["float16"]["invertible"] == 1


def test_a_device_without_autocast_is_a_skip_reason() -> None:
    reason = _unsupported(Precision("autocast_bfloat16", torch.bfloat16, True), torch.device("meta"))
    assert reason is not None and "meta" in reason
    assert _unsupported(Precision("bfloat16", torch.bfloat16), torch.device("cpu")) is None


def test_unknown_required_precision_is_refused_when_the_config_is_read() -> None:
    with pytest.raises(
        innaudit.ConfigError, match=r"precision\.required is 'half'; expected one of: autocast_bfloat16"
    ):
        _audit(ConditionedLinear(), DIM, required="half")


def test_cli_require_precision(run_cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = (
        "run",
        f"{MODELS}:conditioned_linear",
        "--data",
        "uniform",
        "--ood",
        "gaussian",
        "--audit",
        "precision",
        "--samples",
        "32",
        "-o",
        f"json={out}",
        "-q",
    )
    assert run_cli(*args).code == 0
    assert run_cli(*args, "--require-precision", "bfloat16").code == 1
    report = read_report(out)
    assert report["run"]["config"]["settings"]["precision"]["options"]["required"] == "bfloat16"
    assert run_cli(*args, "--require-precision", "fp8").code == 2


def test_cli_choices_are_the_audits_precisions() -> None:
    from innaudit.cli.run import run

    option = next(p for p in run.params if p.name == "require_precision")
    assert list(option.type.choices) == [p.name for p in PRECISIONS]  # type: ignore[attr-defined]
    assert REGISTRY["precision"].options["required"] == "float32"
