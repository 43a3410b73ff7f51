"""Writing reports to stdout and files, colour and width, and the progress bars on stderr."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from innaudit.core.errors import UsageError, clean_text, clean_tree

if TYPE_CHECKING:
    from innaudit.core.results import Report

__all__ = [
    "STATE",
    "ProgressObserver",
    "check_targets",
    "color",
    "err",
    "input_paths",
    "parse_outputs",
    "width",
    "write_outputs",
]

STATE = {"verbose": 0}
"""``-v`` count of the running command, read by the entry point for ``-vv`` tracebacks."""


def err(message: str) -> None:
    """One line on stderr, sanitized (:func:`~innaudit.core.errors.clean_text`): a path or message
    from outside can neither break the line nor carry terminal escapes."""
    click.echo(clean_text(message, 4000), err=True)


def parse_outputs(values: Sequence[str]) -> list[tuple[str, Path | None]]:
    from innaudit.render import FORMATS

    outputs: list[tuple[str, Path | None]] = []
    for value in values:
        fmt, sep, path = value.partition("=")
        if fmt not in FORMATS:
            raise UsageError(
                f"-o {value!r}: format {fmt!r} is unknown; expected one of "
                f"{', '.join(FORMATS)}, as FORMAT or FORMAT=PATH"
            )
        if sep and not path:
            raise UsageError(f"-o {value!r} names no file; expected FORMAT=PATH")
        target = Path(path) if sep and path != "-" else None  # FORMAT=- is stdout
        if target is not None and not (target.parent if str(target.parent) else Path(".")).is_dir():
            raise UsageError(f"-o {value!r}: folder {str(target.parent)!r} does not exist")
        outputs.append((fmt, target))
    if all(path is not None for _, path in outputs):
        outputs.insert(0, ("console", None))  # files as well as, not instead of, the table
    return outputs


TEXT_FORMATS = ("console", "github", "markdown")
"""Formats read by terminals and CI logs: every string of the report is sanitized for them."""


def write_outputs(report: Report, outputs: list[tuple[str, Path | None]], quiet: bool) -> None:
    from innaudit.render import RENDERERS, console
    from innaudit.safeio.atomic import write_target

    clean = clean_tree(report) if any(fmt in TEXT_FORMATS for fmt, _ in outputs) else report
    for fmt, path in outputs:
        shown = clean if fmt in TEXT_FORMATS else report
        if fmt == "console":
            text = console.render(shown, color=path is None and color(), width=width(), verbose=STATE["verbose"] > 0)
        else:
            text = RENDERERS[fmt](shown)
        if path is None:
            if not quiet:
                click.echo(text, nl=False, color=True if fmt == "console" and color() else None)
        else:
            try:
                write_target(path, text)
            except OSError as exc:
                raise UsageError(f"cannot write {fmt} report to {str(path)!r}: {exc.strerror}") from None


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


def _identity(path: Path) -> tuple[object, ...]:
    try:
        info = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", info.st_dev, info.st_ino)


def _check_one(fmt: str, path: Path) -> None:
    """Refuse a target that cannot take a report, before any audit runs."""
    from innaudit.safeio.atomic import direct_target

    where = f"-o {fmt}={clean_text(path, 300)!r}"
    try:
        info: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise UsageError(f"{where}: cannot be checked ({exc.strerror})") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{where} is a folder; expected a file path")
    if direct_target(path):
        if not os.access(path, os.W_OK):
            raise UsageError(f"{where} is a device or FIFO that cannot be written (permission denied)")
        return
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{where} is neither a regular file, a character device nor a FIFO; expected a file path")
    folder = Path(os.path.realpath(path)).parent
    try:  # the report is renamed into place: the folder itself must take a new file
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
    except OSError as exc:
        raise UsageError(
            f"{where}: cannot write in folder {clean_text(folder, 300)!r} ({exc.strerror}); choose a writable folder"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def check_targets(outputs: Sequence[tuple[str, Path | None]], inputs: Sequence[Path] = ()) -> None:
    """Check every ``-o FORMAT=PATH`` before the run: each writable, none an input, none twice.

    A regular file or a new path is written atomically; a character device or FIFO (also
    behind a symlink such as ``/dev/stdout``) is written in place; a symlink to a file keeps the
    link and replaces the file it points to. Raises UsageError (exit 2) for a folder, a socket,
    an unwritable folder, a path given for two formats, or a file this run reads (model,
    weights, data, config): a report must never overwrite what it audits.
    """
    read = {_identity(p): p for p in inputs}
    seen: dict[tuple[object, ...], str] = {}
    for fmt, path in outputs:
        if path is None:
            continue
        _check_one(fmt, path)
        key = _identity(path)
        if key in read:
            raise UsageError(
                f"-o {fmt}={clean_text(path, 300)!r} is {clean_text(read[key], 300)!r}, "
                "an input of this run; write the report elsewhere"
            )
        if key in seen:
            raise UsageError(
                f"-o {fmt}={clean_text(path, 300)!r}: the {seen[key]} report goes to the same "
                "file; give each format its own path"
            )
        seen[key] = fmt


def color() -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(os.environ.get("FORCE_COLOR")) or sys.stdout.isatty()


def width() -> int:
    """The terminal's width as rich detects it (``COLUMNS`` honoured; 80 when not a terminal)."""
    from rich.console import Console

    return Console(file=sys.stdout).width


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
                "add --budget 10m (or any duration) to size the samples to fit, or see --plan"
            )

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
