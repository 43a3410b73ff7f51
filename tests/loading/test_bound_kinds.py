"""Bound kinds: the libraries' affine couplings get the same kind (and the diagnosis the same
cause) as a zoo affine flow, read from the kind, not from any message."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from innaudit.audits.bounds import model_certificate
from innaudit.core.bound_kind import AFFINE_KINDS, BoundKind
from innaudit.linalg.lipschitz import block_bound
from innaudit.loading.adapters.coupling_bounds import scale_range
from innaudit.zoo.layers import ConvNet, Coupling
from tests.adapters.helpers import CASES, factory, load, write_inputs
from tests.helpers import invoke_cli, read_report

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


def _kinds(lib: str, name: str) -> list[BoundKind]:
    return [b.kind for b in model_certificate(load(lib, name)).blocks]


def test_zoo_couplings_have_their_kinds() -> None:
    gen = torch.Generator().manual_seed(0)
    kinds = {
        scale: block_bound(Coupling(ConvNet(2, 4, 8, gen), 4, "affine", scale=scale), (4, 2, 2)).kind
        for scale in ("exp", "sigmoid", "bounded")
    }
    assert kinds == {
        "exp": BoundKind.AFFINE_SCALE_UNBOUNDED,
        "sigmoid": BoundKind.AFFINE_SCALE_UNBOUNDED,
        "bounded": BoundKind.AFFINE_SCALE_BOUNDED,
    }
    additive = block_bound(Coupling(ConvNet(2, 2, 8, gen), 4, "additive"), (4, 2, 2))
    assert additive.kind is BoundKind.ADDITIVE and additive.forward is not None


def test_freia_affine_blocks_are_soft_clamped_affine_couplings() -> None:
    CASES["freia"].require()
    glow = _kinds("freia", "build")
    assert glow == [BoundKind.AFFINE_SCALE_BOUNDED, BoundKind.UNKNOWN] * 2  # GLOW coupling, PermuteRandom
    allinone = load("freia", "build_allinone").blocks()
    assert [block_bound(b.module, (4,)).kind for b in allinone] == [BoundKind.AFFINE_SCALE_BOUNDED] * 2
    low, high = scale_range(allinone[0].module)
    assert (low, high) == (pytest.approx(math.exp(-1.5)), pytest.approx(math.exp(1.5)))


def test_nflows_affine_coupling_kind_follows_its_scale_function() -> None:
    CASES["nflows"].require()
    from nflows.transforms.coupling import AffineCouplingTransform

    kinds = _kinds("nflows", "build")
    assert [k for k in kinds if k in AFFINE_KINDS] == [BoundKind.AFFINE_SCALE_BOUNDED] * 2
    block = next(b.module for b in load("nflows", "build").blocks() if isinstance(b.module, AffineCouplingTransform))
    assert scale_range(block) == (1e-3, 1.0 + 1e-3)

    class ExpScale(AffineCouplingTransform):  # a user's scale: its range is not known
        def _scale_and_shift(self, transform_params):
            return torch.exp(transform_params[:, 2:]), transform_params[:, :2]

    mine = ExpScale(torch.tensor([1, 1, 0, 0]), lambda i, o: torch.nn.Linear(i, o))
    assert block_bound(mine, (4,)).kind is BoundKind.AFFINE_SCALE_UNBOUNDED


def _diagnosis(tmp_path: Path, model: str, *extra: str) -> tuple[dict, dict]:
    out = tmp_path / "report.json"
    result = invoke_cli(
        "run", model, "--audit", "bounds", "--samples", 16, "--no-progress", "-o", f"json={out}", *extra
    )
    assert result.code in (0, 1), result.stderr
    report = read_report(out)
    bounds = next(a for a in report["audits"] if a["id"] == "bounds")
    return {d["rule"]: d for d in report["diagnosis"]}, bounds


@pytest.mark.parametrize(("lib", "name"), [("freia", "build"), ("freia", "build_allinone"), ("nflows", "build")])
def test_library_affine_flows_get_the_zoo_affine_cause(tmp_path: Path, lib: str, name: str) -> None:
    CASES[lib].require()
    data, _ = write_inputs(tmp_path)
    rules, bounds = _diagnosis(tmp_path, factory(lib, name), "--data", str(data))
    assert bounds["status"] == "warn"  # measured, empirical: never a pass, never a skip
    assert bounds["results"][0]["metrics"]["empirical_blocks"] == 2
    why = rules["unbounded-inverse"]
    assert why["text"].startswith("Affine coupling has no global Lipschitz bound (its scale is bounded")
    assert "bounded-coupling" in rules and "certificate-empirical" in rules


@pytest.mark.skipif(not (CHECKPOINTS / "digits-affine.pt").exists(), reason="no shipped checkpoints")
def test_the_zoo_affine_flow_names_the_unbounded_scale(tmp_path: Path) -> None:
    rules, bounds = _diagnosis(tmp_path, str(CHECKPOINTS / "digits-affine.pt"), "--ood", "uniform")
    assert bounds["status"] == "warn"
    assert rules["unbounded-inverse"]["text"].startswith("Affine coupling has no global Lipschitz bound (F^-1 divides")
    assert "affine scale unbounded" in rules["certificate-empirical"]["text"]
