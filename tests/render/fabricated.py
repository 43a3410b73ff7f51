"""Reports built by hand: every status, every series kind, hostile strings, a waiver, a baseline.

The audits that produce ``values``, ``curve``, ``blocks``, ``grid`` and ``images`` series are
written separately; these reports carry such series so the renderers are tested before they land.
"""

from __future__ import annotations

import math

from innaudit.audits import metric_table
from innaudit.baseline import compare
from innaudit.results import AuditResult, Check, Report, SetResult, Status

NASTY = '<script>alert("x")</script> & $\\frac{1}{0}$ %0A, "quoted": {braces} | pipe `tick`'
"""A set name that tries HTML/Markdown injection, TeX, and workflow-command escapes."""


def _histogram(nonfinite: int) -> dict:
    return {"edges": [-7 + 0.25 * i for i in range(21)], "counts": [i % 7 for i in range(20)],
            "nonfinite": nonfinite}


def _set(name: str, status: Status, value: float, series: dict, waiver: dict | None = None) -> SetResult:
    check = Check("nonfinite_fraction", value, None, 0.0, status if status is not Status.WARN else Status.WARN)
    metrics = {"n": 100, "nonfinite_fraction": value,
               "error_l2": {"median": 1e-6, "p99": math.inf, "max": math.nan, "mean": 2e-6}}
    return SetResult(name, status, metrics, (check,), "" if status is Status.PASS else "a message\nover 100% lines",
                     series, waiver)


def fabricated_report(nasty: bool = True) -> Report:
    """A report with all six series kinds, every status, NaN/Inf metrics and a hostile set name."""
    grid = {"x": [0.0, 0.5, 1.0], "y": [0.0, 1.0],
            "error": [[1e-7, 1e-3, math.nan], [math.inf, 1e-5, 1e-6]]}
    sets = (
        _set(NASTY if nasty else "weird", Status.FAIL, 0.5, {"error_histogram": _histogram(50)}),
        _set("spectrum", Status.WARN, 0.0,
             {"values": {"forward.sv_min": [0.1 * (i + 1) for i in range(50)],
                         "inverse.sv_max": [10.0 ** (i / 10) for i in range(50)]}}),
        _set("attack", Status.PASS, 0.0, {"curve": {"step": [0, 10, 20, 30], "rel_error": [1e-7, 1e-5, 1e-2, math.inf]}}),
        _set("blocks", Status.PASS, 0.0,
             {"blocks": {"name": ["coupling.0", "coupling.1", "actnorm"], "lipschitz_inverse": [1.5, 40.0, 2.0]}}),
        _set("checkerboard", Status.PASS, 0.0, {"grid": grid}),
        _set("witness", Status.FAIL, 1.0,
             {"images": {"x": [[0.0, 1.0], [0.5, 0.25]], "x_prime": [[0.0, 1.0], [0.5, 0.3]],
                         "reconstruction": [[math.nan, 1.0], [0.5, 0.25]]}},
             waiver={"reason": "tracked in #1", "expires": "2020-01-01", "expired": True, "waived_status": "fail"}),
        _set("waived", Status.PASS, 0.2, {}, waiver={"reason": "known <b>issue</b>", "expires": "2999-01-01",
                                                     "expired": False, "waived_status": "fail"}),
    )
    audits = (
        AuditResult("roundtrip", "Round trip", Status.FAIL, "uniform failed", 1.23456, 7, sets),
        AuditResult("spectrum", "Spectrum", Status.ERROR, "the audit crashed: RuntimeError: boom", 0.5, 8,
                    error="RuntimeError: boom"),
        AuditResult("attack", "Attack", Status.SKIP, "no gradient", 0.0, 9),
    )
    return Report(tool={"name": "innaudit", "version": "0.1.0"},
                  run={"seed": 0, "device": "cpu", "dtype": "float32", "versions": {"torch": "x"},
                       "config": {}, "started_at": "2025-01-01T00:00:00Z", "duration_s": 3.21},
                  target={"model": NASTY if nasty else "model.pt", "sha256": "0" * 64, "loader": "native",
                          "latent_shape": [2]},
                  audits=audits, warnings=("waiver roundtrip/witness expired on 2020-01-01",))


def with_baseline(report: Report, gate: bool = True) -> Report:
    """``report`` compared with a copy of itself whose metrics were better (so some regress)."""
    from dataclasses import replace

    better = []
    for a in report.audits:
        results = tuple(replace(r, metrics={**r.metrics, "nonfinite_fraction": 0.0}) for r in a.results)
        better.append(replace(a, results=results))
    base = replace(report, audits=tuple(better))
    return replace(report, comparison=compare(base, report, metric_table(), gate=gate, base_name="base.json"))
