"""The baseline comparison as console text (the other formats draw their own).

One line per changed metric, worst first: ``regressed  roundtrip[uniform] rel_error_l2.max
1.2e-05 -> 3.4e-05 (+183%)``. Lines wrap at spaces to the console's width under a hanging
indent, so a set name or a number is never cut, at 80 columns as at 200.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

from rich.console import Console, ConsoleOptions
from rich.text import Text

from innaudit.core.errors import clean_text
from innaudit.core.metrics import percent
from innaudit.core.results import Change, Comparison, Delta
from innaudit.render.common import fmt

__all__ = ["STYLE", "Lines", "table"]

STYLE = {
    Change.REGRESSED: "bold red",
    Change.IMPROVED: "green",
    Change.UNCHANGED: "dim",
    Change.NEW: "cyan",
    Change.MISSING: "yellow",
}
MAX_ROWS = 60
INDENT = 11
"""The hanging indent: the width of the longest change (``regressed``) and two spaces."""


def _rel(base: float | None, new: float | None) -> str:
    if base is None or new is None or base == 0 or base != base or new != new:
        return ""
    change = (new - base) / abs(base)
    return "" if change != change or abs(change) == float("inf") else percent(change, signed=True)


def _words(d: Delta) -> str:
    rel = _rel(d.base, d.new)
    where = clean_text(f"{d.audit}[{d.dataset}] {d.metric}") + (" ^" if d.higher_is_better else "")
    return f"{where}  {fmt(d.base)} -> {fmt(d.new)}" + (f" ({rel})" if rel else "")


class Lines:
    """A rich renderable: the comparison's title and one line per shown metric, wrapped to the
    width rich renders at."""

    def __init__(self, title: str, rows: list[tuple[Change | None, str]]) -> None:
        self.title = title
        self.rows = rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        width = max(40, options.max_width)
        for line in textwrap.wrap(self.title, width, break_long_words=False, subsequent_indent=" " * INDENT):
            yield Text(line)
        for change, words in self.rows:
            label = change.value if change is not None else ""
            lines = textwrap.wrap(words, width - INDENT, break_long_words=False, break_on_hyphens=False) or [""]
            for i, line in enumerate(lines):
                head = (
                    Text(label.ljust(INDENT), style=STYLE[change] if change else "") if i == 0 else Text(" " * INDENT)
                )
                yield Text.assemble(head, line)


def table(comparison: Comparison, show_unchanged: bool = False) -> Lines:
    """Every changed metric (worst first), with base, new and the relative change."""
    counts = ", ".join(f"{n} {c}" for c, n in comparison.counts.items() if n) or "nothing compared"
    title = (
        f"against baseline {clean_text(comparison.base)}: {counts} "
        f"(tol = max(|base| x {fmt(comparison.rel_tol)}, {fmt(comparison.abs_tol)}, the precision's "
        "resolution for errors); ^ marks a metric that is better when higher"
    )
    shown = [d for d in comparison.deltas if show_unchanged or d.change is not Change.UNCHANGED]
    rows: list[tuple[Change | None, str]] = [(d.change, _words(d)) for d in shown[:MAX_ROWS]]
    if len(shown) > MAX_ROWS:
        rows.append((None, f"... {len(shown) - MAX_ROWS} more"))
    return Lines(title, rows)
