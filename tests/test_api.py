"""The Python API: ``innaudit.audit`` and ``innaudit.assert_invertible`` with objects, tensors,
arrays and mappings, the Report's notebook conveniences, and the exported names."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import innaudit
from innaudit.audits import specs
from innaudit.config.settings import Config, parse_config
from tests.helpers import REPO, subprocess_env

from .api_models import Squash
from .fixtures_models import ExactLinear


def _inside(n: int = 200, dim: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, dim, generator=torch.Generator().manual_seed(seed))


def test_audit_takes_a_module_and_a_tensor() -> None:
    report = innaudit.audit(ExactLinear(), data=_inside(300), audits=["roundtrip"], samples=200)
    result = report.result("roundtrip", "data")
    assert report.status is innaudit.Status.PASS and report.exit_code is innaudit.ExitCode.OK
    assert result.metrics["n"] == 200 and result.metrics["nonfinite_fraction"] == 0.0
    assert result.metrics["rel_error_l2"]["max"] < 1e-5
    assert [a.id for a in report.audits] == ["roundtrip"]


def test_data_as_array_spec_and_mapping_give_the_same_numbers() -> None:
    x = _inside(120)
    common = {"audits": ["roundtrip"], "ood": {"far": 1e8 * (1 + _inside(50, seed=1))}}
    by_tensor = innaudit.audit(Squash(), data=x, **common)
    by_array = innaudit.audit(Squash(), data=x.numpy(), **common)
    by_mapping = innaudit.audit(Squash(), data={"mine": x}, **common)

    def numbers(report: innaudit.Report) -> list[object]:
        return [r["metrics"] for r in json.loads(report.to_json())["audits"][0]["results"]]

    assert numbers(by_array) == numbers(by_tensor)
    assert numbers(by_mapping) == numbers(by_tensor)
    assert by_mapping.result("roundtrip", "mine").status is innaudit.Status.PASS
    assert by_tensor.result("roundtrip", "far").metrics["nonfinite_fraction"] == 1.0


def test_a_spec_string_and_config_objects_work() -> None:
    for config in (Config(samples=50), parse_config({"samples": 50}, specs())):
        report = innaudit.audit(
            ExactLinear(), data="uniform", ood=["gaussian", "signs=rademacher"], audits=["roundtrip"], config=config
        )
        assert [r.dataset for r in report.audits[0].results] == ["uniform", "gaussian", "signs"]
        assert all(r.metrics["n"] == 50 for r in report.audits[0].results)
    # keyword options win over the config mapping
    report = innaudit.audit(
        ExactLinear(), data="uniform", ood=[], audits=["roundtrip"], config={"samples": 50}, samples=30
    )
    assert report.result("roundtrip", "uniform").metrics["n"] == 30


def test_a_budget_plans_the_run_and_is_recorded() -> None:
    for config in (None, Config()):
        report = innaudit.audit(
            ExactLinear(), data=_inside(100), ood=[], audits=["roundtrip"], budget="30s", config=config
        )
        assert report.run["config"]["budget"] == 30.0 and "plan" in report.run
    with pytest.raises(innaudit.ConfigError, match="not a duration"):
        innaudit.audit(ExactLinear(), data=_inside(), budget="soon")


def test_library_objects_are_adapted_with_no_glue() -> None:
    zuko = pytest.importorskip("zuko")
    torch.manual_seed(0)
    flow = zuko.flows.RealNVP(3, transforms=2, hidden_features=(8,))
    report = innaudit.audit(flow, data=torch.randn(64, 3), ood=[], audits=["roundtrip"])
    assert report.target["loader"] == "python" and report.target.get("library") == "zuko"
    assert report.result("roundtrip").metrics["n"] == 64


def test_assert_invertible_passes_on_an_exact_map_and_names_the_exploding_set() -> None:
    x = _inside(100)
    innaudit.assert_invertible(Squash(), data=x, ood={"near": 2 * x}, audits=["roundtrip"])
    with pytest.raises(AssertionError) as caught:
        innaudit.assert_invertible(Squash(), data=x, ood={"near": 2 * x, "far": 1e8 * (1 + x)}, audits=["roundtrip"])
    message = str(caught.value)
    assert "FAIL roundtrip[far] nonfinite_fraction=1 > 0" in message
    assert "near" not in message and "FAIL (exit 1)" in message


FAILING_TEST = """
import torch
import innaudit
from tests.api_models import Squash


def test_the_flow_is_invertible():
    x = torch.rand(100, 4, generator=torch.Generator().manual_seed(0))
    innaudit.assert_invertible(Squash(), data=x, ood={"far": 1e8 * (1 + x)}, audits=["roundtrip"])
