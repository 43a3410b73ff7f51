"""Factory models that misbehave in ways a crash must never hide, loadable by the CLI as
``tests/hardening/hostile_models.py:NAME``.

Each is the well-conditioned linear bijection ``z = W x`` on vectors of shape ``(4,)`` whose
forward is exact; only ``inverse`` misbehaves:

- ``exit0`` / ``exit1``: ``raise SystemExit(0)`` / ``SystemExit(1)`` (a library calling
  ``sys.exit``), which ``except Exception`` does not catch;
- ``os_exit0``: ``os._exit(0)``, which ends the process at once (only isolation can see it);
- ``sleeper``: writes its process id to ``$INNAUDIT_TEST_PID_FILE`` when built, and its inverse
  sleeps for an hour (a hang, for the signal tests);
- ``late_sleeper``: the same, but only its forward on the rademacher set hangs (values exactly
  0 or 1, which the uniform and gaussian noise sets never hold; ``$INNAUDIT_TEST_PID_FILE.hang``
  is written first): the plan (timed on the uniform set) is made and two sets are audited
  before the run hangs;
- ``slow_loader``: the factory itself writes its pid and sleeps for an hour (a slow load);
- ``atexit_exit0``: registers an ``atexit`` handler calling ``os._exit(0)``; its inverse is the
  identity, wrong, so the run fails its gate (exit 1);
- ``segfault``: its inverse reads address 0 (SIGSEGV);
- ``realtime_signal``: its inverse sends itself ``SIGRTMIN+3``, whose default action ends it;
- ``printer``: its forward prints workflow commands and terminal escapes to stdout, from
  Python and from C (``libc`` ``puts``);
- ``generator_exit`` / ``base_exception``: forward raises ``GeneratorExit`` / a
  ``BaseException`` subclass of its own (the shape probe sees it first);
- ``huge_shape``: declares ``input_shape = (10**6, 10**6)``;
- ``c_exit0`` / ``c_underscore_exit0``: its inverse calls the C library's ``exit(0)`` /
  ``_exit(0)`` (no Python guard sees them);
- ``stray_thread``: starts a non-daemon thread that sleeps for an hour;
- ``exit_at_load`` / ``os_exit_at_load``: the factory itself calls ``sys.exit(0)`` /
  ``os._exit(0)``;
- ``alloc_bomb``: its inverse asks torch for 2^45 floats.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

import torch
from torch import Tensor, nn

__all__ = [
    "alloc_bomb",
    "atexit_exit0",
    "base_exception",
    "c_exit0",
    "c_underscore_exit0",
    "exit0",
    "exit1",
    "exit_at_load",
    "generator_exit",
    "huge_shape",
    "late_sleeper",
    "os_exit0",
    "os_exit_at_load",
    "printer",
    "realtime_signal",
    "segfault",
    "sleeper",
    "slow_loader",
    "stray_thread",
]


class _Linear(nn.Module):
    data_range = (0.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = (4,)
        generator = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.eye(4) + 0.1 * torch.randn(4, 4, generator=generator))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x @ self.w.T, torch.linalg.slogdet(self.w)[1].expand(len(x))

    def inverse(self, z: Tensor) -> Tensor:
        return torch.linalg.solve(self.w, z.T).T


class _Exit(_Linear):
    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def inverse(self, z: Tensor) -> Tensor:
        raise SystemExit(self.code)


class _OsExit(_Linear):
    def inverse(self, z: Tensor) -> Tensor:
        os._exit(0)


class _Sleeper(_Linear):
    def __init__(self) -> None:
        super().__init__()
        _mark_pid()

    def inverse(self, z: Tensor) -> Tensor:
        time.sleep(3600)
        return z


def exit0() -> nn.Module:
    """Inverse raises SystemExit(0)."""
    return _Exit(0)


def exit1() -> nn.Module:
    """Inverse raises SystemExit(1)."""
    return _Exit(1)


def os_exit0() -> nn.Module:
    """Inverse calls os._exit(0)."""
    return _OsExit()


def sleeper() -> nn.Module:
    """Inverse hangs; the process id is written to $INNAUDIT_TEST_PID_FILE."""
    return _Sleeper()


def _mark_pid() -> None:
    marker = os.environ.get("INNAUDIT_TEST_PID_FILE")
    if marker:
        with open(marker, "w", encoding="utf-8") as handle:
            handle.write(str(os.getpid()))


class _LateSleeper(_Linear):
    def __init__(self) -> None:
        super().__init__()
        _mark_pid()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if bool(((x == 0) | (x == 1)).any()):  # the rademacher set; uniform noise never hits 0 or 1
            marker = os.environ.get("INNAUDIT_TEST_PID_FILE")
            if marker:  # say that the hang has begun
                with open(marker + ".hang", "w", encoding="utf-8") as handle:
                    handle.write(str(os.getpid()))
            time.sleep(3600)
        return super().forward(x)


class _Identity(_Linear):
    def inverse(self, z: Tensor) -> Tensor:
        return z


class _Segfault(_Linear):
    def inverse(self, z: Tensor) -> Tensor:
        ctypes.string_at(0)
        return z


class _Realtime(_Linear):
    def inverse(self, z: Tensor) -> Tensor:
        os.kill(os.getpid(), signal.SIGRTMIN + 3)
        time.sleep(60)
        return z


class _Printer(_Linear):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        print("::set-output name=verdict::pass")
        print("\x1b]0;pwned\x07##[error]forged by the model")
        sys.stdout.flush()
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.puts(b"::error::from C")
        libc.fflush(None)
        return super().forward(x)


class _Raises(_Linear):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise self.error


class ModelAbort(BaseException):
    """A BaseException of the model's own."""


