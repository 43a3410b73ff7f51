"""Reports built by hand: every status, every series kind, hostile strings, a waiver, a baseline.

The audits that produce ``values``, ``curve``, ``blocks``, ``grid`` and ``images`` series are
written separately; these reports carry such series so the renderers are tested before they land.
"""

from __future__ import annotations

import math

from innaudit.audits import metric_table
from innaudit.core.results import AuditResult, Check, Report, SetResult, Status
from innaudit.verdict.baseline import compare

NASTY = '<script>alert("x")</script> & $\\frac{1}{0}$ %0A, "quoted": {braces} | pipe `tick`'
"""A set name that tries HTML/Markdown injection, TeX, and workflow-command escapes."""


def _histogram(nonfinite: int) -> dict:
    return {"edges": [-7 + 0.25 * i for i in range(21)], "counts": [i % 7 for i in range(20)], "nonfinite": nonfinite}


def _set(name: str, status: Status, value: float, series: dict, waiver: dict | None = None) -> SetResult:
    check = Check("nonfinite_fraction", value, None, 0.0, status if status is not Status.WARN else Status.WARN)
    metrics = {
        "n": 100,
        "nonfinite_fraction": value,
        "error_l2": {"median": 1e-6, "p99": math.inf, "max": math.nan, "mean": 2e-6},
    }
    return SetResult(
        name, status, metrics, (check,), "" if status is Status.PASS else "a message\nover 100% lines", series, waiver
    )


def fabricated_report(nasty: bool = True) -> Report:
    """A report with all six series kinds, every status, NaN/Inf metrics and a hostile set name."""
    grid = {"x": [0.0, 0.5, 1.0], "y": [0.0, 1.0], "error": [[1e-7, 1e-3, math.nan], [math.inf, 1e-5, 1e-6]]}
    sets = (
        _set(NASTY if nasty else "weird", Status.FAIL, 0.5, {"error_histogram": _histogram(50)}),
        _set(
            "spectrum",
            Status.WARN,
            0.0,
            {
                "values": {
                    "forward.sv_min": [0.1 * (i + 1) for i in range(50)],
                    "inverse.sv_max": [10.0 ** (i / 10) for i in range(50)],
                }
            },
        ),
        _set(
            "attack", Status.PASS, 0.0, {"curve": {"step": [0, 10, 20, 30], "rel_error": [1e-7, 1e-5, 1e-2, math.inf]}}
        ),
        _set(
            "blocks",
            Status.PASS,
            0.0,
            {"blocks": {"name": ["coupling.0", "coupling.1", "actnorm"], "lipschitz_inverse": [1.5, 40.0, 2.0]}},
        ),
        _set("checkerboard", Status.PASS, 0.0, {"grid": grid}),
        _set(
            "witness",
            Status.FAIL,
            1.0,
            {
                "images": {
                    "x": [[0.0, 1.0], [0.5, 0.25]],
                    "x_prime": [[0.0, 1.0], [0.5, 0.3]],
                    "reconstruction": [[math.nan, 1.0], [0.5, 0.25]],
                }
            },
            waiver={"reason": "tracked in #1", "expires": "2020-01-01", "expired": True, "waived_status": "fail"},
        ),
        _set(
            "waived",
            Status.PASS,
            0.2,
            {},
            waiver={"reason": "known <b>issue</b>", "expires": "2999-01-01", "expired": False, "waived_status": "fail"},
        ),
    )
    audits = (
        AuditResult("roundtrip", "Round trip", Status.FAIL, "uniform failed", 1.23456, 7, sets),
        AuditResult(
            "spectrum",
            "Spectrum",
            Status.ERROR,
            "the audit crashed: RuntimeError: boom",
            0.5,
            8,
            error="RuntimeError: boom",
        ),
        AuditResult("attack", "Attack", Status.SKIP, "no gradient", 0.0, 9),
    )
    return Report(
        tool={"name": "innaudit", "version": "0.1.0"},
        run={
            "seed": 0,
            "device": "cpu",
            "dtype": "float32",
            "versions": {"torch": "x"},
            "config": {},
            "started_at": "2025-01-01T00:00:00Z",
            "duration_s": 3.21,
        },
        target={"model": NASTY if nasty else "model.pt", "sha256": "0" * 64, "loader": "native", "latent_shape": [2]},
        audits=audits,
        warnings=("waiver roundtrip/witness expired on 2020-01-01",),
    )


def with_baseline(report: Report, gate: bool = True) -> Report:
    """``report`` compared with a copy of itself whose metrics were better (so some regress)."""
    from dataclasses import replace

    better = []
    for a in report.audits:
        results = tuple(replace(r, metrics={**r.metrics, "nonfinite_fraction": 0.0}) for r in a.results)
        better.append(replace(a, results=results))
    base = replace(report, audits=tuple(better))
    return replace(report, comparison=compare(base, report, metric_table(), gate=gate, base_name="base.json"))


