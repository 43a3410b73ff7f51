"""A busy machine for the benchmarks: one CPU-bound process per core, started and ended here.

``with busy(n):`` starts ``n`` processes that spin in a Python loop (one per core this process
may use, by default) and ends each of them, by its own process id, when the block exits,
however it exits. Import it from a benchmark: ``from busy import busy, cores``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["busy", "cores"]

SPIN = "while True:\n    pass\n"


def cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def busy(count: int | None = None) -> Iterator[list[int]]:
    """``count`` CPU-bound processes (default: one per core) while the block runs; their pids."""
    procs = [
        subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(cores() if count is None else count)
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
