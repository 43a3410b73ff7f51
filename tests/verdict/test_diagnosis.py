"""The diagnosis rules: each fires on its evidence, cites it, and stays silent without it."""

from __future__ import annotations

import json
import re
from dataclasses import replace

from innaudit.core.results import Report, Status
from innaudit.render import RENDERERS
from innaudit.render.json import report_dict
from innaudit.train import regularizers
from innaudit.verdict.diagnosis import FD_COEFF, FD_EPS, Diagnosis, Kind, diagnose, diagnosis_to_dict
from innaudit.verdict.report_json import report_from_dict, to_plain
from tests.render.fabricated import diagnosable_report


def _rules(d: Diagnosis) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in d.statements:
        out.setdefault(s.rule, []).append(s)
    return out


def _without(report: Report, *audits: str) -> Report:
    return replace(report, audits=tuple(a for a in report.audits if a.id not in audits))


def test_where_it_is_invertible_and_where_not() -> None:
    rules = _rules(diagnose(diagnosable_report()))
    data = rules["roundtrip-in-distribution"][0]
    assert data.kind is Kind.INVERTIBLE and "all 360 round trips finite" in data.text
    ood = rules["roundtrip-ood"][0]
    assert ood.kind is Kind.NOT_INVERTIBLE and "uniform 67.6 %" in ood.text and "gaussian 2.0 %" in ood.text
    cited = {(e.audit, e.dataset, e.metric) for e in ood.evidence}
    assert cited == {  # the checks that failed the two sets, and their sample counts
        ("roundtrip", "uniform", "nonfinite_fraction"),
        ("roundtrip", "gaussian", "nonfinite_fraction"),
        ("roundtrip", "uniform", "rel_error_l2.max"),
        ("roundtrip", "gaussian", "rel_error_l2.max"),
        ("roundtrip", "uniform", "n"),
        ("roundtrip", "gaussian", "n"),
    }
    assert "max relative round-trip error 0.3 on gaussian (limit 0.01)" in ood.text
    attack = rules["attack"][0]
    assert attack.kind is Kind.NOT_INVERTIBLE and "non-finite round trip near 6.2 % of them" in attack.text
    assert "random search: 0.0 %" in attack.text and "of 32 points" in attack.text
    assert rules["sampling"][0].kind is Kind.INVERTIBLE


def test_where_it_breaks_first_block_and_direction() -> None:
    rules = _rules(diagnose(diagnosable_report()))
    block = rules["first-block"][0]
    assert block.kind is Kind.BREAKS and "7:Coupling[7] on uniform" in block.text and "(of 16)" in block.text
    assert block.evidence[0].value == "7:Coupling[7]"
    direction = rules["direction"][0].text
    assert "overflows (non-finite latent) on uniform 50.0 % (of 67.6 % non-finite; the rest explode" in direction
    assert "inverse explodes from a finite latent on gaussian 2.0 %" in direction
    assert "first-block" not in _rules(diagnose(_without(diagnosable_report(), "layers")))


def _with_layers(report: Report, culprit: str, status: Status, dataset: str = "digits:test") -> Report:
    """``report`` whose ``layers`` set on ``dataset`` names ``culprit`` (index 3) with ``status``."""
    audits = []
    for a in report.audits:
        if a.id == "layers":
            sets = tuple(
                replace(r, status=status, metrics={**r.metrics, "culprit": culprit, "culprit_index": 3})
                if r.dataset == dataset
                else r
                for r in a.results
            )
            a = replace(a, results=sets)
        audits.append(a)
    return replace(report, audits=tuple(audits))


def test_a_block_that_stands_out_among_passing_blocks_is_no_failing_block() -> None:
    """``layers`` fills its culprit where one block's error jumps above the others, even when
    every check passes; on a set where neither ``layers`` nor ``roundtrip`` failed or warned the
    diagnosis names no failing block, and it does where layers warned."""
    passing = _with_layers(diagnosable_report(), "3:Coupling[3]", Status.PASS)
    block = _rules(diagnose(passing))["first-block"][0]
    assert "3:Coupling[3]" not in block.text and "digits:test" not in block.text
    assert "7:Coupling[7] on uniform" in block.text
    quiet = _with_layers(passing, "7:Coupling[7]", Status.PASS, dataset="uniform")
    quiet = _without(quiet, "roundtrip")
    assert "first-block" not in _rules(diagnose(quiet))
    warned = _with_layers(diagnosable_report(), "3:Coupling[3]", Status.WARN)
    assert "3:Coupling[3] on digits:test" in _rules(diagnose(warned))["first-block"][0].text


