"""Loading and auditing in a child process with a wall-clock limit and a memory limit.

``signal.alarm`` cannot interrupt a long C++ operation, a failed CPU allocation may end in the
kernel's OOM killer, and a hostile file may hang the loader (``security.md`` 4.4, 4.5). So
``innaudit run --timeout S --max-memory SIZE`` runs the whole job in a ``spawn``-ed child in its
own process group, with ``RLIMIT_AS`` set, and streams events to the parent::

    ("header", RunHeader)      after the model and the data loaded and the probe passed
    ("progress", id, set, done, total)
    ("audit", AuditResult)     after each audit
    ("done", None)
    ("error", message)         an InnauditError before any audit (bad file, data...)

The parent owns the report: when the time is up, or the child dies, it kills the process group
and builds the report from the audits finished so far, with the audit that was running marked
``error`` and the reason, so a hang or an allocation bomb ends as exit 2 with partial results.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from typing import Any

from .errors import InnauditError, LoadError, clean_text
from .orchestration import Job, execute
from .results import AuditResult, Report, Status
from .runner import RunHeader

__all__ = ["run_isolated"]

GRACE_S = 2.0


class _Pipe:
    """An Observer that forwards events to the parent, progress at most every 0.1 s per set."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.last: dict[tuple[str, str], float] = {}

    def run_started(self, header: RunHeader) -> None:
        self.conn.send(("header", header))

    def audit_started(self, audit_id: str, title: str) -> None:
        self.conn.send(("started", audit_id, title))

    def progress(self, audit_id: str, dataset: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self.last.get((audit_id, dataset), 0.0) > 0.1:
            self.last[(audit_id, dataset)] = now
            self.conn.send(("progress", audit_id, dataset, done, total))

    def audit_finished(self, result: AuditResult) -> None:
        self.conn.send(("audit", result))


def _child(conn: Any, job: Job) -> None:
    """Entry point of the child process."""
    os.setsid()
    if job.max_memory:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (job.max_memory, job.max_memory))
    try:
        execute(job, _Pipe(conn))
        conn.send(("done", None))
    except InnauditError as exc:
        conn.send(("error", str(exc)))
    except MemoryError:
        conn.send(("error", f"the job ran out of its {job.max_memory} byte memory limit while loading"))
    except Exception as exc:  # never a traceback on the user's terminal, from the child either
        conn.send(("error", clean_text(f"internal error in the audit process: {type(exc).__name__}: {exc}", 300)))
    finally:
        conn.close()


def _kill(process: Any) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    process.join(GRACE_S)
    if process.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.join()


def run_isolated(job: Job, timeout: float | None, observer: Any) -> Report:
    """Run ``job`` in a child; return its Report, or a partial one if it is stopped or dies.

    Raises:
        InnauditError: the model or data could not be loaded (the child's one-line message),
            or the child was stopped before the first audit started.
    """
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(child, job), daemon=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    process.start()
    child.close()
    state = _State()
    try:
        reason = _pump(parent, process, deadline, observer, state, timeout)
    finally:
        _kill(process)
    return state.report(reason)


class _State:
    """What the parent has heard so far."""

    def __init__(self) -> None:
        self.header: Any = None
        self.results: list[AuditResult] = []
        self.running: tuple[str, str] | None = None
        self.finished = False

    def handle(self, event: tuple[Any, ...], observer: Any) -> None:
        kind = event[0]
        if kind == "header":
            self.header = event[1]
        elif kind == "started":
            self.running = (event[1], event[2])
            observer.audit_started(event[1], event[2])
        elif kind == "progress":
            observer.progress(*event[1:])
        elif kind == "audit":
            self.results.append(event[1])
            self.running = None
            observer.audit_finished(event[1])
        elif kind == "done":
            self.finished = True
        elif kind == "error":
            raise InnauditError(event[1])

    def report(self, reason: str | None) -> Report:
        from .runner import assemble

        if self.header is None:
            raise LoadError(f"the model could not be loaded: {reason or 'the child process ended early'}")
        results = list(self.results)
        if reason and self.running:
            aid, title = self.running
            results.append(AuditResult(aid, title, Status.ERROR, f"stopped: {reason}", 0.0, 0, error=reason))
        return assemble(self.header, results, (f"the run was stopped: {reason}",) if reason else ())


def _pump(conn: Any, process: Any, deadline: float | None, observer: Any, state: _State,
          timeout: float | None) -> str | None:
    """Read events until done; the reason the run stopped early, or None."""
    while not state.finished:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            return f"timed out after {timeout:g} s (--timeout)"
        if conn.poll(0.2 if wait is None else min(wait, 0.2)):
            try:
                state.handle(conn.recv(), observer)
            except EOFError:
                return _death(process)
        elif not process.is_alive() and not conn.poll(0):
            return _death(process)
    return None


def _death(process: Any) -> str:
    process.join(GRACE_S)
    code = process.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"the audit process was killed by {name}{hint}"
    return clean_text(f"the audit process exited with code {code} before it finished")

