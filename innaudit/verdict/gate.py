"""Holding measured metrics against thresholds, and applying waivers to the verdict.

Waivers (:mod:`innaudit.config.waivers` parses them from the config) turn a FAIL or WARN of a matching
set into PASS and record what they waived; an ERROR is never waived; an expired or unused
waiver gives a warning.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from innaudit.config import waivers as waivers_module
from innaudit.config.settings import Threshold
from innaudit.config.waivers import Waiver
from innaudit.core.metrics import Direction, Metric, direction_of
from innaudit.core.results import AuditResult, Check, Report, SetResult, Status, WaiverOutcome, lookup, worst

__all__ = ["apply_waivers", "judge"]


def _check(metric: str, value: float, threshold: Threshold, direction: Direction) -> Check:
    check = Check(metric, value, threshold.warn, threshold.fail, Status.PASS, direction)
    if math.isnan(value) or (threshold.fail is not None and check.beyond(threshold.fail)):
        return replace(check, status=Status.FAIL)
    if threshold.warn is not None and check.beyond(threshold.warn):
        return replace(check, status=Status.WARN)
    return check


def judge(
    metrics: Mapping[str, Any], thresholds: Mapping[str, Threshold], declarations: Mapping[str, Metric] | None = None
) -> tuple[Status, tuple[Check, ...]]:
    """Check every thresholded metric present in ``metrics``; the set's status is the worst.

    ``declarations`` (the audit's ``{path: Metric}``) give each metric's direction: a
    higher-better metric fails *below* its limit. A metric that is absent (e.g. ``float64.*``
    without ``--float64-check``) is not checked; a metric that is NaN fails, because a statistic
    that could not be computed cannot pass.
    """
    declarations = declarations or {}
    checks = tuple(
        _check(metric, float(value), threshold, direction_of(declarations, metric))
        for metric, threshold in thresholds.items()
        if isinstance(value := lookup(metrics, metric), (int, float)) and not isinstance(value, bool)
    )
    return worst(tuple(c.status for c in checks)), checks


def _waive(result: SetResult, waiver: Waiver, today: dt.date) -> SetResult:
    expired = today >= waiver.expires
    record = WaiverOutcome(waiver.reason, waiver.expires.isoformat(), expired, result.status)
    return replace(result, status=result.status if expired else Status.PASS, waiver=record)


def _audit(audit: AuditResult, waivers: Sequence[Waiver], today: dt.date, used: set[Waiver]) -> AuditResult:
    results = []
    for r in audit.results:
        match = next((w for w in waivers if w.matches(audit.id, r.dataset)), None)
        if match is not None and r.status in (Status.FAIL, Status.WARN):
            used.add(match)
            r = _waive(r, match, today)
        results.append(r)
    if not any(r.waiver for r in results):
        return audit
    status = audit.status if audit.status is Status.ERROR else worst(tuple(r.status for r in results))
    waived = [r.dataset for r in results if r.waiver and not r.waiver.expired]
    message = audit.message + (f" (waived: {', '.join(waived)})" if waived else "")
    return replace(audit, status=status, results=tuple(results), message=message)


def apply_waivers(report: Report, waivers: Sequence[Waiver], today: dt.date | None = None) -> Report:
    """The report with the waivers applied and a warning for each expired or unused one."""
    if not waivers:
        return report
    today = today or waivers_module.clock()
    used: set[Waiver] = set()
    audits = tuple(_audit(a, waivers, today, used) for a in report.audits)
    notes = []
    for w in waivers:
        if today >= w.expires:
            notes.append(
                f"waiver {w.label} expired on {w.expires.isoformat()} and no longer waives (reason was: {w.reason})"
            )
        elif w not in used:
            notes.append(f"waiver {w.label} matched no failing or warning set; remove it")
    return replace(report, audits=audits, warnings=(*report.warnings, *notes))
