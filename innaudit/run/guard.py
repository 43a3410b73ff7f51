"""What model code may not do to the process that audits it: exit, print to stdout, be killed
without a report.

A model runs inside innaudit's own process unless the run is isolated (``--timeout``,
``--max-memory``: :mod:`innaudit.run.child`). Three guards keep a model's side effects from
deciding the outcome there:

- :func:`exits_raise`: ``os._exit(n)`` (also ``posix._exit``) called by Python code of this
  process raises :class:`ModelExit` instead of ending it, so the run's error boundary records it
  like ``sys.exit`` (an ``error``, exit 2) instead of a silent exit 0. A forked child (a data
  loader worker) still exits normally. :func:`c_exit_fails` turns a C-level ``exit(n)`` into
  exit 2. A C-level ``_exit(n)`` (which runs no handler at all), a segfault or an abort is beyond
  any in-process guard: only isolation (:mod:`innaudit.run.child`) sees those.
- :func:`stdout_to_stderr`: while model code runs, ``sys.stdout`` and file descriptor 1 go to
  stderr, each line of Python output sanitized (:func:`~innaudit.core.errors.clean_text`), so a
  model's ``print`` can neither break ``-o json=-`` nor issue a CI workflow command.
- :func:`stopping_on`: SIGTERM and SIGHUP raise :class:`Stopped`, so a run stopped from outside
  ends with its partial report instead of no report at all.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from innaudit.core.errors import clean_text

__all__ = [
    "ModelExit",
    "Stopped",
    "c_exit_fails",
    "exits_raise",
    "real_exit",
    "signal_name",
    "stdout_to_stderr",
    "stopping_on",
]

_REAL_EXIT: Callable[[int], NoReturn] = os._exit


def real_exit(code: int) -> NoReturn:
    """End the process now with ``code``, whatever :func:`exits_raise` put in ``os._exit``."""
    _REAL_EXIT(code)


_C_EXIT_HOOK: list[Any] = []
"""What :func:`c_exit_fails` registered (kept alive for the process's life)."""

_C_EXIT_MESSAGE = b"error: the model ended the process through the C library's exit(); no verdict (exit 2); errno"


def c_exit_fails() -> None:
    """Make a C-level ``exit(n)`` (a model calling libc ``exit`` through ``ctypes`` or an
    extension) end the process with 2 and one line, not with the model's ``n``.

    Two ``atexit(3)`` handlers that are C functions themselves (no Python runs at exit):
    ``perror`` with the message, then ``_exit(2)``. innaudit itself always ends through
    ``_exit``, which runs no handler, so they only run when something else ends the process.
    glibc only (``__cxa_atexit`` passes the argument); elsewhere a no-op. Call it only in the
    process that is the innaudit command.
    """
    if _C_EXIT_HOOK:
        return
    with contextlib.suppress(Exception):
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        register = libc.__cxa_atexit
        register.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
        message = ctypes.create_string_buffer(_C_EXIT_MESSAGE)
        end, say = ctypes.cast(libc._exit, ctypes.c_void_p), ctypes.cast(libc.perror, ctypes.c_void_p)
        if register(end, ctypes.c_void_p(2), None) == 0:  # handlers run last registered first
            _C_EXIT_HOOK.append(message)
            register(say, ctypes.addressof(message), None)


class ModelExit(SystemExit):
    """Code of the audited model called ``os._exit(code)`` in innaudit's process."""

    def __str__(self) -> str:
        return f"os._exit({self.code})"


@contextlib.contextmanager
def exits_raise() -> Iterator[None]:
    """Within the block, ``os._exit`` in this process raises :class:`ModelExit` (see the module
    docstring); another process (a fork) exits as asked."""
    owner = os.getpid()

    def guarded(status: int) -> NoReturn:
        if os.getpid() != owner:
            _REAL_EXIT(status)
        raise ModelExit(status)

    import posix

    saved = (os._exit, posix._exit)
    os._exit = posix._exit = guarded
    try:
        yield
    finally:
        os._exit, posix._exit = saved


class _CleanLines(io.TextIOBase):
    """A text stream that writes each line to ``target`` through :func:`clean_text`."""

    def __init__(self, target: Any) -> None:
        super().__init__()
        self.target = target
        self.pending = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return int(self.target.fileno())

    def write(self, text: str) -> int:
        self.pending += str(text)
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.target.write(clean_text(line, 4000) + "\n")
        if len(self.pending) > 1 << 16:  # a very long line without a newline: cut it here
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.target.write(clean_text(self.pending, 4000) + "\n")
            self.pending = ""
        with contextlib.suppress(Exception):
            self.target.flush()


def _clean_bytes(line: bytes) -> bytes:
    return (clean_text(line.decode("utf-8", errors="replace"), 4000) + "\n").encode("utf-8")


def _pump(read_fd: int, write: Callable[[bytes], Any]) -> None:
    """Copy lines from ``read_fd`` to ``write``, each sanitized, until the pipe closes."""
    pending = b""
    while True:
        try:
            chunk = os.read(read_fd, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            write(_clean_bytes(line))
        if len(pending) > 1 << 16:
            write(_clean_bytes(pending))
            pending = b""
    if pending:
        write(_clean_bytes(pending))
    with contextlib.suppress(OSError):
        os.close(read_fd)


class _FdRedirect:
    """File descriptor 1 pointed at a pipe whose lines a thread writes, sanitized, to fd 2
    (output of C code: ``printf``, ``puts``); :meth:`close` puts fd 1 back."""

    def __init__(self) -> None:
        os.fstat(2)
        self.saved = os.dup(1)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.close(write_fd)
        self.thread = threading.Thread(
            target=_pump, args=(read_fd, lambda data: os.write(2, data)), name="innaudit-stdout", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        _flush_c_streams()  # C stdio buffers go to the pipe, not to the real stdout later
        os.dup2(self.saved, 1)  # the pipe's last write end closes here: the thread sees EOF
        os.close(self.saved)
        self.thread.join(timeout=2.0)  # a child process holding the pipe must not hang the run


def _flush_c_streams() -> None:
    """``fflush(NULL)``: write out every C stdio buffer (best effort, where libc is found)."""
    with contextlib.suppress(Exception):
        import ctypes
        import ctypes.util

        ctypes.CDLL(ctypes.util.find_library("c") or None).fflush(None)


def _fd_redirect() -> _FdRedirect | None:
    try:
        return _FdRedirect()
    except OSError:  # fd 1 or fd 2 is closed: nothing to protect, or nowhere to send it
        return None


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Within the block, Python's ``sys.stdout`` writes sanitized lines to stderr, and so does
    file descriptor 1 (output of C code, through a pipe); both are put back, flushed, at the end."""
    previous = sys.stdout
    with contextlib.suppress(Exception):
        if previous is not None:
            previous.flush()
    redirect = _fd_redirect()
    target = sys.stderr if sys.stderr is not None else io.StringIO()
    sys.stdout = _CleanLines(target)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        sys.stdout = previous
        if redirect is not None:
            redirect.close()


class Stopped(KeyboardInterrupt):
    """A signal (SIGTERM, SIGHUP) asked the run to stop. It is a KeyboardInterrupt, so every
    error boundary of the run lets it through, as it lets Ctrl-C through."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``SIGRTMIN+5`` for a real-time signal; ``signal 99`` otherwise."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        low, high = getattr(signal, "SIGRTMIN", None), getattr(signal, "SIGRTMAX", None)
        if low is not None and high is not None and low <= signum <= high:
            return f"SIGRTMIN+{signum - low}"
        return f"signal {signum}"


def _raise(signum: int, frame: Any) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def stopping_on(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, each of ``signals`` raises :class:`Stopped` (main thread only; a no-op
    elsewhere, where Python cannot install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