"""


def test_a_failing_assert_invertible_shows_the_caller_not_innaudit_s_frame(tmp_path) -> None:
    """pytest prints each frame's arguments: innaudit's own frame would dump the model and the
    data tensors. The report shows the caller's line and the findings only."""
    path = tmp_path / "test_user.py"
    path.write_text(FAILING_TEST)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(path), "-p", "no:cacheprovider", "-p", "no:xdist", "-q"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=REPO,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "FAIL roundtrip[far] nonfinite_fraction=1 > 0" in out and "innaudit.assert_invertible(Squash()" in out
    assert "def assert_invertible" not in out and "tensor([" not in out and "innaudit/api.py" not in out


def test_bad_inputs_are_innaudit_errors_with_one_line() -> None:
    with pytest.raises(innaudit.LoadError, match=r"expected a torch\.nn\.Module"):
        innaudit.audit(object(), data=_inside())
    with pytest.raises(innaudit.DataError, match="expected 4 values per sample"):
        innaudit.audit(ExactLinear(), data=torch.rand(10, 5))
    with pytest.raises(innaudit.DataError, match="holds no samples"):
        innaudit.audit(ExactLinear(), data=torch.rand(0, 4))
    with pytest.raises(innaudit.DataError, match="complex"):
        innaudit.audit(ExactLinear(), data=np.zeros((3, 4), dtype=complex))
    with pytest.raises(innaudit.UsageError, match="one in-distribution set"):
        innaudit.audit(ExactLinear(), data={"a": _inside(), "b": _inside()})
    with pytest.raises(innaudit.ConfigError, match="did you mean 'roundtrip'"):
        innaudit.audit(ExactLinear(), data=_inside(), audits=["roundtrp"])


def test_report_conveniences(tmp_path) -> None:
    report = innaudit.audit(Squash(), data=_inside(50), ood={"far": 1e8 * (1 + _inside(50))}, audits=["roundtrip"])
    text = repr(report)
    assert text.startswith("<Report FAIL exit=1") and len(text) < 200
    assert json.loads(report.to_json())["summary"]["status"] == "fail"
    assert report.summary().splitlines()[1].strip().startswith("FAIL roundtrip[far]")
    saved = report.save(tmp_path / "r.json")
    assert json.loads(saved.read_text())["audits"][0]["id"] == "roundtrip"
    assert report.save(tmp_path / "r.html").read_text() == report._repr_html_()
    with pytest.raises(ValueError, match="cannot tell the format"):
        report.save(tmp_path / "r.bin")
    with pytest.raises(KeyError, match="its sets: \\['data', 'far'\\]"):
        report.result("roundtrip", "nope")


PUBLIC = [
    "ConfigError",
    "DataError",
    "ExitCode",
    "InnauditError",
    "InvertibleModel",
    "LoadError",
    "Report",
    "Status",
    "UsageError",
    "__version__",
    "assert_invertible",
    "audit",
    "load_model",
    "repair",
    "save_checkpoint",
]
"""The public API, pinned: a name added or removed is a decision, made here too."""


def test_the_public_names_are_exactly_the_pinned_ones_and_each_is_what_it_names() -> None:
    import importlib
    import importlib.metadata

    from innaudit.core import errors, results

    assert innaudit.__all__ == PUBLIC
    for name in (n for n in PUBLIC if n != "__version__"):
        home = importlib.import_module(innaudit._LAZY[name])
        assert getattr(innaudit, name) is getattr(home, name), name
    assert innaudit.__version__ == importlib.metadata.version("innaudit")
    assert innaudit.Status is results.Status and innaudit.ExitCode is results.ExitCode
    assert all(
        issubclass(getattr(innaudit, n), errors.InnauditError) for n in ("ConfigError", "DataError", "LoadError")
    )
    assert callable(innaudit.audit) and callable(innaudit.repair) and callable(innaudit.assert_invertible)
    with pytest.raises(AttributeError, match="has no attribute 'auditt'"):
        innaudit.auditt  # noqa: B018


def test_importing_and_rendering_leave_the_matplotlib_backend_alone(tmp_path) -> None:
    code = (
        "import matplotlib; matplotlib.use('pdf'); import torch, innaudit\n"
        "from tests.api_models import Squash\n"
        "r = innaudit.audit(Squash(), data=torch.rand(20, 4), ood=[], audits=['roundtrip'])\n"
        "assert 'svg' in r._repr_html_()\n"
        "print(matplotlib.get_backend())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=subprocess_env(),
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == "pdf"