def _rt(name: str, nonfinite: float, latent: float, rel_max: float, n: int = 500) -> SetResult:
    checks = (
        Check("nonfinite_fraction", nonfinite, None, 0.0, Status.FAIL if nonfinite > 0 else Status.PASS),
        Check(
            "rel_error_l2.max",
            rel_max,
            1e-4,
            1e-2,
            Status.FAIL if not rel_max <= 1e-2 else Status.WARN if rel_max > 1e-4 else Status.PASS,
        ),
    )
    status = max((c.status for c in checks), key=lambda s: s.rank)
    metrics = {
        "n": n,
        "nonfinite_fraction": nonfinite,
        "latent_nonfinite_fraction": latent,
        "rel_error_l2": {"median": 1e-7, "p99": 1e-6, "max": rel_max, "mean": 2e-7},
    }
    return SetResult(name, status, metrics, checks)


def diagnosable_report(float64: bool = False) -> Report:
    """An affine flow as the shipped one fails: fine on its data, broken on noise, with a culprit.

    Round trips pass on ``digits:test`` and fail on ``uniform`` (67.6 % of 500 non-finite, 50.0 %
    already in the latent) and ``gaussian``; the attack breaks 6.2 % of 32 points (random search
    none); sampling passes; ``layers`` names block ``7:Coupling[7]``; ``spectrum`` measures
    sigma_min 1e-23 on uniform; ``bounds`` is skipped for the affine coupling.
    """
    uniform = _rt("uniform", 0.676, 0.5, math.nan)
    if float64:
        uniform = SetResult(
            uniform.dataset, uniform.status, {**uniform.metrics, "float64": {"nonfinite_fraction": 0.0}}, uniform.checks
        )
    attack = SetResult(
        "digits:test",
        Status.FAIL,
        {
            "n": 32,
            "epsilon": 0.03125,
            "nonfinite_fraction": 0.0625,
            "fraction_above_threshold": 0.0,
            "random_search": {"nonfinite_fraction": 0.0, "fraction_above_threshold": 0.0},
            "rel_error_l2": {"max": math.inf},
        },
        (Check("nonfinite_fraction", 0.0625, None, 0.0, Status.FAIL),),
    )
    layers = tuple(
        SetResult(
            name,
            Status.FAIL if culprit else Status.PASS,
            {
                "n": 2,
                "blocks": 16,
                "culprit": culprit,
                "culprit_index": 7 if culprit else -1,
                "nonfinite_fraction": 1.0 if culprit else 0.0,
                "block_rel_error": {"max": math.inf if culprit else 1e-7},
                "scale_min": 0.0 if culprit else 0.5,
            },
            (Check("nonfinite_fraction", 1.0 if culprit else 0.0, None, 0.0, Status.FAIL if culprit else Status.PASS),),
        )
        for name, culprit in (("digits:test", ""), ("uniform", "7:Coupling[7]"))
    )
    spectrum = SetResult(
        "uniform",
        Status.WARN,
        {"n": 64, "nonfinite_fraction": 0.0, "condition": {"max": 3e22}, "forward": {"sv_min": {"min": 1e-23}}},
        (Check("condition.max", 3e22, 1e3, None, Status.WARN),),
    )
    sampling = SetResult(
        "prior@T=1",
        Status.PASS,
        {"n": 500, "nonfinite_fraction": 0.0, "rel_error_l2": {"max": 2e-6}},
        (Check("nonfinite_fraction", 0.0, None, 0.0, Status.PASS),),
    )
    audits = (
        AuditResult(
            "roundtrip",
            "Round trip",
            Status.FAIL,
            "",
            1.0,
            1,
            (_rt("digits:test", 0.0, 0.0, 6e-7, 360), uniform, _rt("gaussian", 0.02, 0.0, 0.3)),
        ),
        AuditResult("sampling", "Sampling", Status.PASS, "", 1.0, 2, (sampling,)),
        AuditResult("attack", "Attack", Status.FAIL, "", 1.0, 3, (attack,)),
        AuditResult("spectrum", "Spectrum", Status.WARN, "", 1.0, 4, (spectrum,)),
        AuditResult(
            "bounds",
            "Bounds",
            Status.SKIP,
            "no certified global bound: block 1:Coupling[1]: affine "
            "coupling (exp scale) has no global bound: only locally bi-Lipschitz",
            0.0,
            5,
        ),
        AuditResult("layers", "Layers", Status.FAIL, "", 1.0, 6, layers),
    )
    datasets = [
        {"name": "digits:test", "role": "in-distribution"},
        {"name": "uniform", "role": "ood"},
        {"name": "gaussian", "role": "ood"},
    ]
    return Report(
        tool={"name": "innaudit", "version": "0.1.0"},
        run={
            "seed": 0,
            "device": "cpu",
            "dtype": "float32",
            "datasets": datasets,
            "config": {},
            "started_at": "2025-01-01T00:00:00Z",
            "duration_s": 3.0,
        },
        target={
            "model": "flow.pt",
            "sha256": "1" * 64,
            "loader": "native",
            "latent_shape": [64],
            "info": {"domain": {"shape": [1, 8, 8], "low": 0.0, "high": 1.0, "levels": 17}},
        },
        audits=audits,
    )
