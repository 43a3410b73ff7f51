"""Writing reports to stdout and files, colour and width, and the progress bars on stderr."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from innaudit.core.errors import UsageError, clean_text

if TYPE_CHECKING:
    from innaudit.core.results import Report

__all__ = [
    "STATE",
    "ProgressObserver",
    "check_targets",
    "color",
    "echo",
    "err",
    "input_paths",
    "parse_outputs",
    "width",
    "write_files",
    "write_outputs",
]

STATE = {"verbose": 0}
"""``-v`` count of the running command, read by the entry point for ``-vv`` tracebacks."""


def err(message: str) -> None:
    """One line on stderr, sanitized (:func:`~innaudit.core.errors.clean_text`): a path or message
    from outside can neither break the line nor carry terminal escapes."""
    click.echo(clean_text(message, 4000), err=True)


def parse_outputs(values: Sequence[str], formats: Sequence[str] | None = None) -> list[tuple[str, Path | None]]:
    """``-o FORMAT[=PATH]`` values as ``(format, path)``, path None for stdout (``FORMAT`` or
    ``FORMAT=-``); the console table is added first when every output goes to a file."""
    from innaudit.render import FORMATS

    known = tuple(formats or FORMATS)
    outputs: list[tuple[str, Path | None]] = []
    for value in values:
        fmt, sep, path = value.partition("=")
        if fmt not in known:
            raise UsageError(
                f"-o {value!r}: format {fmt!r} is unknown; expected one of {', '.join(known)}, as FORMAT or FORMAT=PATH"
            )
        if sep and not path:
            raise UsageError(f"-o {value!r} names no file; expected FORMAT=PATH")
        outputs.append((fmt, Path(path) if sep and path != "-" else None))  # FORMAT=- is stdout
    if all(path is not None for _, path in outputs):
        outputs.insert(0, ("console", None))  # files as well as, not instead of, the table
    return outputs


OutputFile = tuple[str, Path, bytes | str]
"""``(what, path, data)``: a file to write besides the reports (the attack's witnesses)."""


def _rendered(report: Report, outputs: list[tuple[str, Path | None]]) -> list[tuple[str, Path | None, str]]:
    """Each output drawn by its renderer record, which sanitizes the report for the terminal
    formats (:class:`innaudit.render.Renderer`): the bytes ``Report.save`` writes too."""
    from innaudit.render import RENDERERS

    style = {"width": width(), "verbose": STATE["verbose"] > 0}
    return [(fmt, path, RENDERERS[fmt](report, color=path is None and color(), **style)) for fmt, path in outputs]


def write_files(files: Iterable[OutputFile]) -> None:
    """Write each file through the one writer (:func:`innaudit.safeio.atomic.write_target`).

    Raises:
        UsageError: a file cannot be written (one line naming it).
    """
    from innaudit.safeio.atomic import write_target

    for what, path, data in files:
        try:
            write_target(path, data)
        except OSError as exc:
            raise UsageError(f"cannot write {what} to {clean_text(path, 300)!r}: {exc.strerror or exc}") from None


def echo(text: str, *, console: bool = False) -> None:
    """``text`` on stdout as it is (lone surrogates escaped); a closed stdout is a UsageError."""
    from innaudit.safeio.atomic import printable

    try:
        click.echo(printable(text), nl=False, color=True if console and color() else None)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot write to stdout: {getattr(exc, 'strerror', None) or exc}") from None


def write_outputs(
    report: Report, outputs: list[tuple[str, Path | None]], quiet: bool, files: Sequence[OutputFile] = ()
) -> None:
    """Render every output, write the files (``files`` too), then print what goes to stdout:
    a write that fails leaves nothing printed that claims a verdict."""
    rendered = _rendered(report, outputs)
    write_files([*((f"{fmt} report", path, text) for fmt, path, text in rendered if path is not None), *files])
    if quiet:
        return
    for fmt, path, text in rendered:
        if path is None:
            echo(text, console=fmt == "console")


def input_paths(model: str | None, files: Iterable[str | None], specs: Iterable[str | None]) -> list[Path]:
    """The files a run reads: MODEL (or the file of ``file.py:callable``), ``files`` as given
    (weights, config, baseline...), and the files named by data SPECs (``[NAME=]x.npz:key``)."""
    from innaudit.data import split_name
    from innaudit.safeio.arrays import split_file_spec

    found = [Path(p) for p in (model, (model or "").rpartition(":")[0], *files) if p]
    for spec in filter(None, specs):
        named = split_file_spec(split_name(spec.strip())[1])
        if named is not None:
            found.append(named[0])
    return [p for p in found if p.exists()]


def check_targets(
    outputs: Sequence[tuple[str, Path | None]],
    inputs: Sequence[Path] = (),
    extra: Sequence[tuple[str, Path]] = (),
    quiet: bool = False,
) -> None:
    """Check every ``-o FORMAT=PATH`` (and ``extra`` targets, labelled) before the command runs:
    each writable, none an input, none twice (:func:`innaudit.safeio.targets.check_targets`).
    An output to stdout needs an open stdout (unless ``quiet``: nothing is printed).

    Raises:
        UsageError: the first target refused, naming it and what to do.
    """
    from innaudit.safeio.targets import check_targets as check

    if not quiet and any(path is None for _, path in outputs) and sys.stdout is None:
        raise UsageError("stdout is closed, but a report goes there; name a file (-o FORMAT=PATH) or pass -q")
    labelled = [(f"-o {fmt}={clean_text(path, 300)!r}", path) for fmt, path in outputs if path is not None]
    check([*labelled, *extra], inputs)


def color() -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(os.environ.get("FORCE_COLOR")) or (sys.stdout is not None and sys.stdout.isatty())


MIN_WIDTH = 40
"""Narrowest console honoured; ``COLUMNS=0`` (or any width below this) means 80."""


def width() -> int:
    """The terminal's width as rich detects it (``COLUMNS`` honoured; 80 when not a terminal,
    and 80 for a width under :data:`MIN_WIDTH`, where no table fits)."""
    from rich.console import Console

    found = Console(file=sys.stdout or sys.stderr).width
    return found if found >= MIN_WIDTH else 80


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
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=self.mode != "bars",
        )
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

    def run_started(self, header: Any) -> None:
        pass

    def plan_ready(self, run: Any) -> None:
        """Keep the live plan (:class:`innaudit.run.plan.PlanRun`) for the ETA; say so up front
        when an unbudgeted run will be long."""
        from innaudit.run.plan import LONG_RUN_S

        self.plan, plan = run, run.plan
        if plan.budget_s is None and plan.estimated_s > LONG_RUN_S and self.mode != "off":
            err(
                f"innaudit: this run is planned to take about {_seconds(plan.estimated_s)}; "
                f"add --budget {int(LONG_RUN_S // 60)}m (or any duration) to size the samples to fit. The plan:"
            )
            for line in run.describe():
                err(f"innaudit:   {line}")

    def _eta(self, audit_id: str, done: int, total: int) -> float | None:
        """Seconds left: the current set at its pace, then the plan's estimates for the rest."""
        if self.plan is None:
            return None
        elapsed = self.clock() - self.audit_start
        here = elapsed * (total - done) / done if done else 0.0
        rest = sum(a.estimated_s for a in self.plan.current.values() if a.id not in self.finished and a.id != audit_id)
        return here + rest

    def audit_started(self, audit_id: str, title: str) -> None:
        self.audit_start = self.clock()

    def progress(self, audit_id: str, dataset: str, done: int, total: int) -> None:
        if self.mode == "plain":
            now = self.clock()
            if now - self.last_line >= PLAIN_EVERY_S:
                self.last_line = now
                eta = self._eta(audit_id, done, total)
                err(
                    f"innaudit: {audit_id} {dataset} {done}/{total}, elapsed {_seconds(now - self.start)}"
                    + (f", ETA {_seconds(eta)}" if eta is not None else "")
                )
            return
        key = (audit_id, dataset)
        if key not in self.tasks:
            from rich.markup import escape

            label = escape(clean_text(f"{audit_id} {dataset}", 60))  # a set name is not markup
            self.tasks[key] = self.bars.add_task(label, total=total)
        self.bars.update(self.tasks[key], completed=done)

    def audit_finished(self, result: Any) -> None:
        self.finished.add(result.id)
        if self.mode == "plain":
            now = self.clock()
            self.last_line = now
            eta = self._eta(result.id, 1, 1)
            err(
                f"innaudit: {result.id} done ({result.status.value}) in {_seconds(result.duration_s)}, "
                f"elapsed {_seconds(now - self.start)}" + (f", ETA {_seconds(eta)}" if eta is not None else "")
            )
