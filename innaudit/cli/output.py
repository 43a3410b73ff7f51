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
        target = Path(path) if sep and path != "-" else None  # FORMAT=- is stdout
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
            text = console.render(report, color=path is None and color(), width=width(),
                                  verbose=STATE["verbose"] > 0)
        else:
            text = RENDERERS[fmt](report)
        if path is None:
            if not quiet:
                click.echo(text, nl=False, color=True if fmt == "console" and color() else None)
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
    """The terminal's width as rich detects it (``COLUMNS`` honoured; 80 when not a terminal)."""
    from rich.console import Console

    return Console(file=sys.stdout).width


# -- progress --------------------------------------------------------------------------------
class ProgressObserver:
    """Draws one rich progress bar per (audit, set) on stderr."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=True,
                                 disable=not enabled)
        self.tasks: dict[tuple[str, str], Any] = {}

    def __enter__(self) -> ProgressObserver:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def run_started(self, header: Any) -> None:
        pass

    def audit_started(self, audit_id: str, title: str) -> None:
        pass

    def progress(self, audit_id: str, dataset: str, done: int, total: int) -> None:
        key = (audit_id, dataset)
        if key not in self.tasks:
            self.tasks[key] = self.bars.add_task(f"{audit_id} {dataset}", total=total)
        self.bars.update(self.tasks[key], completed=done)

    def audit_finished(self, result: Any) -> None:
        pass


