"""The repair rules on hand-made reports: each fires on its evidence, and only on it."""

from __future__ import annotations

import math

from innaudit.remedies.evidence import ReportView
from innaudit.remedies.rules import (
    BOUNDED_SCALE,
    COLLAPSED,
    FD,
    NF,
    PRECISION,
    collapsed_scale,
    float32_only,
    local_failure,
    ood_explodes,
    supervised_collapse,
    wrong_inverse,
)

from .reports import audit, report, roundtrip_set, set_result

HEALTHY = roundtrip_set("digits:test", 0.0, 2e-7, 5e-7)


def view(*audits: object) -> ReportView:
    return ReportView(report(*audits))  # type: ignore[arg-type]


def test_ood_explodes_on_noise_round_trips_and_cites_them() -> None:
    found = ood_explodes(view(audit("roundtrip", HEALTHY, roundtrip_set("uniform", 0.306, 7e-7, 0.47))))
    assert found is not None and found.remedy == BOUNDED_SCALE
    assert [(e.dataset, e.metric, e.value) for e in found.evidence] == [("uniform", "nonfinite_fraction", 0.306)]
    assert "roundtrip[uniform] nonfinite_fraction=0.306" in found.why


def test_ood_explodes_on_a_finite_but_failing_relative_error_and_on_model_samples() -> None:
    finite = roundtrip_set("rademacher", 0.0, 1e-6, 2.7e3)
    samples = set_result("prior@T=1", {"nonfinite_fraction": 0.05}, [("nonfinite_fraction", 0.05)])
    found = ood_explodes(view(audit("roundtrip", HEALTHY, finite), audit("sampling", samples)))
    assert found is not None
    assert [(e.audit, e.dataset, e.metric) for e in found.evidence] == [
        ("roundtrip", "rademacher", "rel_error_l2.max"),
        ("sampling", "prior@T=1", "nonfinite_fraction"),
    ]


def test_ood_explodes_on_a_non_finite_attack_but_not_on_a_finite_one() -> None:
    holes = set_result("digits:test", {"nonfinite_fraction": 0.0625, "fraction_above_threshold": 0.0625})
    found = ood_explodes(view(audit("roundtrip", HEALTHY), audit("attack", holes)))
    assert found is not None and found.remedy == BOUNDED_SCALE
    assert [(e.audit, e.metric, e.value) for e in found.evidence] == [("attack", "nonfinite_fraction", 0.0625)]
    large = set_result("digits:test", {"nonfinite_fraction": 0.0, "fraction_above_threshold": 0.0625})
    assert ood_explodes(view(audit("roundtrip", HEALTHY), audit("attack", large))) is None


def test_ood_explodes_is_silent_when_only_the_data_fails_or_nothing_does() -> None:
    assert ood_explodes(view(audit("roundtrip", HEALTHY, roundtrip_set("uniform", 0.0, 1e-6, 1e-3)))) is None
    assert ood_explodes(view(audit("roundtrip", roundtrip_set("digits:test", 0.01, 1e-6, 0.9)))) is None


def test_local_failure_reads_attack_gradient_data_round_trips_and_spectrum() -> None:
    attack = set_result("digits:test", {"nonfinite_fraction": 0.0625, "fraction_above_threshold": 0.0625})
    gradient = set_result("digits:test", {"nonfinite_fraction": 0.5, "rel_error_l2": {"max": 0.03}})
    spectrum = set_result("digits:test", {"nonfinite_fraction": 0.0, "singular_fraction": 0.03})
    found = local_failure(
        view(
            audit("attack", attack),
            audit("gradient", gradient),
            audit("roundtrip", roundtrip_set("digits:test", 0.0083, 8.5e-7, 0.93)),
            audit("spectrum", spectrum),
        )
    )
    assert found is not None and found.remedy == FD
    assert [(e.audit, e.metric, e.value) for e in found.evidence] == [
        ("attack", "nonfinite_fraction", 0.0625),
        ("gradient", "nonfinite_fraction", 0.5),
        ("roundtrip", "nonfinite_fraction", 0.0083),
        ("spectrum", "singular_fraction", 0.03),
    ]


