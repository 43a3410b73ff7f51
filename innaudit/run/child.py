"""Loading and auditing in a child process with a wall-clock limit and a memory limit.

``signal.alarm`` cannot interrupt a long C++ operation, a failed CPU allocation may end in the
kernel's OOM killer, and a hostile file may hang the loader. So
``innaudit run --timeout S --max-memory SIZE`` runs the whole job in a ``spawn``-ed child in its
own process group, with ``RLIMIT_AS`` set, and streams events to the parent::

    ("header", RunHeader)      after the model and the data loaded and the probe passed
    ("threads", dict)          the thread policy's choice (``run.threads``)
    ("plan", dict)             the cost plan (``run.plan``), and again after each audit
    ("progress", id, set, done, total)
    ("audit", AuditResult)     after each audit
    ("done", None)
    ("error", message)         an InnauditError before any audit (bad file, data...)

The parent owns the report: when the time is up, or the child dies, it kills the process group
and builds the report from the audits finished so far, with the audit that was running marked
``error`` and the reason, so a hang or an allocation bomb ends as exit 2 with partial results
(:mod:`innaudit.run.partial`). Time that runs out while the model is still loading gives a
report saying so. The parent never runs model code; it does unpickle the child's events, so
isolation guards against accidents (crashes, hangs, ``os._exit``, memory bombs), not against a
model written to attack innaudit.

Under ``torchrun`` each rank is such a parent: its child inherits the rank's environment
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...) and joins the job's process group, so the children
shard the work among themselves while every parent keeps its own clock. ``--timeout`` is then
the job's wall-clock limit: every rank started with the job, so every parent stops its child
at the same deadline (a child waiting for a stopped peer fails its collective instead of
hanging).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from innaudit.core.distributed import DEFAULT_TIMEOUT_S, join, leave
from innaudit.core.errors import InnauditError, LoadError, clean_text
from innaudit.core.results import AuditResult, Report
from innaudit.run.audits import RunHeader
from innaudit.run.guard import Stopped, signal_name, stdout_to_stderr, stopping_on
from innaudit.run.job import Job, execute
from innaudit.run.partial import Partial

__all__ = ["run_isolated"]

GRACE_S = 2.0


class _Pipe:
    """An Observer that forwards events to the parent, progress at most every 0.1 s per set."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.last: dict[tuple[str, str], float] = {}
        self.plan: Any = None

    def run_started(self, header: RunHeader) -> None:
        _send(self.conn, ("header", header))

    def plan_ready(self, run: Any) -> None:
        self.plan = run
        _send(self.conn, ("threads", run.threads.to_dict()))
        _send(self.conn, ("plan", run.report()))

    def audit_started(self, audit_id: str, title: str) -> None:
        _send(self.conn, ("started", audit_id, title))

    def progress(self, audit_id: str, dataset: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self.last.get((audit_id, dataset), 0.0) > 0.1:
            self.last[(audit_id, dataset)] = now
            _send(self.conn, ("progress", audit_id, dataset, done, total))

    def audit_finished(self, result: AuditResult) -> None:
        _send(self.conn, ("audit", result))
        if self.plan is not None:  # the plan as carried out so far, for a partial report
            _send(self.conn, ("plan", self.plan.report()))


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``), and exit
    at once if the parent is already gone; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != parent_pid:
        os._exit(2)


def _send(conn: Any, event: tuple[Any, ...]) -> None:
    """Send an event; a parent that went away ends the child quietly (no BrokenPipe traceback)."""
    try:
        conn.send(event)
    except (OSError, EOFError, ValueError):
        os._exit(2)


