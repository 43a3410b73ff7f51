"""Properties of the diagnosis over every registered audit and every gated metric.

1. A report in which exactly one gated metric of one audit fails (or warns, for a metric gated
   by a warn level only) on one set gets a diagnosis that cites that metric on that set, and no
   other gated metric, in the statements explaining failures (not invertible, caution, breaks).
2. No statement contradicts a number of the report it is made from: each evidence value is the
   report's value at that path; "invertible" is only said of sets that passed, "not invertible"
   only of sets that failed; every figure a statement (or a finding line) prints is a value it
   cites, that value's limit, or the set's sample count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import pytest

from innaudit.audits import REGISTRY, metric_table
from innaudit.config.settings import Threshold
from innaudit.core.metrics import Direction, direction_of, percent
from innaudit.core.results import AuditResult, Report, SetResult, Status, lookup
from innaudit.render.common import findings
from innaudit.verdict.diagnosis import Kind, Statement, diagnose
from innaudit.verdict.gate import judge
from tests.render.fabricated import diagnosable_report

TABLE = metric_table()
EXPLAINING = {Kind.NOT_INVERTIBLE, Kind.CAUTION, Kind.BREAKS}


def _put(metrics: dict[str, Any], path: str, value: float) -> None:
    node = metrics
    *heads, leaf = path.split(".")
    for head in heads:
        node = node.setdefault(head, {})
    node[leaf] = value


def _passing(threshold: Threshold, direction: Direction) -> float:
    return 1e9 if direction is Direction.HIGHER_BETTER else 0.0


def _failing(threshold: Threshold, direction: Direction, rate: bool) -> float:
    limit = threshold.fail if threshold.fail is not None else threshold.warn
    assert limit is not None
    if direction is Direction.HIGHER_BETTER:
        return limit / 10 if limit > 0 else -1.0
    value = 10 * limit if limit > 0 else 0.5
    return min(value, 1.0) if rate else value


def _set(audit_id: str, name: str, failing: str | None) -> SetResult:
    cls = REGISTRY[audit_id]
    declared = TABLE[audit_id]
    metrics: dict[str, Any] = {"n": 40}
    for path, threshold in cls.thresholds.items():
        direction = direction_of(declared, path)
        metric = declared.get(path) or declared.get(path.rpartition(".")[0])
        rate = bool(metric and metric.rate)
        value = _failing(threshold, direction, rate) if path == failing else _passing(threshold, direction)
        _put(metrics, path, value)
    status, checks = judge(metrics, cls.thresholds, declared)
    return SetResult(name, status, metrics, checks)


def single_failure(audit_id: str, metric: str) -> Report:
    """One audit on an in-distribution and an OOD set, ``metric`` failing on the OOD set alone."""
    sets = (_set(audit_id, "data", None), _set(audit_id, "noise", metric))
    audit = AuditResult(audit_id, audit_id, max((s.status for s in sets), key=lambda s: s.rank), "", 0.1, 0, sets)
    run = {
        "seed": 0,
        "datasets": [{"name": "data", "role": "in-distribution"}, {"name": "noise", "role": "ood"}],
    }
    return Report({"name": "innaudit"}, run, {"model": "m.pt"}, (audit,))


GATED = [(aid, metric) for aid, cls in REGISTRY.items() for metric in cls.thresholds]


@pytest.mark.parametrize("audit_id, metric", GATED, ids=[f"{a}:{m}" for a, m in GATED])
def test_each_gated_metric_failing_alone_is_cited_by_the_diagnosis(audit_id: str, metric: str) -> None:
    report = single_failure(audit_id, metric)
    failed = report.audits[0].results[1]
    assert failed.status in (Status.FAIL, Status.WARN) and report.audits[0].results[0].status is Status.PASS
    explaining = [s for s in diagnose(report, TABLE).statements if s.kind in EXPLAINING]
    gated = set(REGISTRY[audit_id].thresholds)
    cited = {(e.audit, e.dataset, e.metric) for s in explaining for e in s.evidence if e.metric in gated}
    assert cited == {(audit_id, "noise", metric)}, [s.text for s in explaining]
    kinds = {s.kind for s in explaining if any(e.metric == metric for e in s.evidence)}
    assert (Kind.CAUTION in kinds) == (failed.status is Status.WARN)
    _assert_consistent(report)


# -- no statement contradicts a number -------------------------------------------------------
NUMBER = re.compile(r"(?<![\w.])[<>]?-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
SYMBOLS = (
    "F^-1",
    "J_F^-1",
    "L-inf",
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "sigmoid(h+2)",
    "exp(tanh(h)*log(M))",
    "Lip < 1",
    "1 / min |scale|",
    "log10",
)


def _forms(value: Any) -> set[str]:
    """The ways a statement may print ``value``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return set()
    v = float(value)
    if not math.isfinite(v):
        return {"inf", "nan"}
    out = {f"{v:.2g}", f"{v:.3g}", f"{v:g}", f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e+")}
    out |= {f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e"), f"{100 * v:g}"}
    if float(v).is_integer():
        out.add(str(int(v)))
    if 0 <= v <= 1:
        out.add(percent(v).replace(" %", ""))
    return out


def _checks(report: Report) -> Mapping[tuple[str, str, str], Any]:
    return {(a.id, r.dataset, c.metric): c for a in report.audits for r in a.results for c in r.checks}


def _allowed(statement: Statement, report: Report) -> set[str]:
    checks = _checks(report)
    allowed: set[str] = set()
    for e in statement.evidence:
        allowed |= _forms(e.value)
        check = checks.get((e.audit, e.dataset, e.metric))
        if check is not None:
            for bound in (check.warn, check.fail):
                allowed |= _forms(bound) if bound is not None else set()
    return allowed


def _numbers(text: str, statement: Statement) -> list[str]:
    names = {e.dataset for e in statement.evidence} | {
        str(e.value) for e in statement.evidence if isinstance(e.value, str)
    }
    for word in sorted(names | set(SYMBOLS), key=len, reverse=True):
        if word:
            text = text.replace(word, " ")
    return [n.lstrip("<>") for n in NUMBER.findall(text)]


def _result(report: Report, audit: str, dataset: str) -> SetResult | None:
    for a in report.audits:
        if a.id == audit:
            return next((r for r in a.results if r.dataset == dataset), None)
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _assert_consistent(report: Report) -> None:
    for s in diagnose(report, TABLE).statements:
        for e in s.evidence:
            result = _result(report, e.audit, e.dataset)
            if result is None:
                continue  # evidence about the audit, not one set (the bounds audit's message)
            assert _same(lookup(result.metrics, e.metric), e.value), (s.text, e)
            gated = any(c.metric == e.metric for c in result.checks)
            if s.kind is Kind.INVERTIBLE:
                assert result.status is Status.PASS, (s.text, e)
            if s.kind is Kind.NOT_INVERTIBLE and gated:
                assert result.status is Status.FAIL or result.waiver, (s.text, e)
        if s.kind in (Kind.DO, Kind.RERUN):
            continue  # remedies quote the paper's settings and the commands to run
        allowed = _allowed(s, report)
        for number in _numbers(s.text, s):
            assert number in allowed, f"{number!r} in {s.text!r} is no value the statement cites"
    for f in findings(report):
        result = _result(report, f.audit, f.dataset)
        if result is None or not f.metric:
            continue
        check = next(c for c in result.checks if c.metric == f.metric)
        allowed = _forms(check.value) | _forms(result.metrics.get("n")) | {"95"}
        allowed |= {x for bound in (check.warn, check.fail) if bound is not None for x in _forms(bound)}
        allowed |= {x for bound in result.intervals.get(f.metric, ()) for x in _forms(bound)}
        for number in NUMBER.findall(f.text.replace("float64", "")):
            assert number.lstrip("<>") in allowed, f"{number!r} in finding {f.text!r}"


def _reports() -> Iterator[tuple[str, Report]]:
    yield "diagnosable", diagnosable_report()
    yield "float64-exact", diagnosable_report(float64=True)
    yield "float64-wrong", diagnosable_report(float64=True, float64_error=0.35)
    yield "float64-nonfinite", diagnosable_report(float64=True, float64_nonfinite=0.25)
    base = diagnosable_report()
    waived = [
        replace(a, results=tuple(replace(r, waiver={"waived_status": r.status.value}) for r in a.results))
        for a in base.audits
    ]
    yield "waived", replace(base, audits=tuple(waived))


@pytest.mark.parametrize("name, report", list(_reports()), ids=[n for n, _ in _reports()])
def test_no_statement_contradicts_a_number_in_the_report(name: str, report: Report) -> None:
    _assert_consistent(report)


def test_a_real_run_of_every_default_audit_is_consistent() -> None:
    """The whole default battery on a known-answer model: a coupling whose scale underflows to 0
    for ``x1 > 0.52`` (NaN round trips there), exact to rounding below."""
    from innaudit import audit
    from tests.audits.known_models import underflow_model

    report = audit(underflow_model(), data="uniform", samples=64, seed=0)
    assert report.audit("roundtrip").status is Status.FAIL
    _assert_consistent(report)
    statements = diagnose(report, TABLE).statements
    assert any(s.kind is Kind.NOT_INVERTIBLE and s.rule.startswith("roundtrip") for s in statements)
