"""Pieces the text renderers share: number formatting, worst-first rows, failing-check notes,
and the human wording of a gate check ("70.0 % of 500 round trips with a NaN or Inf (limit 0 %)").

The wording comes from the metric declarations (:mod:`innaudit.core.metrics`): a rate is written as a
share of the set's ``n``, a limit is worded by the metric's direction. The declarations are read
from the audit registry lazily, on the first call of :func:`declarations`, so importing a
renderer imports no audit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from innaudit.core.metrics import Direction, Metric, MetricTable, declared, percent
from innaudit.core.results import AuditResult, Check, Report, SetResult, Status, lookup
from innaudit.verdict.diagnosis import budget_cut

__all__ = [
    "Finding",
    "Row",
    "check_text",
    "cut_text",
    "declarations",
    "findings",
    "fmt",
    "interval_text",
    "limit_text",
    "metric_label",
    "note",
    "percent",
    "rate_text",
    "rows",
    "set_findings",
    "verdict_reason",
]


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


def _rate_doc(audit: str, path: str) -> str:
    from innaudit.audits import metric_table
    from innaudit.core.metrics import declared

    metric = declared(metric_table(), audit, path)
    return metric.doc if metric is not None and metric.doc else path


def interval_text(result: SetResult, path: str, audit: str | None = None, short: bool = False) -> str:
    """A rate as a count with its 95 % interval: ``0 of 1,000 non-finite (< 0.37 %)``.

    ``audit`` names the audit whose declaration supplies the words (none when ``audit`` is
    None); ``short`` gives a table cell, ``0/1,000 <0.37%`` or ``100/200 43-57%``. Empty when
    ``result`` holds no interval for ``path``.
    """
    value, n = lookup(result.metrics, path), result.metrics.get("n")
    if path not in result.intervals or not isinstance(value, (int, float)) or not isinstance(n, int):
        return ""
    if not math.isfinite(value):  # only a tampered report holds a non-finite rate with an interval
        return ""
    low, high = result.intervals[path]
    k = round(value * n)
    if short:
        span = (
            f"<{percent(high)}" if k == 0 else f">{percent(low)}" if k == n else f"{percent(low)[:-2]}-{percent(high)}"
        )
        return f"{k:,}/{n:,} {span.replace(' ', '')}"
    words = f" {_rate_doc(audit, path)}" if audit is not None else ""
    if k == 0:
        bound = f"< {percent(high)}"
    elif k == n:
        bound = f"> {percent(low)}"
    else:
        bound = f"{percent(value)}, 95 % CI {percent(low)} to {percent(high)}"
    return f"{k:,} of {n:,}{words} ({bound})"


def note(audit: AuditResult, result: SetResult) -> str:
    """A set's findings in one line, as the findings list words them (:func:`set_findings`:
    each failing or warning check with its limit, the waiver), then the set's message."""
    texts = [f.text for f in set_findings(audit, result)]
    if result.message and result.message not in texts:
        texts.append(result.message)
    return "; ".join(texts)


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
        return note(self.audit, self.result) if self.result is not None else self.audit.message


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
        parts.append(
            f"{len(comparison.regressions)} metric(s) regressed against the baseline"
            + (" (gated)" if comparison.gate else "")
        )
    if comparison is not None and comparison.gate and comparison.missing:
        parts.append(f"{len(comparison.missing)} metric(s) of the baseline not measured again (gated)")
    return "; ".join(parts) if parts else "every audit passed its thresholds"


# -- human wording ---------------------------------------------------------------------------
LABELS = {
    "rel_error_l2": "relative round-trip error",
    "error_l2": "round-trip error",
    "condition": "condition number",
    "block_rel_error": "per-block relative round-trip error",
    "block_condition": "per-block condition number",
    "rel_error": "relative log-det error",
    "error": "error",
    "sv_min": "smallest singular value",
    "sv_max": "largest singular value",
    "max_log10_gap": "forward/inverse spectrum gap (log10)",
    "scale_min": "smallest coupling scale",
}
"""Short names of common metric leaves; anything else is named by its declaration's doc."""

AUDIT_LABELS = {"gradient": {"rel_error_l2": "relative gradient error", "error_l2": "gradient error"}}
"""Leaves that mean something else in one audit (the gradient audit's errors are of gradients)."""

STAT_WORDS = {"max": "max", "min": "min", "median": "median", "p99": "p99", "mean": "mean"}


@lru_cache(maxsize=1)
def _registry_table() -> MetricTable:
    from innaudit.audits import metric_table

    return metric_table()


def declarations() -> MetricTable:
    """``{audit id: {path: Metric}}`` of the registered audits (imported on first use)."""
    return _registry_table()


def limit_text(bound: float | None, direction: Direction, warn: bool, as_percent: bool) -> str:
    """``limit 0 %`` / ``minimum 0.9`` (fail) or ``warns above 1e-04`` (warn), by direction.

    With no bound (a NaN fails whatever the bounds): ``a NaN fails``.
    """
    if bound is None or math.isnan(bound):
        return "a NaN fails"
    shown = percent(bound, exact=True) if as_percent else fmt(bound)
    higher_better = direction is Direction.HIGHER_BETTER
    if warn:
        return f"warns {'below' if higher_better else 'above'} {shown}"
    return f"{'minimum' if higher_better else 'limit'} {shown}"


