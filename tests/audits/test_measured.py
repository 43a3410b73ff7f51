"""Never pass what was not measured: a no-grad inverse, errors compounding through blocks, a
model that rewrites itself, a domain inferred from data, singular Jacobians."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import innaudit
from innaudit.audits.spectrum import SpectrumAudit
from innaudit.core.results import Status
from innaudit.linalg import autograd_blind_reason
from innaudit.loading.adapt import adapt_module, declared_domain
from innaudit.model.contract import InvertibleModel
from innaudit.model.integrity import changed, fingerprint, set_init_flags
from tests.audits.linear_models import linear_model
from tests.audits.measured_models import CondChain, LazyActNorm, NoGradInverseLinear
from tests.helpers import invoke_cli

MODELS = Path(__file__).parent / "measured_models.py"


def _wrap(module: torch.nn.Module) -> InvertibleModel:
    domain = declared_domain(module)
    assert domain is not None
    return adapt_module(module, domain, {"test": "measured"})


def _set(report, audit_id: str, dataset: str):
    audit = next(a for a in report.audits if a.id == audit_id)
    return audit, next((r for r in audit.results if r.dataset == dataset), None)


def _spectrum(model, method: str = "exact"):
    cfg = {"audits": ["spectrum"], "samples": 8, "ood": ["gaussian"], "spectrum": {"samples": 8, "method": method}}
    return innaudit.audit(model, data="uniform", config=cfg)


def test_blind_maps_are_detected_before_any_jacobian() -> None:
    m = NoGradInverseLinear()
    x = torch.rand(3, 6)
    assert autograd_blind_reason(m.forward, x) is None
    assert "no autograd graph" in str(autograd_blind_reason(m.inverse, x))
    detached = lambda t: t.detach() @ m.weight.T  # noqa: E731  (a graph, through the weights only)
    assert "identically zero" in str(autograd_blind_reason(detached, x))


def test_no_grad_inverse_spectrum_is_the_reciprocal_of_the_forward_one() -> None:
    audit, r = _set(_spectrum(_wrap(NoGradInverseLinear())), "spectrum", "uniform")
    assert r is not None and audit.status is not Status.ERROR
    m = r.metrics
    assert m["inverse"]["sv_max"]["max"] == pytest.approx(1e3, rel=1e-2)
    assert m["inverse"]["sv_min"]["min"] == pytest.approx(1e-2, rel=1e-2)
    assert m["condition"]["max"] == pytest.approx(1e5, rel=2e-2)
    assert "no gradient" in r.message and "reciprocals" in r.message
    assert r.status is Status.WARN  # condition 1e5 warns; never PASS with zeros


def test_no_grad_inverse_in_matrix_free_mode_is_an_error_with_the_reason() -> None:
    audit, r = _set(_spectrum(_wrap(NoGradInverseLinear()), "matrix-free"), "spectrum", "uniform")
    assert audit.status is Status.ERROR and r is None
    assert "could not measure" in audit.message and "no autograd graph" in audit.message


def test_nan_cross_check_gaps_count_as_mismatches() -> None:
    from innaudit.audits.jacobians import Spectrum

    class Ctx:
        @staticmethod
        def option(name: str) -> float:
            return {"cross_check_tolerance": 0.05, "tol": 1e-4}[name]

    one = np.ones(4)
    inv_max = np.array([1.0, math.nan, math.inf, 1.0])
    s = Spectrum("exact", one, one, inv_max, one)
    m = SpectrumAudit()._metrics(s, Ctx())  # type: ignore[arg-type]
    assert m["cross_check"]["mismatch_fraction"] == 0.5
    assert m["cross_check"]["max_log10_gap"] == math.inf


def test_singular_jacobian_reports_condition_inf_in_strict_json(tmp_path: Path) -> None:
    model = linear_model(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    _, r = _set(_spectrum(model), "spectrum", "uniform")
    assert r is not None
    assert r.metrics["forward"]["sv_min"]["min"] == 0.0
    assert r.metrics["condition"]["max"] == math.inf
    assert r.metrics["singular_fraction"] == 1.0
    assert "singular" in r.message and "1e+" not in r.message
    from innaudit.render.json import render

    text = render(_spectrum(model))
    data = json.loads(text)  # strict: no bare Infinity
    got = next(a for a in data["audits"] if a["id"] == "spectrum")["results"][0]["metrics"]
    assert got["condition"]["max"] == "inf"


def test_layers_names_where_the_accumulated_error_leaves_rounding_and_roundtrip_agrees() -> None:
    cfg = {"audits": ["roundtrip", "layers"], "samples": 32, "ood": ["gaussian"], "layers": {"samples": 32, "worst": 2}}
    report = innaudit.audit(_wrap(CondChain()), data="uniform", config=cfg)
    for name in ("uniform", "gaussian"):
        _, rt = _set(report, "roundtrip", name)
        _, ly = _set(report, "layers", name)
        assert rt is not None and ly is not None
        assert rt.status is Status.FAIL and ly.status is Status.FAIL
        assert ly.metrics["block_rel_error"]["max"] < 1e-5  # every block alone round-trips
        assert ly.metrics["chain_rel_error"]["max"] >= rt.metrics["rel_error_l2"]["max"] > 1.0
        assert 0 <= ly.metrics["chain_index"] < 10
        assert ly.metrics["chain_block"] in ly.message and "leaves rounding" in ly.message
        chain = ly.series["blocks"]["chain_rel_error_max"]
        assert chain[ly.metrics["chain_index"]] > 1e-4
        assert all(c <= 1e-4 for c in chain[ly.metrics["chain_index"] + 1 :])


def test_model_that_rewrites_itself_exits_2_naming_the_parameters(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((16, 4), dtype=np.float32))
    res = invoke_cli(
        "run",
        f"{MODELS}:lazy_actnorm",
        "--data",
        tmp_path / "x.npy",
        "--ood",
        "uniform",
        "--audit",
        "roundtrip",
        "--samples",
        16,
    )
    assert res.code == 2
    assert "bias" in res.stderr and "log_scale" in res.stderr and "ActNorm" in res.stderr
    assert "--allow-mutation" in res.stderr
    allowed = invoke_cli(
        "run",
        f"{MODELS}:lazy_actnorm",
        "--data",
        tmp_path / "x.npy",
        "--ood",
        "uniform",
        "--audit",
        "roundtrip",
        "--samples",
        16,
        "--allow-mutation",
    )
    assert allowed.code in (0, 1) and "allowed by --allow-mutation" in allowed.stderr


def test_a_mutation_during_the_audits_is_a_report_error() -> None:
    class Drifting(LazyActNorm):
        def inverse(self, z: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                self.bias.add_(1e-3)  # every inverse call moves the model
            return super().inverse(z)

    model = Drifting()
    model.initialized = True
    report = innaudit.audit(
        _wrap(model), data="uniform", config={"audits": ["roundtrip"], "samples": 8, "ood": ["gaussian"]}
    )
    assert int(report.exit_code) == 2
    assert any("bias" in e and "ActNorm" in e for e in report.errors)


def test_fingerprint_and_init_flags() -> None:
    model = LazyActNorm()
    before = fingerprint(model)
    model(torch.rand(8, 4))
    assert changed(before, fingerprint(model)) == ["param:bias", "param:log_scale"]
    fresh = LazyActNorm()
    assert set_init_flags(fresh) == ["initialized"] and fresh.initialized is True
    fresh.register_buffer("inited", torch.tensor(0, dtype=torch.uint8))
    assert set_init_flags(fresh) == ["inited"] and int(fresh.inited) == 1


def test_domain_inferred_from_a_256_level_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", (rng.integers(0, 256, (32, 4)) / 255.0).astype(np.float32))
    out = tmp_path / "r.json"
    res = invoke_cli(
        "run",
        f"{MODELS}:no_domain",
        "--data",
        tmp_path / "x.npy",
        "--ood",
        "uniform",
        "--audit",
        "roundtrip",
        "--samples",
        16,
        "-o",
        f"json={out}",
        "-o",
        "console",
    )
    assert res.code in (0, 1), res.stderr
    info = json.loads(out.read_text())["target"]["info"]
    assert (info["domain"]["low"], info["domain"]["high"], info["domain"]["levels"]) == (0.0, 1.0, 256)
    assert "inferred from data" in info["source"]["domain"]
    assert "inferred from data" in res.stdout and "256 levels" in res.stdout


def test_range_and_levels_flags_override_the_domain(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((16, 4), dtype=np.float32))
    out = tmp_path / "r.json"
    res = invoke_cli(
        "run",
        f"{MODELS}:no_domain",
        "--data",
        tmp_path / "x.npy",
        "--ood",
        "uniform",
        "--audit",
        "roundtrip",
        "--samples",
        8,
        "--range",
        "-1,1",
        "--levels",
        "17",
        "-o",
        f"json={out}",
    )
    assert res.code in (0, 1), res.stderr
    domain = json.loads(out.read_text())["target"]["info"]["domain"]
    assert (domain["low"], domain["high"], domain["levels"]) == (-1.0, 1.0, 17)
    bad = invoke_cli("run", f"{MODELS}:no_domain", "--data", tmp_path / "x.npy", "--range", "1,0")
    assert bad.code == 2 and "LOW < HIGH" in bad.stderr


def test_weights_loaded_into_a_lazy_actnorm_set_its_flag_and_say_so(tmp_path: Path) -> None:
    trained = LazyActNorm()
    trained(torch.rand(64, 4) * 0.5 + 0.2)  # data-dependent init, as training would do
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).random((16, 4), dtype=np.float32))
    out = tmp_path / "r.json"
    res = invoke_cli(
        "run",
        f"{MODELS}:lazy_actnorm",
        "--weights",
        tmp_path / "w.pt",
        "--data",
        tmp_path / "x.npy",
        "--ood",
        "uniform",
        "--audit",
        "roundtrip",
        "--samples",
        16,
        "-o",
        f"json={out}",
    )
    assert res.code in (0, 1), res.stderr
    assert "initialized" in res.stderr and "--weights" in res.stderr
    report = json.loads(out.read_text())
    assert not report["errors"] and any("initialized" in w for w in report["warnings"])


def test_attack_says_when_it_falls_back_to_gradient_free_search() -> None:
    cfg = {"audits": ["attack"], "samples": 4, "ood": ["gaussian"], "attack": {"samples": 4, "steps": 3}}
    blind = innaudit.audit(_wrap(NoGradInverseLinear()), data="uniform", config=cfg)
    _, r = _set(blind, "attack", "uniform")
    assert r is not None and "gradient-free" in r.message and "no autograd graph" in r.message
    seen = innaudit.audit(_wrap(CondChain()), data="uniform", config=cfg)
    _, r = _set(seen, "attack", "uniform")
    assert r is not None and "gradient-free" not in r.message


def test_an_inverse_chain_that_turns_nan_is_non_finite_in_layers_as_in_roundtrip() -> None:
    from tests.audits.measured_models import ExpThenChain

    cfg = {"audits": ["roundtrip", "layers"], "samples": 64, "ood": ["gaussian"], "layers": {"samples": 64, "worst": 4}}
    report = innaudit.audit(_wrap(ExpThenChain()), data="uniform", config=cfg)
    _, rt = _set(report, "roundtrip", "uniform")
    _, ly = _set(report, "layers", "uniform")
    assert rt is not None and ly is not None
    assert rt.metrics["nonfinite_fraction"] > 0  # the whole round trip has NaN
    assert ly.metrics["block_rel_error"]["max"] < 1e-5 and ly.metrics["nonfinite_fraction"] > 0
    assert ly.metrics["chain_rel_error"]["max"] == math.inf and ly.status is Status.FAIL
    assert ly.series["blocks"]["chain_rel_error_max"][0] == math.inf
