"""The baseline comparison as a console table (the other formats draw their own)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from innaudit.core.results import Change, Comparison
from innaudit.render.common import fmt

__all__ = ["STYLE", "table"]

STYLE = {
    Change.REGRESSED: "bold red",
    Change.IMPROVED: "green",
    Change.UNCHANGED: "dim",
    Change.NEW: "cyan",
    Change.MISSING: "yellow",
}
MAX_ROWS = 60


def _rel(base: float | None, new: float | None) -> str:
    if base is None or new is None or base == 0 or base != base or new != new:
        return ""
    change = (new - base) / abs(base)
    return "" if change != change or abs(change) == float("inf") else f"{change:+.0%}"


def table(comparison: Comparison, show_unchanged: bool = False) -> Table:
    """Every changed metric (worst first), with base, new and the relative change."""
    counts = ", ".join(f"{n} {c}" for c, n in comparison.counts.items() if n) or "nothing compared"
    title = (
        f"against baseline {escape(comparison.base)}: {counts} "
        f"(tol = max(|base| x {fmt(comparison.rel_tol)}, {fmt(comparison.abs_tol)}); "
        "^ marks a metric that is better when higher)"
    )
    out = Table(title=title, title_justify="left", box=None)
    for name in ("change", "audit", "set", "metric", "base", "new", "rel"):
        # numbers, the change and the metric never wrap; audit and set names fold
        out.add_column(
            name,
            justify="right" if name in ("base", "new", "rel") else "left",
            no_wrap=name not in ("audit", "set"),
            overflow="fold",
        )
    shown = [d for d in comparison.deltas if show_unchanged or d.change is not Change.UNCHANGED]
    for d in shown[:MAX_ROWS]:
        out.add_row(
            f"[{STYLE[d.change]}]{d.change.value}[/]",
            escape(d.audit),
            escape(d.dataset),
            escape(d.metric) + (" ^" if d.higher_is_better else ""),
            fmt(d.base),
            fmt(d.new),
            _rel(d.base, d.new),
        )
    if len(shown) > MAX_ROWS:
        out.add_row("", f"... {len(shown) - MAX_ROWS} more", "", "", "", "", "")
    return out
