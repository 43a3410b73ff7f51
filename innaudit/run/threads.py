"""The thread policy: how many intra-op threads torch uses for a run, chosen by measurement.

torch starts with one intra-op thread per core. On idle cores that is fastest for large
operations; on a machine where other processes hold the cores (a shared CI runner, a
workstation that is training) every parallel operation waits at a barrier for a thread that is
not scheduled, and one thread is several times faster. Neither fixed choice is right
everywhere, so the runner measures: the start-up timings of the cost model
(:func:`innaudit.run.plan.measure_units`) are taken once with 1 thread and once with every
core this process may use (``os.sched_getaffinity``), each turned into the seconds of the
planned work, and the faster count is kept (:func:`measured`); where the other cores were
mostly taken by other processes during the 1-thread probe, 1 thread is kept at once. A count the user gave wins
without measuring, in this order: ``--threads N`` / ``threads:`` in the config (``option``),
``OMP_NUM_THREADS`` in the environment (``environment``), a ``torch.set_num_threads`` the
caller of the Python API made after importing innaudit (``caller``).

The choice is re-checked when the runner re-plans and finds an audit much slower than planned
(the machine became busy, :func:`rechecked`, at most once a run), and the caller's thread count is restored when
the run returns (:func:`kept`). The report's ``run.threads`` records the count, its source and,
when measured, both timings and the measurement's own cost (``cost_s``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from innaudit.config.settings import check_threads

__all__ = [
    "ThreadChoice",
    "available_cores",
    "chosen",
    "given",
    "kept",
    "measured",
    "rechecked",
]

_AT_IMPORT = torch.get_num_threads()
"""torch's thread count when innaudit was imported: a different count at run time was set by
the caller (``torch.set_num_threads``), and wins."""


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count of a run, where it came from, and what the probe measured.

    Attributes:
        threads: the count used.
        source: ``measured``, ``option`` (``--threads``), ``environment`` (``OMP_NUM_THREADS``),
            ``caller`` (``torch.set_num_threads`` before the API call) or ``single core``.
        cores: the cores this process may run on.
        timings: seconds of the planned work by thread count, as the probe measured it (1
            thread alone when the screen ruled every core out).
    """

    threads: int
    source: str
    cores: int
    timings: Mapping[int, float] = field(default_factory=dict)
    screen: Mapping[int, float] = field(default_factory=dict)
    """Seconds of one forward pass by thread count, when the screen ran (:func:`measured`)."""
    cost_s: float | None = None
    """The measurement's own wall seconds (screen and probes), when measured: a measured
    choice is never slower than the better fixed count by more than this."""
    idle_cores: float | None = None
    """The average count of this process's cores that stood idle during the 1-thread probe (its
    own busy core makes at most ``cores - 1``), when measured: below :data:`TAKEN` of the other
    cores, every core is not probed."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report's ``run.threads``."""
        out: dict[str, Any] = {"threads": self.threads, "source": self.source, "cores": self.cores}
        if self.timings:
            out["probe_s"] = {str(n): round(s, 6) for n, s in sorted(self.timings.items())}
        if self.screen:
            out["forward_s"] = {str(n): round(s, 6) for n, s in sorted(self.screen.items())}
        if self.cost_s is not None:
            out["cost_s"] = round(self.cost_s, 6)
        if self.idle_cores is not None:
            out["idle_cores"] = round(self.idle_cores, 3)
        return out


def _my_cpus() -> Collection[int]:
    """The CPUs this process may run on (its affinity), or every CPU where the system does not
    say (not Linux)."""
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return range(os.cpu_count() or 1)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    return max(1, len(_my_cpus()))


def given(option: int | None, environ: Mapping[str, str] | None = None) -> ThreadChoice | None:
    """The count the user fixed (option, then ``OMP_NUM_THREADS``, then the API caller's
    ``torch.set_num_threads``), or None when the policy is to measure."""
    cores = available_cores()
    if option is not None:
        return ThreadChoice(check_threads(option), "option", cores)
    env = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return ThreadChoice(int(env), "environment", cores)
    now = torch.get_num_threads()
    if now != _AT_IMPORT:
        return ThreadChoice(now, "caller", cores)
    if cores == 1:
        return ThreadChoice(1, "single core", cores)
    return None


