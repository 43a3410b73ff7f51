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


def _empirical_bounds() -> SetResult:
    """``bounds`` on an exp-scale affine flow: no global bound, the log-scale range measured."""
    row = {
        "name": "1:Coupling[1]",
        "kind": "affine_scale_unbounded",
        "certificate": "empirical",
        "how": "affine coupling (exp scale) has no global bound: only locally bi-Lipschitz",
    }
    return SetResult(
        "digits:test",
        Status.WARN,
        {"n": 8, "blocks": 16, "empirical_blocks": 8, "log_scale": {"min": -3.1, "max": 2.4}},
        series={"blocks": [row]},
    )


def diagnosable_report(float64: bool = False, float64_error: float = 3e-12, float64_nonfinite: float = 0.0) -> Report:
    """An affine flow as the shipped one fails: fine on its data, broken on noise, with a culprit.

    Round trips pass on ``digits:test`` and fail on ``uniform`` (67.6 % of 500 non-finite, 50.0 %
    already in the latent) and ``gaussian``; the attack breaks 6.2 % of 32 points (random search
    none); sampling passes; ``layers`` names block ``7:Coupling[7]``; ``spectrum`` measures
    sigma_min 1e-23 on uniform; ``bounds`` warns: the affine couplings' certificate is empirical. With ``float64``,
    uniform's float64 re-run has ``float64_nonfinite`` non-finite and max relative error
    ``float64_error``.
    """
    uniform = _rt("uniform", 0.676, 0.5, math.nan)
    if float64:
        uniform = SetResult(
            uniform.dataset,
            uniform.status,
            {
                **uniform.metrics,
                "float64": {"nonfinite_fraction": float64_nonfinite, "rel_error_l2": {"max": float64_error}},
            },
            uniform.checks,
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
        AuditResult("bounds", "Bounds", Status.WARN, "", 1.0, 5, (_empirical_bounds(),)),
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


def _judged(audit_id: str, name: str, metrics: dict) -> SetResult:
    """A set of ``audit_id`` held against the audit's default thresholds, as a run holds it."""
    from innaudit.audits import REGISTRY
    from innaudit.core.intervals import rate_intervals
    from innaudit.verdict.gate import judge

    audit = REGISTRY[audit_id]
    status, checks = judge(metrics, audit.thresholds, {m.path: m for m in audit.metrics})
    return SetResult(name, status, metrics, checks, intervals=rate_intervals(metrics, audit.metrics))


LONG_SET = "patches:ood-natural-images-x4"
"""A set name longer than the console's set column (it gets a line of its own)."""


def _default_sets(audit_id: str) -> list[tuple[str, dict]]:
    """Per audit of the default run, its sets and metrics, as the shipped digits-affine gives
    them (rounded), plus one long-named OOD set."""
    rt = lambda nf, rel, n=10000, latent=0.0: {  # noqa: E731
        "n": n,
        "nonfinite_fraction": nf,
        "latent_nonfinite_fraction": latent,
        "rel_error_l2": {"median": 1e-7, "p99": 1e-6, "max": rel, "mean": 2e-7},
    }
    ood = [("uniform", 0.306, 0.466, 0.293), ("gaussian", 0.985, 0.0959, 0.983), ("rademacher", 1.0, math.nan, 1.0)]
    if audit_id == "roundtrip":
        return [
            ("digits:test", rt(0.0, 5.7e-7, 360)),
            *((n, rt(a, b, latent=c)) for n, a, b, c in ood),
            (LONG_SET, rt(0.0, 3e-6, 64)),
        ]
    if audit_id == "sampling":
        return [(f"prior@T={t}", {**rt(0.0, r), "temperature": float(t)}) for t, r in (("1", 5.1e-6), ("0.7", 4.5e-6))]
    if audit_id == "precision":

        def block(nf: float, rel: float) -> dict:
            return {
                "nonfinite_fraction": nf,
                "rel_error_l2": {"median": rel / 10, "max": rel},
                "invertible": int(nf == 0),
            }

        def prec(nf: float, rel: float, low: int) -> dict:
            return {
                "n": 256,
                "lowest_invertible": low,
                "float64": block(0.0, 1e-15),
                "float32": block(nf, rel),
                "required": {"nonfinite_fraction": nf, "rel_error_l2": {"max": rel}},
            }

        return [
            ("digits:test", prec(0.0, 5.7e-7, 1)),
            ("uniform", prec(0.242, 9.5e-4, 0)),
            ("prior@T=1", prec(0.0, 3.2e-6, 1)),
        ]
    if audit_id == "attack":
        return [
            (
                "digits:test",
                {
                    "n": 32,
                    "steps": 200,
                    "epsilon": 0.0294,
                    "nonfinite_fraction": 0.0625,
                    "fraction_above_threshold": 0.0625,
                    "rel_error_l2": {"max": 3e-6},
                    "random_search": {"n": 32, "nonfinite_fraction": 0.0, "fraction_above_threshold": 0.0},
                },
            )
        ]
    if audit_id == "spectrum":

        def spec(nf: float, cond: float, sv: float, singular: float = 0.0) -> dict:
            return {
                "n": 64,
                "nonfinite_fraction": nf,
                "singular_fraction": singular,
                "condition": {"max": cond},
                "forward": {"sv_min": {"min": sv}},
                "cross_check": {"mismatch_fraction": 0.0},
            }

        return [("digits:test", spec(0.0, 425.0, 0.519)), ("uniform", spec(0.344, math.inf, 0.0, 0.05))]
    if audit_id == "bounds":
        return []
    if audit_id == "layers":

        def lay(culprit: str, index: int, err: float) -> dict:
            return {
                "n": 2,
                "blocks": 25,
                "culprit": culprit,
                "culprit_index": index,
                "nonfinite_fraction": 1.0 if index >= 0 else 0.0,
                "block_rel_error": {"max": err},
                "chain_rel_error": {"max": err},
                "scale_min": 0.0 if index >= 0 else 0.3,
            }

        return [("digits:test", lay("", -1, 9.4e-8)), ("uniform", lay("21:Coupling[21]", 21, math.inf))]
    if audit_id == "logdet":

        def ld(nf: float, rel: float) -> dict:
            return {"n": 32, "nonfinite_fraction": nf, "rel_error": {"max": rel}, "reference_failed_fraction": 0.0}

        return [("digits:test", ld(0.0, 2.7e-7)), ("uniform", ld(0.25, 1.9e-3))]
    if audit_id in ("grid", "convergence", "tokens"):
        return []
    if audit_id == "gradient":
        return [
            ("digits:test", {"n": 6, "nonfinite_fraction": 0.0, "rel_error_l2": {"max": 1.7e-7}, "stateful_layers": 0})
        ]
    raise KeyError(f"no default-run sets for audit {audit_id!r}: add them here")


def default_run_report() -> Report:
    """Every registered audit as the default ``innaudit run`` of an 8x8 image flow gives it
    (``bounds``, ``grid`` and ``convergence`` skipped, as for the digits), for the 80-column golden output."""
    from innaudit.audits import REGISTRY

    audits = []
    for i, audit_id in enumerate(REGISTRY):
        sets = tuple(_judged(audit_id, name, metrics) for name, metrics in _default_sets(audit_id))
        if not sets:
            reasons = {
                "grid": "only for 2D models",
                "convergence": "no block inverts iteratively",
                "tokens": "the model has no autoregressive token blocks",
            }
            reason = reasons.get(audit_id, "no certified global bound")
            audits.append(AuditResult(audit_id, audit_id, Status.SKIP, reason, 0.0, i))
            continue
        status = max((s.status for s in sets), key=lambda s: s.rank)
        audits.append(AuditResult(audit_id, audit_id, status, "", 1.0, i, sets))
    names = ["digits:test", "uniform", "gaussian", "rademacher", LONG_SET]
    datasets = [{"name": n, "role": "in-distribution" if n == "digits:test" else "ood"} for n in names]
    return Report(
        tool={"name": "innaudit", "version": "0.1.0"},
        run={"seed": 0, "device": "cpu", "dtype": "float32", "datasets": datasets, "config": {}},
        target={
            "model": "checkpoints/digits-affine.pt",
            "sha256": "5" * 64,
            "loader": "native",
            "latent_shape": [4, 4, 4],
            "info": {"domain": {"shape": [1, 8, 8], "low": 0.0, "high": 1.0, "levels": 17}},
        },
        audits=tuple(audits),
    )
