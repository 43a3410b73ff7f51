"""Metric declarations: what each number an audit produces means, and which way is worse.

Every audit declares, next to its definition, every metric it produces (``Audit.metrics``): its
dotted path in the set's metrics (``rel_error_l2.max``), its :class:`Direction`, its unit, and
whether it is a rate (a share of samples, which carries a confidence interval). The gate, the
baseline comparison, the renderers and the registry test all read this one table, so "is a
smaller ``sv_min`` worse?" is answered in one place.

A ``*`` segment in a declared path matches any one segment (``levels.*.nonfinite_fraction``
declares the per-level shares of a multi-scale latent, ``levels.0.nonfinite_fraction``...).
A declared path also covers its summary statistics: ``forward.sv_min`` declares
``forward.sv_min.min``, ``.median``, ``.p99``, ``.max`` and ``.mean`` (:data:`STATS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "STATS",
    "Direction",
    "Metric",
    "MetricTable",
    "better",
    "covers",
    "declared",
    "direction_of",
    "find",
    "neither",
    "percent",
    "rate",
    "worse",
]

STATS = ("min", "median", "p99", "max", "mean")
"""The per-set summaries of a per-sample quantity; a declared path covers ``path.<stat>``."""


class Direction(str, Enum):
    """Which way a metric moves when the model gets less invertible."""

    HIGHER_WORSE = "higher_worse"
    """Errors, non-finite shares, condition numbers."""
    HIGHER_BETTER = "higher_better"
    """Smallest singular values, smallest scales, converged shares."""
    NEITHER = "neither"
    """Settings and descriptions echoed into the report (sample counts, epsilon, indices)."""


@dataclass(frozen=True)
class Metric:
    """One metric an audit produces.

    Attributes:
        path: the dotted path in a set's metrics (``error_l2.max``).
        direction: which way is worse.
        unit: ``""`` (a plain number), ``"fraction"`` (a share in [0, 1]), ``"rad"``, ``"nats"``...
        rate: a share of ``n`` samples (``n`` in the same set's metrics) that deserves a
            confidence interval; implies ``unit == "fraction"``.
        doc: a few words for renderers ("non-finite round trips").
    """

    path: str
    direction: Direction = Direction.HIGHER_WORSE
    unit: str = ""
    rate: bool = False
    doc: str = ""


MetricTable = Mapping[str, Mapping[str, Metric]]
"""``{audit id: {metric path: Metric}}``, as :func:`innaudit.audits.metric_table` builds it."""


def worse(path: str, unit: str = "", doc: str = "") -> Metric:
    """A metric where higher is worse (errors, condition numbers)."""
    return Metric(path, Direction.HIGHER_WORSE, unit, False, doc)


def better(path: str, unit: str = "", doc: str = "") -> Metric:
    """A metric where higher is better (smallest singular values)."""
    return Metric(path, Direction.HIGHER_BETTER, unit, False, doc)


def neither(path: str, unit: str = "", doc: str = "") -> Metric:
    """A descriptive number with no better direction (sample counts, settings, indices)."""
    return Metric(path, Direction.NEITHER, unit, False, doc)


def rate(path: str, doc: str = "", direction: Direction = Direction.HIGHER_WORSE) -> Metric:
    """A share of the set's ``n`` samples (non-finite share, attack success): gets an interval."""
    return Metric(path, direction, "fraction", True, doc)


def _match(declared_path: str, path: str) -> bool:
    """Equal paths, a ``*`` segment of ``declared_path`` standing for any one segment."""
    if "*" not in declared_path:
        return path == declared_path
    want, got = declared_path.split("."), path.split(".")
    return len(want) == len(got) and all(w in ("*", g) for w, g in zip(want, got, strict=True))


def covers(declared_path: str, path: str) -> bool:
    """Whether a declaration at ``declared_path`` names ``path`` (itself or one of its STATS)."""
    head, _, stat = path.rpartition(".")
    return _match(declared_path, path) or (_match(declared_path, head) and stat in STATS)


def find(metrics: Mapping[str, Metric], path: str) -> Metric | None:
    """The declaration of ``path`` among ``{path: Metric}`` (exact, or the quantity of a summary)."""
    if path in metrics:
        return metrics[path]
    head, _, stat = path.rpartition(".")
    if stat in STATS and head in metrics:
        return metrics[head]
    return next((m for p, m in metrics.items() if "*" in p and covers(p, path)), None)


def declared(table: MetricTable, audit: str, path: str) -> Metric | None:
    """The declaration of ``path`` of ``audit`` in the table, or None."""
    return find(table.get(audit, {}), path)


def direction_of(metrics: Mapping[str, Metric], path: str) -> Direction:
    """The direction of ``path``; an undeclared metric is taken as higher worse (a gate default)."""
    metric = find(metrics, path)
    return Direction.HIGHER_WORSE if metric is None else metric.direction


def percent(value: float, exact: bool = False, signed: bool = False) -> str:
    """A share in [0, 1] as a percentage, the one way innaudit writes one: ``70.0 %``.

    One decimal from 1 % up; below 1 % two significant digits (``0.37 %``, ``0.0012 %``), so a
    non-zero share never reads ``0.0 %``; a share above 99.9 % below 1 is ``>99.9 %``, never
    ``100.0 %``. ``exact`` writes a configured limit as it was given (``0 %``, ``0.5 %``);
    ``signed`` writes a relative change with its sign (``+250.0 %``, ``-3.0 %``).
    """
    if math.isnan(value):
        return "nan"
    if signed:
        size = abs(100 * value)
        return ("+" if value >= 0 else "-") + (f"{size:#.2g} %" if 0 < size < 1 else f"{size:.1f} %")
    if exact:
        return f"{100 * value:g} %"
    if 0 < value < 0.01:
        return f"{100 * value:#.2g} %"
    if 0.999 < value < 1:
        return ">99.9 %"
    return f"{100 * value:.1f} %"
