"""Every metric path the diagnosis reads is declared by the audit it names.

The diagnosis (``innaudit.verdict.diagnosis``) reads a set's metrics only through ``lookup``;
the test records each read (which audit's set, which dotted path) while diagnosing reports that
fire its rules, and holds every path against that audit's declarations in the registry. A rule
that reads a metric its audit stopped producing (a renamed path) fails here, not silently.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from innaudit.audits import metric_table
from innaudit.core.metrics import declared
from innaudit.core.results import AuditResult, Check, Report, SetResult, Status
from innaudit.verdict import diagnosis
from tests.render.fabricated import default_run_report, diagnosable_report


def _certified() -> Report:
    """The diagnosable flow with a certified bound that holds (rule ``certified`` reads it)."""
    base = diagnosable_report()
    bounds = SetResult(
        "uniform",
        Status.PASS,
        {"n": 64, "violation_fraction": 0.0, "inverse": {"bound": 12.5}, "forward": {"bound": 3.0}},
        (Check("violation_fraction", 0.0, None, 0.0, Status.PASS),),
    )
    audits = tuple(
        AuditResult("bounds", "Bounds", Status.PASS, "", 1.0, 5, (bounds,)) if a.id == "bounds" else a
        for a in base.audits
    )
    return replace(base, audits=audits)


def _reports() -> Iterator[Report]:
    yield diagnosable_report()
    yield diagnosable_report(float64=True)
    yield diagnosable_report(float64=True, float64_error=0.35)
    yield diagnosable_report(float64=True, float64_nonfinite=0.25)
    yield default_run_report()
    yield _certified()


def _reads(report: Report, monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str]]:
    """``(audit, path)`` of every metric the diagnosis of ``report`` reads."""
    owner = {id(r.metrics): a.id for a in report.audits for r in a.results}
    seen: set[tuple[str, str]] = set()
    real = diagnosis.lookup

    def recording(metrics: Any, path: str) -> Any:
        if id(metrics) in owner:
            seen.add((owner[id(metrics)], path))
        return real(metrics, path)

    with monkeypatch.context() as patch:
        patch.setattr(diagnosis, "lookup", recording)
        diagnosis.diagnose(report, metric_table())
    return seen


def test_every_metric_the_diagnosis_reads_is_declared_by_its_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    table = metric_table()
    seen: set[tuple[str, str]] = set()
    for report in _reports():
        seen |= _reads(report, monkeypatch)
    undeclared = sorted((audit, path) for audit, path in seen if declared(table, audit, path) is None)
    assert not undeclared, f"the diagnosis reads metrics no audit declares: {undeclared}"
    # the reports fire the rules of every audit the diagnosis knows, so the check is not empty
    assert {a for a, _ in seen} >= {"roundtrip", "attack", "sampling", "spectrum", "layers", "bounds"}
    assert ("roundtrip", "float64.rel_error_l2.max") in seen and ("bounds", "inverse.bound") in seen


def test_the_recording_catches_an_undeclared_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder sees a read of a path that no audit declares (so the test above can fail)."""
    report = diagnosable_report()
    table = metric_table()
    real = diagnosis._num

    def misread(result: SetResult, path: str) -> float | None:
        return real(result, "scale_minimum" if path == "scale_min" else path)

    monkeypatch.setattr(diagnosis, "_num", misread)
    seen = _reads(report, monkeypatch)
    assert ("layers", "scale_minimum") in seen and declared(table, "layers", "scale_minimum") is None


def test_every_literal_evidence_path_is_declared() -> None:
    """Each ``_ev("audit", result, "path")`` written in the diagnosis names a declared metric,
    whether or not a report fires its rule."""
    tree = ast.parse(Path(diagnosis.__file__).read_text(encoding="utf-8"))
    table = metric_table()
    cited = [
        (node.args[0].value, node.args[2].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "_ev"
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[2], ast.Constant)
    ]
    assert len(cited) >= 10
    assert [c for c in cited if declared(table, *c) is None] == []