SCREEN = 1.5
"""Every core is not probed in full when one forward pass with them is this many times slower
than with 1 thread (a busy machine): the probe's own cost stays a few forward passes."""


TAKEN = 0.5
"""Every core is not probed when, during the 1-thread probe, fewer than this fraction of the
other cores were idle: other processes hold them. A model whose operations are too small to
share out (a 2-D flow) probes the same with 1 thread and with every core, so the probe alone
cannot see a busy machine; but its operations that do split (batched interval bounds, a large
search) then wait at every barrier for a descheduled thread, many times slower."""


WINDOW_S = 0.25
"""The idle cores are counted over at least this long (``/proc/stat`` counts in ticks of 10 ms);
a shorter probe is followed by a busy wait to fill it."""


def _idle_seconds(cores: Collection[int]) -> float | None:
    """Idle plus iowait seconds so far of the CPUs ``cores`` (Linux ``/proc/stat``), None where
    unknown."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            rows = [line.split() for line in f if line.startswith("cpu") and line[3].isdigit()]
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    mine = [r for r in rows if len(r) > 5 and int(r[0][3:]) in cores]
    if not mine:  # a system that lists other CPUs than this process's (some containers)
        return None
    return sum(int(r[4]) + int(r[5]) for r in mine) / tick


def idle_cores_during(run: Callable[[], float]) -> tuple[float, float | None]:
    """``run()``'s result and the average number of this process's cores (its affinity) that
    stood idle while it ran, None where the system does not say."""
    mine = _my_cpus()
    before, start = _idle_seconds(mine), time.perf_counter()
    out = run()
    while time.perf_counter() - start < WINDOW_S:  # busy, as the probe was: the count stays the others'
        pass
    after, wall = _idle_seconds(mine), time.perf_counter() - start
    if before is None or after is None or wall <= 0:
        return out, None
    return out, max(0.0, after - before) / wall


def measured(probe: Callable[[], float], cores: int, quick: Callable[[], float] | None = None) -> ThreadChoice:
    """Run ``probe`` (seconds of the planned work, as measured now) with 1 thread and with
    ``cores`` threads; the faster count is set and returned with both timings. Where the other
    cores were mostly taken during the 1-thread probe (:data:`TAKEN`), 1 thread is kept
    without probing every core.

    With ``quick`` (seconds of one forward pass), ``cores`` threads are first screened: when
    their forward pass is :data:`SCREEN` times slower than with 1 thread, 1 thread is kept
    without the full probe, and the screen's timings are recorded instead."""
    began = time.perf_counter()
    timings: dict[int, float] = {}
    screen: dict[int, float] = {}
    torch.set_num_threads(1)
    timings[1], idle = idle_cores_during(probe)
    taken = idle is not None and cores > 1 and idle < TAKEN * (cores - 1)
    if cores > 1 and quick is not None and not taken:
        screen[1] = quick()
        torch.set_num_threads(cores)
        screen[cores] = quick()
    if cores > 1 and not taken and not (screen and screen[cores] > SCREEN * screen[1]):
        torch.set_num_threads(cores)
        timings[cores] = probe()
    best = min(timings, key=lambda n: (timings[n], n))
    torch.set_num_threads(best)
    return ThreadChoice(best, "measured", cores, timings, screen, time.perf_counter() - began, idle)


def chosen(option: int | None, probe: Callable[[], float], quick: Callable[[], float] | None = None) -> ThreadChoice:
    """The run's thread count: the one the user gave (set here), else 1 thread or every core
    by ``probe`` (which runs with the count under test already set), screened by ``quick``
    (:func:`measured`)."""
    fixed = given(option)
    if fixed is not None:
        torch.set_num_threads(fixed.threads)
        return fixed
    return measured(probe, available_cores(), quick)


def rechecked(
    choice: ThreadChoice, probe: Callable[[], float], quick: Callable[[], float] | None = None
) -> ThreadChoice:
    """``choice`` measured again when it is a measured count above 1 (a given count stays, and
    one thread is not made faster by fewer): the machine may have become busy. Its cost adds
    to the first measurement's."""
    if choice.source != "measured" or choice.threads == 1:
        return choice
    again = measured(probe, choice.cores, quick)
    return dataclasses.replace(again, cost_s=(choice.cost_s or 0.0) + (again.cost_s or 0.0))


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Restore torch's intra-op thread count on exit (the run's choice never leaks to the caller)."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