def test_float64_tells_precision_from_conditioning() -> None:
    exact = _rules(diagnose(diagnosable_report(float64=True)))["float64"][0]
    assert "float32 precision is lost" in exact.text and "max relative error 3e-12" in exact.text
    assert ("roundtrip", "uniform", "float64.rel_error_l2.max") in {
        (e.audit, e.dataset, e.metric) for e in exact.evidence
    }
    assert "float64" not in _rules(diagnose(diagnosable_report()))


def test_float64_finite_is_not_invertible() -> None:
    """The issue's spline flow: float64 round trips all finite, relative error 0.35: the float64
    verdict rests on the error, and says more precision does not fix it."""
    wrong = _rules(diagnose(diagnosable_report(float64=True, float64_error=0.35)))["float64"][0]
    assert "finite but wrong (max relative error 0.35" in wrong.text and "itself is invertible" not in wrong.text
    broken = _rules(diagnose(diagnosable_report(float64=True, float64_nonfinite=0.25)))["float64"][0]
    assert "non-finite too (25.0 %)" in broken.text


def test_why_cites_the_affine_bound_and_the_local_sigma_min() -> None:
    why = _rules(diagnose(diagnosable_report()))["unbounded-inverse"][0]
    assert why.kind is Kind.WHY and "no global Lipschitz bound" in why.text
    assert "sigma_min(J_F) reaches 1e-23 on uniform" in why.text and "scale reaches 0 on uniform" in why.text
    assert {e.audit for e in why.evidence} == {"bounds", "layers", "spectrum"}
    bare = _without(diagnosable_report(), "layers", "spectrum", "bounds")
    assert "unbounded-inverse" not in _rules(diagnose(bare))
    assert "bounded-coupling" not in _rules(diagnose(bare))


def test_remedies_follow_the_evidence() -> None:
    rules = _rules(diagnose(diagnosable_report()))
    assert "additive coupling" in rules["bounded-coupling"][0].text
    fd = rules["fd-regularizer"][0].text
    assert "fd_regularizer" in fd and "1e-4" in fd and "step 0.1" in fd
    assert (FD_COEFF, FD_EPS) == (regularizers.FD_COEFF, regularizers.FD_EPS)
    assert "spectral normalization" in rules["lipschitz"][0].text
    assert "restrict-inputs" not in rules  # the attack breaks near the data: restricting is not enough
    no_attack = _rules(diagnose(_without(diagnosable_report(), "attack")))
    assert "[0.0, 1.0]" in no_attack["restrict-inputs"][0].text
    assert "--float64-check" in rules["localize"][0].text and "flow.pt" in rules["localize"][0].text
    assert "--audit layers" in _rules(diagnose(_without(diagnosable_report(), "layers")))["localize"][0].text


def test_a_clean_report_gets_no_remedy() -> None:
    report = diagnosable_report()
    clean = replace(
        report, audits=(replace(report.audits[0], status=Status.PASS, results=report.audits[0].results[:1]),)
    )
    kinds = {s.kind for s in diagnose(clean).statements}
    assert kinds == {Kind.INVERTIBLE}


def test_statements_come_in_reading_order_and_survive_the_json() -> None:
    report = diagnosable_report()
    d = diagnose(report)
    order = [list(Kind).index(s.kind) for s in d.statements]
    assert order == sorted(order)
    data = report_dict(report)
    assert data["diagnosis"] == to_plain(diagnosis_to_dict(d))
    again = report_dict(report_from_dict(json.loads(json.dumps(data))))
    assert again["diagnosis"] == data["diagnosis"]


def test_markdown_and_html_carry_the_same_diagnosis() -> None:
    report = diagnosable_report()
    html, md = RENDERERS["html"](report), RENDERERS["markdown"](report)
    plain_md = re.sub(r"\\(.)", r"\1", md).replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
    assert html.index('id="diagnosis"') < html.index("Findings, worst first")
    assert md.index("**Diagnosis**") < md.index("| status | audit | set | finding |")
    for s in diagnose(report).statements:
        assert s.text.replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#x27;") in html
        assert s.text in plain_md
