"""Side by side with a model written in the paper's style: innaudit, given the model through a
factory file, measures the same round-trip errors and Jacobian singular values as the model's
own code (the reference code's protocol: ``decode(encode(x))`` per sample, and the SVD of the
full Jacobian built from the layers' own forward passes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.audits.paper_style import DIM, FlowNet, trained_flow
from tests.helpers import invoke_cli

FACTORY = Path(__file__).parent / "paper_style.py"


def _own_errors(flow: FlowNet, x: torch.Tensor) -> np.ndarray:
    """The reference code's reconstruction error: ``||x - decode(encode(x))||_2`` per sample."""
    with torch.no_grad():
        z, _ = flow.encode(x, torch.zeros(len(x)))
        back = flow.decode(z)
    return (back - x).reshape(len(x), -1).double().norm(dim=1).numpy()


def _own_singular_values(flow: FlowNet, x: torch.Tensor) -> np.ndarray:
    """The reference code's Jacobian SVD of one sample (full Jacobian, float64 SVD)."""
    jac = torch.autograd.functional.jacobian(lambda v: flow.encode(v[None], torch.zeros(1))[0][0], x)
    return torch.linalg.svdvals(jac.double()).numpy()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, np.ndarray]:
    folder = tmp_path_factory.mktemp("paper")
    x = np.random.default_rng(3).random((24, DIM), dtype=np.float32) * 3 - 1  # partly off the data
    np.save(folder / "x.npy", x)
    out = folder / "r.json"
    res = invoke_cli(
        "run",
        f"{FACTORY}:build",
        "--ood",
        f"x={folder / 'x.npy'}",  # an OOD set: partly outside the declared range [0, 1], used as given
        "--ood",
        "uniform",
        "--audit",
        "roundtrip",
        "--audit",
        "spectrum",
        "--audit",
        "layers",
        "--samples",
        24,
        "--config",
        _config(folder),
        "-o",
        f"json={out}",
    )
    assert res.code in (0, 1), res.stderr
    return json.loads(out.read_text()), x


def _config(folder: Path) -> Path:
    path = folder / "c.yaml"
    path.write_text("spectrum: {samples: 24, method: exact}\nlayers: {samples: 24, worst: 2}\n")
    return path


def _metrics(data: dict, audit: str) -> dict:
    found = next(a for a in data["audits"] if a["id"] == audit)
    return next(r for r in found["results"] if r["dataset"] == "x")


def test_round_trip_errors_equal_the_models_own(report: tuple[dict, np.ndarray]) -> None:
    data, x = report
    own = _own_errors(trained_flow(), torch.from_numpy(x))
    m = _metrics(data, "roundtrip")["metrics"]
    assert own.max() > 1e-7  # the comparison is not between two zeros
    assert m["error_l2"]["max"] == pytest.approx(float(own.max()), rel=1e-12)
    assert m["error_l2"]["median"] == pytest.approx(float(np.median(own)), rel=1e-12)


def test_jacobian_singular_values_equal_the_models_own(report: tuple[dict, np.ndarray]) -> None:
    data, x = report
    result = _metrics(data, "spectrum")
    flow = trained_flow()
    own = np.stack([_own_singular_values(flow, torch.from_numpy(v)) for v in x])
    m = result["metrics"]
    assert m["forward"]["sv_max"]["max"] == pytest.approx(own[:, 0].max(), rel=1e-5)
    values = result["series"]["values"]  # 5 significant digits
    kappa = own[:, 0] / own[:, -1]
    well = kappa < 1e4  # float32 Jacobians agree to rounding (near-singular ones to kappa * u)
    assert well.sum() >= 20
    np.testing.assert_allclose(values["forward.sv_max"], own[:, 0], rtol=5e-5)
    np.testing.assert_allclose(np.array(values["forward.sv_min"])[well], own[well, -1], rtol=5e-5)
    np.testing.assert_allclose(np.array(values["condition"])[well], kappa[well], rtol=1e-4)


def test_layers_chain_ends_at_the_models_own_error(report: tuple[dict, np.ndarray]) -> None:
    data, x = report
    layers = _metrics(data, "layers")
    assert layers["metrics"]["blocks"] == 9
    own = _own_errors(trained_flow(), torch.from_numpy(x))
    floor = 0.01 * np.sqrt(DIM) * 1.0
    own_rel = own / np.maximum(np.linalg.norm(x.astype(np.float64), axis=1), floor)
    assert layers["metrics"]["chain_rel_error"]["max"] >= own_rel.max() * (1 - 1e-9)
    assert _metrics(data, "roundtrip")["metrics"]["rel_error_l2"]["max"] == pytest.approx(own_rel.max(), rel=1e-9)


def test_weights_into_a_fresh_paper_flow_audit_the_trained_model(tmp_path: Path) -> None:
    from tests.audits.paper_style import Audited

    torch.save(Audited(trained_flow()).state_dict(), tmp_path / "w.pt")
    x = np.random.default_rng(3).random((8, DIM), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    common = ("--data", tmp_path / "x.npy", "--ood", "uniform", "--audit", "roundtrip", "--samples", 8)
    bare = invoke_cli("run", f"{FACTORY}:fresh", *common)
    assert bare.code == 2 and "flow.layers.0.bias" in bare.stderr and "ActNorm" in bare.stderr
    out = tmp_path / "r.json"
    loaded = invoke_cli("run", f"{FACTORY}:fresh", "--weights", tmp_path / "w.pt", *common, "-o", f"json={out}")
    assert loaded.code in (0, 1), loaded.stderr
    assert "flow.layers.0.inited" in loaded.stderr
    own = _own_errors(trained_flow(), torch.from_numpy(x))
    data = json.loads(out.read_text())
    assert _metrics(data, "roundtrip")["metrics"]["error_l2"]["max"] == pytest.approx(float(own.max()), rel=1e-12)