def rate_text(value: float, n: Any, what: str, limit: str = "", interval: tuple[float, float] | None = None) -> str:
    """A rate in words: ``67.6 % of 500 samples non-finite (limit 0 %)``.

    Args:
        value: the share in [0, 1].
        n: the number of samples it is a share of (omitted from the text when not a number).
        what: what was counted, a plural noun phrase ("round trips with a NaN or Inf").
        limit: the bound in words (:func:`limit_text`), "" for none.
        interval: an optional 95 % interval ``(lo, hi)`` of the share, shown after the value.
    """
    shown = percent(value)
    if interval is not None:
        shown += f" [95 % {percent(interval[0])}, {percent(interval[1])}]"
    count = f" of {n}" if isinstance(n, int) and not isinstance(n, bool) else ""
    tail = f" ({limit})" if limit else ""
    return f"{shown}{count} {what}{tail}"


def metric_label(path: str, metric: Metric | None, audit: str = "") -> str:
    """A metric of ``audit`` in words: ``max relative round-trip error``, else its doc, else its path."""
    head, _, stat = path.rpartition(".")
    base, named = (head, stat) if stat in STAT_WORDS and head else (path, "")
    leaf = base.rpartition(".")[2]
    word = (
        AUDIT_LABELS.get(audit, {}).get(leaf)
        or LABELS.get(leaf)
        or (metric.doc if metric is not None and metric.doc else base)
    )
    if base.startswith(("forward.", "inverse.")):
        word += f" of {base.split('.')[0]} J"
    if base.startswith("float64."):
        word += " in float64"
    return f"{STAT_WORDS[named]} {word}" if named else word


def check_text(
    audit: str,
    check: Check,
    metrics: Mapping[str, Any],
    table: MetricTable | None = None,
    interval: tuple[float, float] | None = None,
) -> str:
    """A failing or warning check in words, with its value and the bound it crossed."""
    table = declarations() if table is None else table
    metric = declared(table, audit, check.metric)
    direction = metric.direction if metric is not None else check.direction
    warn = check.status is Status.WARN
    bound = check.warn if warn else check.fail
    if bound is None and not math.isnan(check.value):  # crossed the other bound
        warn, bound = not warn, check.fail if warn else check.warn
    is_rate = metric is not None and metric.rate
    limit = limit_text(bound, direction, warn, is_rate)
    if is_rate and not math.isnan(check.value):
        assert metric is not None
        return rate_text(check.value, metrics.get("n"), metric.doc or check.metric, limit, interval)
    if math.isnan(check.value):
        return f"{metric_label(check.metric, metric, audit)} could not be computed (nan; {limit})"
    return f"{metric_label(check.metric, metric, audit)} {fmt(check.value)} ({limit})"


@dataclass(frozen=True)
class Finding:
    """One line of the findings list: a failing or warning check, a message, a waiver, an error."""

    status: Status
    audit: str
    dataset: str
    text: str
    metric: str = ""
    """The metric path ("" for messages and errors); shown with ``-v`` and as an HTML title."""
    label: str = ""
    """Shown instead of the status when set (``WAIVED``, ``EXPIRED``, ``CUT``)."""

    @property
    def tag(self) -> str:
        """``FAIL``, ``WARN``, ``ERROR``, ``WAIVED``, ``EXPIRED`` or ``CUT``."""
        return self.label or self.status.value.upper()

    @property
    def where(self) -> str:
        """``audit[set]`` or ``audit``."""
        return f"{self.audit}[{self.dataset}]" if self.dataset else self.audit


def _interval(result: SetResult, metric: str) -> tuple[float, float] | None:
    """The set's 95 % interval of a rate, when the run recorded one (``SetResult.intervals``)."""
    found = (getattr(result, "intervals", None) or {}).get(metric)
    if isinstance(found, (list, tuple)) and len(found) == 2 and all(isinstance(v, (int, float)) for v in found):
        return float(found[0]), float(found[1])
    return None


def set_findings(audit: AuditResult, result: SetResult, table: MetricTable | None = None) -> list[Finding]:
    """The failing and warning checks of one set in words, then its waiver (or its message)."""
    table = declarations() if table is None else table
    out = [
        Finding(
            c.status,
            audit.id,
            result.dataset,
            check_text(audit.id, c, result.metrics, table, _interval(result, c.metric)),
            c.metric,
        )
        for c in result.checks
        if c.status in (Status.FAIL, Status.WARN)
    ]
    if result.waiver:
        w = result.waiver
        was = w.waived_status.value.upper()
        text = (
            f"{was} waiver expired on {w.expires}: {w.reason}"
            if w.expired
            else f"{was} waived until {w.expires}: {w.reason}"
        )
        out.append(Finding(result.status, audit.id, result.dataset, text, label="EXPIRED" if w.expired else "WAIVED"))
    if result.status is not Status.PASS and not out and result.message:
        out.append(Finding(result.status, audit.id, result.dataset, result.message))
    return out


def cut_text(cut: str) -> str:
    """What a budget cut means for the audit's verdict, in words."""
    return f"--budget cut this audit ({cut}): its verdict rests on fewer samples or steps than asked"


def findings(report: Report, table: MetricTable | None = None) -> list[Finding]:
    """Every failing/warning check, waiver and audit error, in report order (worst first per
    set), and a ``CUT`` line for each audit a ``--budget`` cut (``run.plan``)."""
    table = declarations() if table is None else table
    cuts = budget_cut(report)
    out: list[Finding] = []
    for audit in report.audits:
        if audit.id in cuts:
            out.append(Finding(audit.status, audit.id, "", cut_text(cuts[audit.id]), label="CUT"))
        if audit.status in (Status.ERROR, Status.SKIP) and not audit.results:
            out.append(Finding(audit.status, audit.id, "", audit.error or audit.message))
        for result in audit.results:
            out += sorted(set_findings(audit, result, table), key=lambda f: -f.status.rank)
    return out
