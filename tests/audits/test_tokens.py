"""Known answers for the ``tokens`` audit (autoregressive flows, token by token)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

import innaudit
from innaudit.audits.token_trace import token_errors
from innaudit.audits.tokens import first_leaving, token_range
from innaudit.core.errors import ConfigError
from innaudit.core.results import Status
from innaudit.render import plots
from tests.audits import tarflow_models as tm


def tokens(model: Any, data: Any = "uniform", **options: Any) -> Any:
    config = {"audits": ["tokens"], "samples": 16, "ood": ["gaussian"], "tokens": options}
    report = innaudit.audit(model, data=data, config=config)
    return next(a for a in report.audits if a.id == "tokens")


def first_set(audit: Any) -> Any:
    return audit.results[0]


def test_an_exact_flow_passes_with_zero_error_everywhere() -> None:
    audit = tokens(tm.plain())
    for r in audit.results:
        assert r.status is Status.PASS
        m = r.metrics
        assert (m["blocks"], m["tokens"], m["culprit_index"], m["first_token"]) == (2, 16, -1, -1)
        assert m["chain_rel_error"]["max"] == 0.0 and m["path_gap"]["max"] == 0.0
        assert m["log_scale"]["max"] == 0.0 and m["log_scale"]["above_5"] == 0.0
    series = first_set(audit).series["tokens"]
    assert series["block"] == ["0:GainBlock[0]", "1:GainBlock[1]"] and len(series["accumulated error"][1]) == 16


@pytest.mark.parametrize("factory,positions", [(tm.amplifying, lambda s: s), (tm.amplifying_flipped, lambda s: 15 - s)])
def test_amplification_is_localized_to_its_block_and_after_its_start(factory: Any, positions: Any) -> None:
    """The gain block is the identity before step 6, then multiplies the error by ~20 x per step:
    the culprit is that block, the error stays exactly 0 before step 6 and leaves 1e-4 a few
    steps after it; the identity block before it adds nothing."""
    result = first_set(tokens(factory(), isolate=True))
    m = result.metrics
    assert result.status is Status.FAIL
    assert m["culprit"] == "1:GainBlock[1]" and m["culprit_index"] == 1
    assert 6 <= m["first_token"] <= 12 and m["last_token"] == 15
    assert m["first_position"] == positions(m["first_token"])
    heat = result.series["tokens"]
    assert heat["accumulated error"][1][:6] == [0.0] * 6  # exact before the gain starts
    assert heat["block error"][0] == [0.0] * 16
    assert m["log_scale"]["max"] > 10 and m["log_scale"]["above_5"] > 0.1
    assert m["where"] == f"1:GainBlock[1], tokens {m['first_token']}-15"


def test_a_cache_that_disagrees_with_the_masked_pass_is_the_path_gap() -> None:
    """The cached inverse adds 1e-3 to every element from step 1: the masked forward of its
    output is off by exactly that, token by token."""
    x = torch.rand(16, 16, 4, generator=torch.Generator().manual_seed(0))
    result = tokens(tm.cache_bug(), data=x).results[0]
    z = x.clone()
    z[:, 1:] -= 0.5
    expected = token_errors(z + torch.cat([torch.zeros(16, 1, 4), torch.full((16, 15, 4), 1e-3)], 1), z)
    assert math.isclose(result.metrics["path_gap"]["max"], float(expected.max()), rel_tol=1e-4)
    assert result.metrics["first_token"] == 1 and result.status is Status.WARN


def test_jacobi_capped_below_convergence_is_a_failure_with_its_residual() -> None:
    """Two Jacobi sweeps fix tokens 0..2 exactly; token 3 is the first wrong one."""
    audit = tokens(tm.jacobi_capped())
    for r in audit.results:
        m = r.metrics
        assert r.status is Status.FAIL
        assert m["jacobi"]["blocks"] == 2 and m["jacobi"]["nonconverged_fraction"] == 1.0
        assert m["jacobi"]["iterations"]["max"] == 2 and m["jacobi"]["residual"]["max"] > 1e-2
        assert m["jacobi"]["agreement"]["max"] > 1e-2
        assert m["culprit"] == "2:AR block 1" and m["first_token"] == 3
        failed = {c.metric for c in r.checks if c.status is Status.FAIL}
        assert {"jacobi.nonconverged_fraction", "jacobi.agreement.max"} <= failed
        assert "100% of solves stopped at the cap" in r.message


def test_jacobi_with_enough_sweeps_agrees_with_the_sequential_inverse() -> None:
    for r in tokens(tm.jacobi_converging()).results:
        m = r.metrics
        assert r.status is Status.PASS and m["jacobi"]["nonconverged_fraction"] == 0.0
        assert m["jacobi"]["iterations"]["max"] <= 16 and m["jacobi"]["agreement"]["max"] < 1e-5
        assert m["jacobi"]["residual"]["max"] < 1e-6


def test_autocast_lane_measures_the_sample_against_float32_and_float64() -> None:
    model = tm.jacobi_converging()
    strict = first_set(tokens(model, departure=1e-9)).metrics
    loose = first_set(tokens(model, departure=10.0)).metrics
    lane = strict["autocast_bfloat16"]
    assert 1e-4 < lane["departure_float32"]["max"] < 0.1  # bfloat16 keeps 8 bits
    assert math.isclose(lane["departure_float64"]["max"], lane["departure_float32"]["max"], rel_tol=1e-3)
    assert strict["float32"]["departure_float64"]["max"] < 1e-5
    assert lane["first_token"] == 0 and loose["autocast_bfloat16"]["first_token"] == -1
    off = first_set(tokens(model, autocast="none")).metrics
    assert "autocast_bfloat16" not in off and "float32" not in off


def test_models_without_token_blocks_are_skipped_with_the_reason() -> None:
    from tests.audits.linear_models import linear_model, log_spaced

    audit = tokens(linear_model(log_spaced(4, 0.5, 2.0)))
    assert audit.status is Status.SKIP and "no autoregressive token blocks" in audit.message


@pytest.mark.parametrize(
    "options,words",
    [
        ({"autocast": "fp8"}, "tokens.autocast"),
        ({"rounding": 0}, "tokens.rounding"),
        ({"departure": -1.0}, "departure"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        innaudit.audit(tm.plain(), data="uniform", config={"audits": ["tokens"], "tokens": options})


def test_token_range_and_first_leaving_walk_the_inverse_chain() -> None:
    errors = np.array([[0.0, 1e-5, 2e-4, 1e-5], [0.0, 0.0, 0.0, math.inf]])
    assert token_range(errors, 1e-4) == (2, 3)
    assert token_range(np.zeros((2, 4)), 1e-4) == (-1, -1)

    class T:
        def __init__(self, chain: np.ndarray) -> None:
            self.chain = chain

    traces: Any = [T(errors), T(np.zeros((2, 4))), T(errors)]
    assert first_leaving(traces, 1e-4) == 2  # the last block is inverted first
    assert first_leaving(traces[:2][::-1], 1e-4) == 1


def test_heat_map_series_draws_with_non_finite_cells() -> None:
    series = {"block": ["1:a", "2:b"], "accumulated error": [[1e-7, math.inf], [1e-3, math.nan]]}
    svg = plots.plot_series("tokens", series, "tokens · uniform · tokens", "t0")
    assert svg.startswith("<svg") and "2 NaN/Inf, black" in svg and "1:a" in svg


def test_diagnosis_names_the_block_and_token_range_and_the_remedy() -> None:
    from innaudit.verdict.diagnosis import Kind, diagnose

    config = {"audits": ["tokens"], "samples": 16, "ood": ["gaussian"]}
    statements = {
        s.rule: s for s in diagnose(innaudit.audit(tm.amplifying(), data="uniform", config=config)).statements
    }
    where = statements["first-token"]
    assert where.kind is Kind.BREAKS and "1:GainBlock[1], tokens" in where.text and "(of 16) on uniform" in where.text
    assert {e.metric for e in where.evidence} == {"where", "first_token"}
    assert statements["token-scale"].kind is Kind.WHY and "exp(a)" in statements["token-scale"].text
    assert "soft clip" in statements["soft-clip"].text
    capped = {s.rule: s for s in diagnose(innaudit.audit(tm.jacobi_capped(), data="uniform", config=config)).statements}
    assert (
        "stopped at its iteration cap" in capped["jacobi-capped"].text
        and "uniform 100.0 %" in capped["jacobi-capped"].text
    )
    quiet = {s.rule for s in diagnose(innaudit.audit(tm.plain(), data="uniform", config=config)).statements}
    assert not quiet & {"first-token", "jacobi-capped", "token-scale", "soft-clip"}


def test_jacobi_capped_from_a_checkpoint_exits_1_with_its_residual(tmp_path: Any) -> None:
    """End to end: a native ``tarflow`` checkpoint whose Jacobi inverse is capped at 2 sweeps
    (16 tokens need up to 16): ``innaudit run --audit tokens`` exits 1, the JSON says how many
    solves stopped at the cap with which residual, and the diagnosis names it."""
    from innaudit.core.domain import DataDomain
    from innaudit.loading.native import save_checkpoint
    from tests.helpers import invoke_cli, read_report

    domain = DataDomain(shape=(3, 8, 8))
    path = save_checkpoint(tmp_path / "capped.pt", tm.jacobi_capped(), "tarflow", tm.jacobi_config(2, 1e-12), domain)
    out = tmp_path / "r.json"
    result = invoke_cli("run", path, "--audit", "tokens", "--samples", "8", "--ood", "gaussian", "-o", f"json={out}")
    assert result.code == 1
    report = read_report(out)
    sets = next(a for a in report["audits"] if a["id"] == "tokens")["results"]
    for s in sets:
        jacobi = s["metrics"]["jacobi"]
        assert jacobi["nonconverged_fraction"] == 1.0 and jacobi["iterations"]["max"] == 2
        assert jacobi["residual"]["max"] > 1e-2
    texts = [st["text"] for st in report["diagnosis"]]
    assert any("stopped at its iteration cap without converging" in t for t in texts)


def test_the_convergence_audit_measures_the_capped_jacobi_block_and_fails_it(tmp_path: Any) -> None:
    """The same capped checkpoint through the generic ``convergence`` audit (the
    ``IterativeInverse`` seam that the Jacobi block implements): exit 1, every sample stopped at
    the cap of 2 sweeps with the residual it measured, a finite output notwithstanding; the
    uncapped twin converges and passes."""
    from innaudit.core.domain import DataDomain
    from innaudit.loading.native import save_checkpoint
    from tests.helpers import invoke_cli, read_report

    domain = DataDomain(shape=(3, 8, 8))
    reports = {}
    for name, sweeps in (("capped", 2), ("uncapped", 64)):
        path = save_checkpoint(
            tmp_path / f"{name}.pt", tm.jacobi_capped(), "tarflow", tm.jacobi_config(sweeps, 1e-12), domain
        )
        out = tmp_path / f"{name}.json"
        result = invoke_cli(
            "run", path, "--audit", "convergence", "--samples", "8", "--ood", "gaussian", "-o", f"json={out}"
        )
        reports[name] = (result.code, next(a for a in read_report(out)["audits"] if a["id"] == "convergence"))
    code, audit = reports["capped"]
    assert code == 1 and audit["status"] == "fail", audit["message"]
    assert audit["results"], "the Jacobi block was not measured"
    for s in audit["results"]:
        m = s["metrics"]
        assert s["status"] == "fail" and m["blocks"] == 2 and m["unmeasured_blocks"] == 0
        assert m["cap_hit_fraction"] == 1.0 and m["nonconverged_fraction"] == 1.0 and m["iterations"]["max"] == 2
        assert m["residual"]["max"] > m["max_residual"]  # measured with the block's forward
    code, audit = reports["uncapped"]
    assert code == 0 and audit["status"] == "pass", audit["message"]
