"""Holding measured metrics against thresholds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .config import Threshold
from .metrics import Direction, Metric, direction_of
from .results import Check, Status, lookup, worst

__all__ = ["judge"]


def _check(metric: str, value: float, threshold: Threshold, direction: Direction) -> Check:
    check = Check(metric, value, threshold.warn, threshold.fail, Status.PASS, direction)
    if math.isnan(value) or (threshold.fail is not None and check.beyond(threshold.fail)):
        return replace(check, status=Status.FAIL)
    if threshold.warn is not None and check.beyond(threshold.warn):
        return replace(check, status=Status.WARN)
    return check


def judge(metrics: Mapping[str, Any], thresholds: Mapping[str, Threshold],
          declarations: Mapping[str, Metric] | None = None) -> tuple[Status, tuple[Check, ...]]:
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
