"""95 % confidence intervals of rates: how sure a share of ``n`` samples is.

A rate an audit reports (non-finite share, share above a threshold, attack success) is a count
``k`` of ``n`` samples. ``0 of 1,000`` does not say the true rate is 0; it says the true rate is
below about 0.37 % with 95 % confidence. The interval here is Clopper-Pearson's exact binomial
interval (Clopper and Pearson, Biometrika 26(4), 1934): with ``alpha = 0.05``,

    low  = B(alpha / 2;     k,     n - k + 1)   (0 when k = 0)
    high = B(1 - alpha / 2; k + 1, n - k)       (1 when k = n)

where ``B(q; a, b)`` is the ``q`` quantile of the Beta(a, b) distribution. It never undercovers,
and for ``k = 0`` it is ``high = 1 - (alpha / 2)^(1 / n)`` (3.69 / n for large ``n``).

:func:`rate_intervals` finds every rate an audit declared (``innaudit.core.metrics.rate``) in a set's
metrics and returns ``{path: (low, high)}``; the runner stores it in ``SetResult.intervals``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from innaudit.core.metrics import Metric
from innaudit.core.results import lookup

__all__ = ["LEVEL", "clopper_pearson", "rate_intervals"]

LEVEL = 0.95
"""Confidence level of every interval in a report."""


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
            if aa == 0.0:
                break
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the Beta(a, b) distribution function at ``x``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _beta_quantile(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b) by bisection (to about 1e-12)."""
    low, high = 0.0, 1.0
    for _ in range(80):
        mid = 0.5 * (low + high)
        if _betainc(a, b, mid) < q:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact two-sided interval of a binomial share ``k / n`` (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return 0.0, 1.0
    k = min(max(int(k), 0), n)
    alpha = 1.0 - level
    low = 0.0 if k == 0 else _beta_quantile(alpha / 2, k, n - k + 1)
    high = 1.0 if k == n else _beta_quantile(1 - alpha / 2, k + 1, n - k)
    return low, high


def rate_intervals(metrics: Mapping[str, Any], declared: Iterable[Metric]) -> dict[str, tuple[float, float]]:
    """``{path: (low, high)}`` for every declared rate present in ``metrics`` with the set's ``n``.

    ``k = round(rate * n)``; a rate that is not a finite number in [0, 1], or a set without a
    positive integer ``n``, gets no interval.
    """
    n = metrics.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        return {}
    out: dict[str, tuple[float, float]] = {}
    for metric in declared:
        value = lookup(metrics, metric.path) if metric.rate else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            continue
        low, high = clopper_pearson(round(value * n), n)
        out[metric.path] = (float(f"{low:.6g}"), float(f"{high:.6g}"))
    return out