class _Huge(_Linear):
    def __init__(self) -> None:
        super().__init__()
        self.input_shape = (10**6, 10**6)


def late_sleeper() -> nn.Module:
    """Batches of more than one sample hang; the pid is written to $INNAUDIT_TEST_PID_FILE."""
    return _LateSleeper()


def slow_loader() -> nn.Module:
    """Loading takes an hour; the pid is written to $INNAUDIT_TEST_PID_FILE first."""
    _mark_pid()
    time.sleep(3600)
    return _Linear()


def atexit_exit0() -> nn.Module:
    """A failing model whose atexit handler calls os._exit(0)."""
    atexit.register(os._exit, 0)
    return _Identity()


def segfault() -> nn.Module:
    """Inverse segfaults."""
    return _Segfault()


def realtime_signal() -> nn.Module:
    """Inverse is killed by a real-time signal."""
    return _Realtime()


def printer() -> nn.Module:
    """Forward prints workflow commands and escapes on stdout (Python and C)."""
    return _Printer()


def generator_exit() -> nn.Module:
    """Forward raises GeneratorExit."""
    return _Raises(GeneratorExit("closed"))


def base_exception() -> nn.Module:
    """Forward raises a BaseException subclass."""
    return _Raises(ModelAbort("abort"))


def huge_shape() -> nn.Module:
    """Declares a 10^12-element input."""
    return _Huge()


class _CExit(_Linear):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def inverse(self, z: Tensor) -> Tensor:
        getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), self.name)(0)
        return z


def c_exit0() -> nn.Module:
    """Inverse calls libc exit(0)."""
    return _CExit("exit")


def c_underscore_exit0() -> nn.Module:
    """Inverse calls libc _exit(0)."""
    return _CExit("_exit")


def stray_thread() -> nn.Module:
    """Leaves a non-daemon thread running for an hour."""
    threading.Thread(target=time.sleep, args=(3600,), daemon=False).start()
    return _Linear()


class _AllocBomb(_Linear):
    def inverse(self, z: Tensor) -> Tensor:
        return torch.empty(1 << 45) + z.sum()


def exit_at_load() -> nn.Module:
    """The factory calls sys.exit(0)."""
    sys.exit(0)


def os_exit_at_load() -> nn.Module:
    """The factory calls os._exit(0)."""
    os._exit(0)


def alloc_bomb() -> nn.Module:
    """Inverse allocates 128 TiB."""
    return _AllocBomb()