def test_local_failure_takes_a_condition_warning_on_the_data_but_not_on_noise() -> None:
    from innaudit.core.results import Check, SetResult, Status

    warned = SetResult(
        "digits:test",
        Status.WARN,
        {"nonfinite_fraction": 0.0, "singular_fraction": 0.0, "condition": {"max": 9.4e11}},
        (Check("condition.max", 9.4e11, 1e3, None, Status.WARN),),
    )
    noisy = SetResult("uniform", Status.WARN, dict(warned.metrics), warned.checks)
    found = local_failure(view(audit("spectrum", warned, noisy)))
    assert found is not None and [(e.dataset, e.metric) for e in found.evidence] == [("digits:test", "condition.max")]


def test_a_data_round_trip_wrong_on_the_median_sample_is_not_local_but_the_blocker() -> None:
    wrong = view(audit("roundtrip", roundtrip_set("digits:test", 0.0, 0.2, 0.4)))
    assert local_failure(wrong) is None
    blocker = wrong_inverse(wrong)
    assert blocker is not None and blocker.evidence[0].metric == "rel_error_l2.median"
    assert "code of F^-1" in blocker.why


def test_the_blocker_steps_aside_when_float64_holds() -> None:
    result = roundtrip_set("digits:test", 0.0, 0.1, 0.66)
    held = set_result(
        "digits:test",
        {**result.metrics, "float64": {"nonfinite_fraction": 0.0, "rel_error_l2": {"median": 1e-10, "max": 8e-10}}},
        [("rel_error_l2.max", 0.66)],
    )
    found = view(audit("roundtrip", held))
    assert wrong_inverse(found) is None
    precision = float32_only(found)
    assert precision is not None and precision.remedy == PRECISION
    assert [(e.audit, e.metric) for e in precision.evidence] == [("roundtrip", "rel_error_l2.max")]


def test_float32_only_reads_the_precision_audit_and_skips_a_map_that_breaks_in_float64_too() -> None:
    narrow = set_result("digits:test", {"float64": {"invertible": 1}, "float32": {"invertible": 0}})
    both = set_result("uniform", {"float64": {"invertible": 0}, "float32": {"invertible": 0}})
    found = float32_only(view(audit("precision", narrow, both)))
    assert found is not None and [(e.dataset, e.metric, e.value) for e in found.evidence] == [
        ("digits:test", "float32.invertible", 0.0)
    ]
    assert float32_only(view(audit("precision", both))) is None


def test_supervised_collapse_carries_the_local_evidence_for_nf() -> None:
    gradient = set_result("digits:test", {"nonfinite_fraction": 0.5})
    found = supervised_collapse(view(audit("gradient", gradient)))
    assert found is not None and found.remedy == NF and found.evidence[0].value == 0.5
    assert supervised_collapse(view(audit("roundtrip", HEALTHY))) is None


def test_an_all_nan_data_set_is_neither_local_nor_a_wrong_inverse() -> None:
    broken = view(audit("roundtrip", roundtrip_set("digits:test", 1.0, math.nan, math.nan)))
    assert local_failure(broken) is None and wrong_inverse(broken) is None


def test_collapsed_scale_reads_the_memory_saving_gradient_and_nothing_else() -> None:
    nonfinite = set_result("digits:test", {"nonfinite_fraction": 0.5}, [("nonfinite_fraction", 0.5)])
    found = collapsed_scale(view(audit("gradient", nonfinite)))
    assert found is not None and (found.remedy, found.rule) == (BOUNDED_SCALE, COLLAPSED)
    assert [(e.audit, e.metric, e.value) for e in found.evidence] == [("gradient", "nonfinite_fraction", 0.5)]
    wrong = set_result(
        "digits:test", {"nonfinite_fraction": 0.0, "rel_error_l2": {"max": 0.03}}, [("rel_error_l2.max", 0.03)]
    )
    assert [e.metric for e in collapsed_scale(view(audit("gradient", wrong))).evidence] == ["rel_error_l2.max"]  # type: ignore[union-attr]
    fine = set_result("digits:test", {"nonfinite_fraction": 0.0, "rel_error_l2": {"max": 4e-5}})
    assert collapsed_scale(view(audit("gradient", fine))) is None
    noise = roundtrip_set("uniform", 0.306, 7e-7, 0.47)  # an overflow off the data is ood_explodes' evidence
    assert collapsed_scale(view(audit("roundtrip", HEALTHY, noise))) is None
