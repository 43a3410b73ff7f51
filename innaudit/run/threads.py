"""The thread policy: how many intra-op threads torch uses for a run, chosen by measurement.

torch starts with one intra-op thread per core. On idle cores that is fastest for large
operations; on a machine where other processes hold the cores (a shared CI runner, a
workstation that is training) every parallel operation waits at a barrier for a thread that is
not scheduled, and one thread is several times faster. Neither fixed choice is right
everywhere, so the runner measures: the start-up timings of the cost model
(:func:`innaudit.run.plan.measure_units`) are taken once with 1 thread and once with every
core this process may use (``os.sched_getaffinity``), each turned into the seconds of the
planned work, and every core is kept only when it is clearly faster (:data:`GAIN`,
:func:`measured`). A count the user gave wins
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
from collections.abc import Callable, Iterator, Mapping
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

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report's ``run.threads``."""
        out: dict[str, Any] = {"threads": self.threads, "source": self.source, "cores": self.cores}
        if self.timings:
            out["probe_s"] = {str(n): round(s, 6) for n, s in sorted(self.timings.items())}
        if self.screen:
            out["forward_s"] = {str(n): round(s, 6) for n, s in sorted(self.screen.items())}
        if self.cost_s is not None:
            out["cost_s"] = round(self.cost_s, 6)
        return out


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


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


GAIN = 1.1
"""Every core is kept only when the probe's planned work runs this many times faster with them
than with 1 thread. A model whose operations are too small to share out (a 2-D flow) probes the
same either way, and the probe's noise would pick either; but the operations that do split
(batched interval bounds, a large search) then wait at a barrier for a descheduled thread
whenever the machine gets busy, many times slower, while the gain on idle cores was nil."""


def _best(timings: Mapping[int, float]) -> int:
    """1 thread, unless more threads beat it by :data:`GAIN`."""
    many = max(timings)
    return many if many > 1 and timings[1] > GAIN * timings[many] else 1


def measured(probe: Callable[[], float], cores: int, quick: Callable[[], float] | None = None) -> ThreadChoice:
    """Run ``probe`` (seconds of the planned work, as measured now) with 1 thread and with
    ``cores`` threads; every core is set when it is :data:`GAIN` times faster, else 1 thread,
    and returned with both timings.

    With ``quick`` (seconds of one forward pass), ``cores`` threads are first screened: when
    their forward pass is :data:`SCREEN` times slower than with 1 thread, 1 thread is kept
    without the full probe, and the screen's timings are recorded instead."""
    began = time.perf_counter()
    timings: dict[int, float] = {}
    screen: dict[int, float] = {}
    torch.set_num_threads(1)
    timings[1] = probe()
    if cores > 1 and quick is not None:
        screen[1] = quick()
        torch.set_num_threads(cores)
        screen[cores] = quick()
    if cores > 1 and not (screen and screen[cores] > SCREEN * screen[1]):
        torch.set_num_threads(cores)
        timings[cores] = probe()
    best = _best(timings)
    torch.set_num_threads(best)
    return ThreadChoice(best, "measured", cores, timings, screen, time.perf_counter() - began)


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
