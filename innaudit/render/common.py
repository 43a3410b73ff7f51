"""Pieces the text renderers share: number formatting, worst-first rows, failing-check notes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..results import AuditResult, Report, SetResult, Status

__all__ = ["Row", "fmt", "note", "rate_text", "rows", "verdict_reason"]


def fmt(value: Any, digits: int = 3) -> str:
    """A number as short text (``nan``, ``inf``, ``1.2e-06``); anything else via ``str``."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return str(value)


def _percent(share: float) -> str:
    value = 100 * share
    return f"{value:.1f} %" if value >= 10 else f"{value:.2g} %"


def _rate_doc(audit: str, path: str) -> str:
    from ..audits import metric_table
    from ..metrics import declared

    metric = declared(metric_table(), audit, path)
    return metric.doc if metric is not None and metric.doc else path


def rate_text(result: SetResult, path: str, audit: str | None = None, short: bool = False) -> str:
    """A rate as a count with its 95 % interval: ``0 of 1,000 non-finite (< 0.37 %)``.

    ``audit`` names the audit whose declaration supplies the words (none when ``audit`` is
    None); ``short`` gives a table cell, ``0/1,000 <0.37%`` or ``100/200 43-57%``. Empty when
    ``result`` holds no interval for ``path``.
    """
    from ..intervals import lookup_path

    value, n = lookup_path(result.metrics, path), result.metrics.get("n")
    if path not in result.intervals or not isinstance(value, (int, float)) or not isinstance(n, int):
        return ""
    low, high = result.intervals[path]
    k = round(value * n)
    if short:
        span = f"<{_percent(high)}" if k == 0 else f">{_percent(low)}" if k == n else \
            f"{_percent(low)[:-2]}-{_percent(high)}"
        return f"{k:,}/{n:,} {span.replace(' ', '')}"
    words = f" {_rate_doc(audit, path)}" if audit is not None else ""
    if k == 0:
        bound = f"< {_percent(high)}"
    elif k == n:
        bound = f"> {_percent(low)}"
    else:
        bound = f"{_percent(value)}, 95 % CI {_percent(low)} to {_percent(high)}"
    return f"{k:,} of {n:,}{words} ({bound})"


def note(result: SetResult) -> str:
    """What failed or warned (``metric=value > bound``, a rate with its interval), the message,
    and any waiver."""
    parts = [f"{c.metric}={fmt(c.value)} > {fmt(c.fail if c.status is Status.FAIL else c.warn)}"
             + (f" [{rate_text(result, c.metric)}]" if c.metric in result.intervals else "")
             for c in result.checks if c.status in (Status.FAIL, Status.WARN)]
    if result.message:
        parts.append(result.message)
    if result.waiver:
        w = result.waiver
        state = "EXPIRED waiver" if w.get("expired") else f"waived {w.get('waived_status', '').upper()}"
        parts.append(f"{state} until {w.get('expires')}: {w.get('reason')}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Row:
    """One line of a report: an audit on one set (or an audit without sets)."""

    audit: AuditResult
    result: SetResult | None

    @property
    def status(self) -> Status:
        """The set's status (the audit's when it has no sets)."""
        return self.result.status if self.result is not None else self.audit.status

    @property
    def dataset(self) -> str:
        """The set's name ('' when none)."""
        return self.result.dataset if self.result is not None else ""

    @property
    def text(self) -> str:
        """The note for this row."""
        return note(self.result) if self.result is not None else self.audit.message


def rows(report: Report, worst_first: bool = False) -> list[Row]:
    """Every audit x set (audits without sets as one row), optionally the worst first."""
    out = [Row(a, r) for a in report.audits for r in a.results]
    out += [Row(a, None) for a in report.audits if not a.results]
    if worst_first:
        out.sort(key=lambda row: -row.status.rank)  # stable: registry order within a status
    else:
        order = {a.id: i for i, a in enumerate(report.audits)}
        out.sort(key=lambda row: order[row.audit.id])
    return out


def verdict_reason(report: Report) -> str:
    """One sentence saying why the verdict is what it is."""
    if report.errors:
        return "; ".join(report.errors)
    bad = [r for r in rows(report, worst_first=True) if r.status.rank >= Status.WARN.rank]
    parts = [f"{r.audit.id} on {r.dataset or 'the model'}: {r.status.value}" for r in bad[:5]]
    if len(bad) > 5:
        parts.append(f"and {len(bad) - 5} more")
    comparison = report.comparison
    if comparison is not None and comparison.regressions:
        parts.append(f"{len(comparison.regressions)} metric(s) regressed against the baseline"
                     + (" (gated)" if comparison.gate else ""))
    return "; ".join(parts) if parts else "every audit passed its thresholds"