def _child(conn: Any, job: Job, parent_pid: int | None = None, rank_timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Entry point of the child process. It never returns and never prints a traceback: every
    way out (done, a load error, any exception, ``SystemExit`` from a library) is one event for
    the parent, then ``os._exit``."""
    os.setsid()
    _die_with_parent(parent_pid if parent_pid is not None else os.getppid())
    code = 0
    try:
        _job(conn, job, rank_timeout)
    except InnauditError as exc:
        _send(conn, ("error", str(exc)))
    except MemoryError:
        _send(conn, ("error", f"the job ran out of its {job.max_memory} byte memory limit while loading"))
    except Exception as exc:  # never a traceback on the user's terminal, from the child either
        _send(conn, ("error", clean_text(f"internal error in the audit process: {type(exc).__name__}: {exc}", 300)))
    except BaseException as exc:  # SystemExit from a library, a stray KeyboardInterrupt
        _send(conn, ("crash", clean_text(f"the model raised {type(exc).__name__}({exc})", 300)))
        code = 2
    with contextlib.suppress(Exception):
        conn.close()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _job(conn: Any, job: Job, rank_timeout: float) -> None:
    """Set the memory limit, join the ``torchrun`` job if this is one of its ranks, and run."""
    if job.max_memory:
        import resource

        try:
            resource.setrlimit(resource.RLIMIT_AS, (job.max_memory, job.max_memory))
        except (ValueError, OSError) as exc:
            raise InnauditError(
                f"--max-memory {job.max_memory} cannot be set as this process's memory "
                f"limit ({exc}); give a smaller size"
            ) from None
    shard = join(rank_timeout)
    try:
        with stdout_to_stderr():  # the child never writes stdout: a model's print goes to stderr
            execute(job, _Pipe(conn), shard)
    finally:
        leave(shard)
    _send(conn, ("done", None))


def _kill(process: Any, signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to the child's process group, wait :data:`GRACE_S`, then SIGKILL it."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        return
    process.join(GRACE_S)
    if process.is_alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.join()


def run_isolated(job: Job, timeout: float | None, observer: Any, rank_timeout: float = DEFAULT_TIMEOUT_S) -> Report:
    """Run ``job`` in a child; return its Report, or a partial one if it is stopped or dies.

    In a ``torchrun`` job the child joins the process group as this process's rank, its
    collectives timing out after ``rank_timeout`` seconds.

    SIGTERM and SIGHUP sent to this process are forwarded to the child's process group (then
    SIGKILL after :data:`GRACE_S`), and the run ends with the partial report and exit 2, as it
    does when ``timeout`` runs out, also while the model is still loading
    (:class:`~innaudit.run.partial.Partial`); Ctrl-C (KeyboardInterrupt) kills the group the
    same way and stays "interrupted". The child dies with this process (``PR_SET_PDEATHSIG``) if
    this one is killed outright.

    Raises:
        InnauditError: the model or data could not be loaded (the child's one-line message),
            or the child died before the model was loaded.
    """
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(child, job, os.getpid(), rank_timeout), daemon=True)
    deadline = None if timeout is None else _Deadline(time.monotonic() + timeout, timeout)
    state = _State(job)
    signum: int = signal.SIGTERM
    stopped = True
    with stopping_on((signal.SIGTERM, signal.SIGHUP)):
        try:
            process.start()
            child.close()
            reason, stopped = _pump(parent, process, observer, state, deadline)
        except Stopped as exc:
            signum = exc.signum
            reason = f"stopped by {exc}"
        finally:
            _kill(process, signum)
    return state.result(reason, stopped)


class _State(Partial):
    """What the parent has heard so far: a :class:`Partial` fed by the child's events."""

    def __init__(self, job: Job) -> None:
        super().__init__(job)
        self.finished = False
        self.crash: str | None = None

    def handle(self, event: tuple[Any, ...], observer: Any) -> None:
        kind = event[0]
        if kind == "header":
            self.run_started(event[1])
        elif kind == "threads":
            self.threads = event[1]
        elif kind == "plan":
            self.plan = event[1]
        elif kind == "started":
            self.audit_started(event[1], event[2])
            observer.audit_started(event[1], event[2])
        elif kind == "progress":
            observer.progress(*event[1:])
        elif kind == "audit":
            self.audit_finished(event[1])
            observer.audit_finished(event[1])
        elif kind == "done":
            self.finished = True
        elif kind == "error":
            raise InnauditError(event[1])
        elif kind == "crash":
            self.crash = event[1]
            self.finished = True

    def result(self, reason: str | None, stopped: bool) -> Report:
        """The child's report; a partial one when it was stopped or died (exit 2)."""
        from innaudit.run.audits import assemble

        reason = reason or self.crash
        if self.header is None and not (reason and stopped):
            raise LoadError(f"the model could not be loaded: {reason or 'the child process ended early'}")
        if reason:
            return self.report(reason)
        assert self.header is not None
        return assemble(self.header, self.results, ())


@dataclass(frozen=True)
class _Deadline:
    """When the child is stopped (``time.monotonic()``) and the ``--timeout`` that set it."""

    at: float
    seconds: float


def _pump(conn: Any, process: Any, observer: Any, state: _State, deadline: _Deadline | None) -> tuple[str | None, bool]:
    """Read events until done: the reason the run stopped early (or None), and whether it was
    stopped from outside (the deadline) rather than ended by the child itself."""
    while not state.finished:
        wait = None if deadline is None else deadline.at - time.monotonic()
        if deadline is not None and wait is not None and wait <= 0:
            return f"timed out after {deadline.seconds:g} s (--timeout)", True
        if conn.poll(0.2 if wait is None else min(wait, 0.2)):
            try:
                state.handle(conn.recv(), observer)
            except EOFError:
                return _death(process), False
        elif not process.is_alive() and not conn.poll(0):
            return _death(process), False
    return None, False


def _death(process: Any) -> str:
    process.join(GRACE_S)
    code = process.exitcode
    if code is not None and code < 0:
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"the audit process was killed by {signal_name(-code)}{hint}"
    return clean_text(f"the audit process exited with code {code} before it finished")
