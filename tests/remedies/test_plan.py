"""The plan when two rules call for one remedy: it is applied once, floored when the
collapsed-scale rule chose it, and judged on the evidence of both."""

from __future__ import annotations

from innaudit.remedies.evidence import Evidence
from innaudit.remedies.plan import Choice, Plan
from innaudit.remedies.rules import BOUNDED_SCALE, COLLAPSED, FD, Finding

NOISE = Evidence("roundtrip", "uniform", "nonfinite_fraction", 0.3)
GRADIENT = Evidence("gradient", "digits:test", "nonfinite_fraction", 0.5)


def _plan(collapsed_reason: str = "") -> Plan:
    return Plan(
        (
            Choice(Finding(BOUNDED_SCALE, "ood_explodes", "", (NOISE,))),
            Choice(Finding(BOUNDED_SCALE, COLLAPSED, "", (GRADIENT,)), collapsed_reason),
            Choice(Finding(FD, "local_failure", "", (GRADIENT,))),
        )
    )


def test_a_remedy_two_rules_chose_is_applied_once_and_judged_on_both_rules_evidence() -> None:
    plan = _plan()
    assert plan.chosen == (BOUNDED_SCALE, FD)
    assert plan.floored
    assert plan.evidence(BOUNDED_SCALE) == (NOISE, GRADIENT) and plan.evidence(FD) == (GRADIENT,)


def test_the_bound_is_floored_only_when_the_collapsed_scale_rule_chose_it() -> None:
    plan = _plan(collapsed_reason="no coupling it can bound")
    assert not plan.floored and plan.chosen == (BOUNDED_SCALE, FD)
    assert plan.evidence(BOUNDED_SCALE) == (NOISE,)
    assert not Plan((Choice(Finding(BOUNDED_SCALE, "ood_explodes", "", (NOISE,))),)).floored
