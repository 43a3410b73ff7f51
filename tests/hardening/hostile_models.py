"""Factory models that misbehave in ways a crash must never hide, loadable by the CLI as
``tests/hardening/hostile_models.py:NAME``.

Each is the well-conditioned linear bijection ``z = W x`` on vectors of shape ``(4,)`` whose
forward is exact; only ``inverse`` misbehaves:

- ``exit0`` / ``exit1``: ``raise SystemExit(0)`` / ``SystemExit(1)`` (a library calling
  ``sys.exit``), which ``except Exception`` does not catch;
- ``os_exit0``: ``os._exit(0)``, which ends the process at once (only isolation can see it);
- ``sleeper``: writes its process id to ``$INNAUDIT_TEST_PID_FILE`` when built, and its inverse
  sleeps for an hour (a hang, for the signal tests).
"""

from __future__ import annotations

import os
import time

import torch
from torch import Tensor, nn

__all__ = ["exit0", "exit1", "os_exit0", "sleeper"]


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
        marker = os.environ.get("INNAUDIT_TEST_PID_FILE")
        if marker:
            with open(marker, "w", encoding="utf-8") as handle:
                handle.write(str(os.getpid()))

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
