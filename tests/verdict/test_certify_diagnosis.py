"""The diagnosis of iterative inverses and certificates, from real audit results and plain rows."""

from __future__ import annotations

import torch

import innaudit
from innaudit.verdict import certify_words
from innaudit.verdict.diagnosis import Kind, diagnose
from tests.adapters import iterative_models as im


def _half_on_the_axis(n: int = 16) -> torch.Tensor:
    x = 2 * torch.rand(n, 2, generator=torch.Generator().manual_seed(0)) - 1
    x[: n // 2, 0] = 0.0
    return x


def _statements(model, audits: list[str]) -> dict[str, list]:
    x = _half_on_the_axis()
    cfg = {"convergence": {"samples": len(x), "sweep_samples": len(x)}, "bounds": {"samples": len(x)}}
    report = innaudit.audit(model, data=x, ood=[], audits=audits, config=cfg)
    found: dict[str, list] = {}
    for s in diagnose(report).statements:
        found.setdefault(s.rule, []).append(s)
    return found


def test_a_diverging_fixed_point_is_named_with_its_cap_and_residual() -> None:
    found = _statements(im.linear_residual(), ["convergence"])
    (s,) = found["convergence-in-distribution"]
    assert s.kind is Kind.NOT_INVERTIBLE
    assert "50.0 % of 16 samples did not converge" in s.text
    assert "stopped at its cap of 200 iterations on 8" in s.text
    assert "residual ||F(x_hat) - z|| / ||z|| at exit up to" in s.text and "(limit 0.01)" in s.text
    assert {e.metric for e in s.evidence} == {"nonconverged_fraction", "n"}


def test_an_uncertified_residual_block_is_named_beside_the_library_estimate() -> None:
    found = _statements(im.linear_residual(), ["bounds"])
    (s,) = found["residual-uncertified"]
    assert "certified Lip(g) = 1.5 >= 1" in s.text and "the library's own estimate says 0.5 < 1" in s.text
    assert "certificate-certified" not in found  # Lip(F^-1) has no bound: nothing certified to quote


def test_a_contraction_is_certified_beside_its_measured_constants() -> None:
    found = _statements(im.stable_linear_residual(), ["bounds", "convergence"])
    (s,) = found["certificate-certified"]
    assert s.kind is Kind.WHY and "certified Lip(F) <= 1.9" in s.text and "tightness" in s.text
    assert "residual-uncertified" not in found and "convergence-in-distribution" not in found


def test_the_sweep_says_whose_error_it_is() -> None:
    rows = [
        {"factor": 1.0, "tolerance": 1e-3, "error_max": 2e-3},
        {"factor": 100.0, "tolerance": 1e-5, "error_max": 2e-5},
    ]
    flat = [dict(rows[0]), {**rows[1], "error_max": 1.9e-3}]
    said = certify_words.sweep_texts(
        [
            {"block": "0:A", "verdict": "solver", "rows": rows},
            {"block": "1:B", "verdict": "model", "rows": flat},
            {"block": "2:C", "verdict": "", "rows": rows},
        ]
    )
    assert [v for v, _ in said] == ["solver", "model"]
    assert "error 0.002 at its own tolerance 0.001, 2e-05 at 100x tighter" in said[0][1]
    assert "solver is not the cause" in said[1][1] and "block 1:B" in said[1][1]


def test_certificate_words_read_the_kind_not_the_prose() -> None:
    rows = [
        {"name": "0:X", "kind": "affine_scale_bounded", "certificate": "empirical", "how": "anything at all"},
        {"name": "1:Y", "kind": "linear", "certificate": "global", "how": "affine coupling"},
    ]
    kind, text = certify_words.certificate_text({"log_scale": {"min": -1.0, "max": 0.5}}, rows)
    assert kind == "empirical" and "(affine scale bounded)" in text and "[-1, 0.5]" in text
    assert [r["name"] for r in certify_words.affine_rows(rows)] == ["0:X"]
