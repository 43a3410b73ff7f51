"""Writing reports to stdout and files, colour and width, and the progress bars on stderr."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import UsageError

if TYPE_CHECKING:
    from ..results import Report

__all__ = ["STATE", "ProgressObserver", "color", "err", "parse_outputs", "width", "write_outputs"]

STATE = {"verbose": 0}
"""``-v`` count of the running command, read by the entry point for ``-vv`` tracebacks."""


def err(message: str) -> None:
    """One line on stderr."""
    click.echo(message, err=True)


def parse_outputs(values: Sequence[str]) -> list[tuple[str, Path | None]]:
    from ..render import FORMATS

    outputs: list[tuple[str, Path | None]] = []
    for value in values:
        fmt, sep, path = value.partition("=")
        if fmt not in FORMATS:
            raise UsageError(f"-o {value!r}: format {fmt!r} is unknown; expected one of "
                             f"{', '.join(FORMATS)}, as FORMAT or FORMAT=PATH")
        if sep and not path:
            raise UsageError(f"-o {value!r} names no file; expected FORMAT=PATH")
        target = Path(path) if sep else None
        if target is not None and not (target.parent if str(target.parent) else Path(".")).is_dir():
            raise UsageError(f"-o {value!r}: folder {str(target.parent)!r} does not exist")
        outputs.append((fmt, target))
    if all(path is not None for _, path in outputs):
        outputs.insert(0, ("console", None))  # files as well as, not instead of, the table
    return outputs


def write_outputs(report: Report, outputs: list[tuple[str, Path | None]], quiet: bool) -> None:
    from ..atomic import write_atomic
    from ..render import RENDERERS, console

    for fmt, path in outputs:
        if fmt == "console":
            text = console.render(report, color=path is None and color(), width=width())
        else:
            text = RENDERERS[fmt](report)
        if path is None:
            if not quiet:
                click.echo(text, nl=False)
        else:
            try:
                write_atomic(path, text)
            except OSError as exc:
                raise UsageError(f"cannot write {fmt} report to {str(path)!r}: {exc.strerror}") from None


def color() -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(os.environ.get("FORCE_COLOR")) or sys.stdout.isatty()


def width() -> int:
    try:
        return max(80, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return 120


# -- progress --------------------------------------------------------------------------------
PLAIN_EVERY_S = 10.0
"""Least seconds between two plain progress lines (CI logs)."""


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


class ProgressObserver:
    """Progress on stderr: rich bars with an ETA on a terminal (``mode="bars"``), plain lines
    in a log (``mode="plain"``: at most every :data:`PLAIN_EVERY_S` seconds and at each audit's
    end, ``audit, set, done/total, elapsed, ETA``), or nothing (``"off"``). ``True``/``False``
    mean bars/off, as before."""

    def __init__(self, enabled: bool | str, clock: Any = None) -> None:
        import time

        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.mode = {True: "bars", False: "off"}.get(enabled, enabled) if isinstance(enabled, bool) else enabled
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                             transient=True, disable=self.mode != "bars")
        self.tasks: dict[tuple[str, str], Any] = {}
        self.clock = clock or time.monotonic
        self.start = self.clock()
        self.audit_start = self.start
        self.last_line = -PLAIN_EVERY_S
        self.plan: Any = None
        self.finished: set[str] = set()

    def __enter__(self) -> ProgressObserver:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def plan_ready(self, run: Any) -> None:
        """Keep the live plan (:class:`innaudit.planning.PlanRun`) for the ETA; say so up front
        when an unbudgeted run will be long."""
        from ..planning import LONG_RUN_S

        self.plan, plan = run, run.plan
        if plan.budget_s is None and plan.estimated_s > LONG_RUN_S and self.mode != "off":
            err(f"innaudit: this run is planned to take about {_seconds(plan.estimated_s)}; "
                "add --budget 10m (or any duration) to size the samples to fit, or see --plan")

    def _eta(self, audit_id: str, done: int, total: int) -> float | None:
        """Seconds left: the current set at its pace, then the plan's estimates for the rest."""
        if self.plan is None:
            return None
        elapsed = self.clock() - self.audit_start
        here = elapsed * (total - done) / done if done else 0.0
        rest = sum(a.estimated_s for a in self.plan.current.values()
                   if a.id not in self.finished and a.id != audit_id)
        return here + rest

    def audit_started(self, audit_id: str, title: str) -> None:
        self.audit_start = self.clock()

    def progress(self, audit_id: str, dataset: str, done: int, total: int) -> None:
        if self.mode == "plain":
            now = self.clock()
            if now - self.last_line >= PLAIN_EVERY_S:
                self.last_line = now
                eta = self._eta(audit_id, done, total)
                err(f"innaudit: {audit_id} {dataset} {done}/{total}, elapsed {_seconds(now - self.start)}"
                    + (f", ETA {_seconds(eta)}" if eta is not None else ""))
            return
        key = (audit_id, dataset)
        if key not in self.tasks:
            self.tasks[key] = self.bars.add_task(f"{audit_id} {dataset}", total=total)
        self.bars.update(self.tasks[key], completed=done)

    def audit_finished(self, result: Any) -> None:
        self.finished.add(result.id)
        if self.mode == "plain":
            now = self.clock()
            self.last_line = now
            eta = self._eta(result.id, 1, 1)
            err(f"innaudit: {result.id} done ({result.status.value}) in {_seconds(result.duration_s)}, "
                f"elapsed {_seconds(now - self.start)}" + (f", ETA {_seconds(eta)}" if eta is not None else ""))
