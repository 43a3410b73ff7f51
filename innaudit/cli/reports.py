"""Saved reports: ``innaudit render``, ``innaudit compare`` and ``run --baseline``."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from innaudit.cli.app import cli
from innaudit.cli.output import check_targets, color, echo, err, input_paths, parse_outputs, width, write_outputs
from innaudit.core.errors import InnauditError, UsageError, clean_text
from innaudit.core.results import Status
from innaudit.render import output_help
from innaudit.verdict.baseline import ABS_TOL, REL_TOL

if TYPE_CHECKING:
    from innaudit.core.results import Comparison, Report

__all__ = ["compare", "compared", "load_baseline", "render"]


def load_baseline(path: str | None, fail_on_regression: bool) -> Report | None:
    """Read ``--baseline`` before any audit runs, so a bad file fails fast (exit 2)."""
    from innaudit.verdict.report_json import load_report

    if path is None:
        if fail_on_regression:
            raise UsageError("--fail-on-regression needs --baseline BASE.json")
        return None
    return load_report(path, "baseline", fractions())


def fractions() -> Callable[[str, str], bool]:
    """``is_fraction(audit, metric)``: whether a metric is declared as a share in [0, 1]."""
    from innaudit.audits import metric_table
    from innaudit.core.metrics import declared

    table = metric_table()

    def is_fraction(audit: str, path: str) -> bool:
        metric = declared(table, audit, path)
        return metric is not None and metric.unit == "fraction"

    return is_fraction


def compared(base: Report, report: Report, base_name: str, rel_tol: float, abs_tol: float, gate: bool) -> Report:
    """``report`` with its comparison against ``base`` (gated when ``gate``)."""
    from dataclasses import replace

    from innaudit.audits import metric_table
    from innaudit.verdict.baseline import compare as compare_reports

    comparison = compare_reports(
        base, report, metric_table(), rel_tol=rel_tol, abs_tol=abs_tol, gate=gate, base_name=base_name
    )
    return replace(report, comparison=comparison)


@cli.command(epilog="Exit codes: 0 written, 2 the report cannot be read or has another schema_version.")
@click.argument("report_path", metavar="REPORT.json")
@click.option(
    "-o",
    "--output",
    "outputs",
    metavar="FORMAT[=PATH]",
    multiple=True,
    help=output_help(),
)
def render(report_path: str, outputs: tuple[str, ...]) -> None:
    """Render a saved JSON report in any format: the same output as the run gave.

    A monitor log (``.jsonl``, from ``innaudit train --monitor-log`` or ``InvertibilityMonitor(log=...)``)
    renders as its timeline: ``-o html=PATH`` or the console summary.
    """
    from innaudit.verdict.report_json import load_report

    if report_path.endswith(".jsonl"):
        from innaudit.cli.timeline import render_timeline

        render_timeline(report_path, outputs)
        return

    targets = parse_outputs(outputs)
    check_targets(targets, input_paths(None, (report_path,), ()))
    report = load_report(report_path, "report", fractions())
    with _read_back(report_path):
        write_outputs(report, targets, quiet=False)


@contextlib.contextmanager
def _read_back(path: str) -> Iterator[None]:
    """A renderer that fails on a report read from a file (past its shape check) says the file
    is not an innaudit report, in one line, naming the failure."""
    try:
        yield
    except InnauditError:
        raise
    except Exception as exc:
        raise UsageError(
            f"report {clean_text(path, 300)!r} is not an innaudit report: rendering it failed "
            f"({clean_text(f'{type(exc).__name__}: {exc}', 200)})"
        ) from None


@cli.command(epilog="Exit codes: 0 no regression gated, 1 a metric regressed and --fail-on-regression, 2 bad input.")
@click.argument("base_path", metavar="BASE.json")
@click.argument("new_path", metavar="NEW.json")
@click.option("--fail-on-regression", is_flag=True, help="Exit 1 when any metric regressed.")
@click.option(
    "--rel-tol",
    type=float,
    default=REL_TOL,
    show_default=True,
    help="Relative tolerance, tol = max(|base| * rel, abs).",
)
@click.option("--abs-tol", type=float, default=ABS_TOL, show_default=True, help="Absolute tolerance.")
@click.option(
    "-o",
    "--output",
    "outputs",
    metavar="FORMAT[=PATH]",
    multiple=True,
    help="The NEW report with the comparison, in any format (repeatable).",
)
def compare(
    base_path: str, new_path: str, fail_on_regression: bool, rel_tol: float, abs_tol: float, outputs: tuple[str, ...]
) -> int:
    """Classify every metric of NEW against BASE: improved, unchanged, regressed, new or missing.

    A NEW report without a trustworthy verdict (status ``error``: an audit crashed, the run was
    stopped) exits 2 whatever its metrics; with ``--fail-on-regression`` a metric of BASE that
    NEW lacks (its audit errored, was skipped or left out) fails the gate like a regression.
    """
    from innaudit.verdict.report_json import load_report

    targets = parse_outputs(outputs)
    check_targets(targets, input_paths(None, (base_path, new_path), ()))
    base, new = load_report(base_path, "baseline", fractions()), load_report(new_path, "report", fractions())
    report = compared(base, new, base_path, rel_tol, abs_tol, fail_on_regression)
    comparison = report.comparison
    assert comparison is not None
    with _read_back(new_path):
        _compare_outputs(report, comparison, targets, outputs)
    counts = ", ".join(f"{n} {c}" for c, n in comparison.counts.items() if n) or "nothing compared"
    if new.status is Status.ERROR:
        problems = (*new.errors, *(f"{a.id}: {a.message}" for a in new.audits if a.status is Status.ERROR))
        err(
            f"innaudit compare: {counts}; but {clean_text(new_path, 300)!r} has no trustworthy verdict "
            f"(status error: {clean_text(problems[0], 300)}), so it cannot pass (exit 2)"
        )
        return 2
    code = 1 if comparison.gate_failed else 0
    from innaudit.render.console import regression_words

    err(f"innaudit compare: {counts} (exit {code}){regression_words(comparison)}")
    return code


def _compare_outputs(
    report: Report, comparison: Comparison, targets: list[tuple[str, Path | None]], outputs: tuple[str, ...]
) -> None:
    """The comparison table on stdout (by default; every name sanitized), or the NEW report
    with the comparison in each asked format."""
    if targets != [("console", None)] and outputs:
        write_outputs(report, targets, quiet=False)
        return
    from rich.console import Console

    from innaudit.core.errors import clean_tree
    from innaudit.render.compare import table

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=color(), no_color=not color(), width=width(), highlight=False)
    console.print(table(clean_tree(comparison)))
    write_outputs(report, [t for t in targets if t != ("console", None)], quiet=False)
    echo(buffer.getvalue(), console=True)
