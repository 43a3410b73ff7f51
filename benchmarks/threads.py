"""The thread policy against the two fixed choices, on idle cores and on a busy machine.

Goal: the policy's run (no ``OMP_NUM_THREADS``, no ``--threads``: the runner measures 1 thread
against every core at start-up and keeps the faster) is never slower than the better of the two
fixed choices (``--threads 1`` and ``--threads CORES``, torch's default) by more than the
measurement's own cost (the report's ``run.threads.cost_s``), and within 1.2 times it; both idle
and with a CPU-bound process on each core (started and ended by this script, :mod:`busy`).

Cases: ``digits``, the README's first command ``innaudit run checkpoints/digits-affine.pt``
(every default audit), and ``glow-roundtrip``, ``innaudit run checkpoints/patches-glow.pt
--audit roundtrip`` (d = 3072). ``--samples N`` makes both smaller (the figures of a busy
shared machine take long at full size). Each run is a child process; printed per case and
condition: the wall seconds of each choice, the count the policy chose (from the report's
``run.threads``) and the ratio policy / best fixed. Exits 0 whatever the figures.

Usage: ``python benchmarks/threads.py [--cases digits,glow-roundtrip] [--samples 1000]
[--conditions idle,busy] [--repeat 3]`` (``--repeat``: interleaved rounds, medians compared: on
a machine whose load changes, one run of each choice one after the other compares loads, not
choices).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from busy import busy, cores

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.2
CASES = {
    "digits": ["checkpoints/digits-affine.pt"],
    "glow-roundtrip": ["checkpoints/patches-glow.pt", "--audit", "roundtrip"],
}


def _run(args: list[str], choice: str, samples: int | None, out: Path) -> tuple[float, dict, int]:
    """Wall seconds, the report's ``run.threads`` and the exit code of one run with ``choice``
    (``1``, ``CORES`` or ``policy``)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    extra = [] if choice == "policy" else ["--threads", choice]
    extra += ["--samples", str(samples)] if samples else []
    cmd = [sys.executable, "-m", "innaudit", "run", *args, *extra, "-q", "--no-progress", "-o", f"json={out}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    threads = json.loads(out.read_text())["run"].get("threads", {}) if out.exists() else {}
    if proc.returncode not in (0, 1):
        print(f"   ({choice}: exit {proc.returncode}: {proc.stderr.strip()[-300:]})")
    return wall, threads, proc.returncode


def _case(name: str, samples: int | None, folder: Path, repeat: int) -> None:
    """``repeat`` rounds of the three choices, interleaved (1 thread, every core, the policy, then
    again), so a change in the machine's load hits every choice alike; medians compared."""
    n = cores()
    walls: dict[str, list[float]] = {"1": [], str(n): [], "policy": []}
    picked: dict = {}
    costs: list[float] = []
    for _ in range(repeat):
        for choice in walls:
            out = folder / f"{name}-{choice}.json"
            wall, threads, _ = _run(CASES[name], choice, samples, out)
            walls[choice].append(wall)
            if choice == "policy":
                picked = threads
                costs += [float(threads["cost_s"])] if "cost_s" in threads else []
    med = {choice: statistics.median(w) for choice, w in walls.items()}
    best = min(med["1"], med[str(n)])
    ratio = med["policy"] / best
    timings = picked.get("probe_s", {})
    cost = statistics.median(costs) if costs else float("nan")
    print(
        f"  {name:<15} 1 thread {med['1']:7.1f} s | {n} threads {med[str(n)]:7.1f} s | policy "
        f"{med['policy']:7.1f} s ({picked.get('threads', '?')} thread(s), {picked.get('source', '?')}, "
        f"probe {timings}) | policy / best fixed {ratio:.2f} ({'met' if ratio <= GOAL else 'not met'} <= {GOAL})"
        f" | policy - best fixed {med['policy'] - best:+.1f} s against the measurement's own cost {cost:.1f} s"
        f" ({'met' if med['policy'] - best <= cost else 'not met'})" + (f" [medians of {repeat}]" if repeat > 1 else "")
    )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--samples", type=int, help="--samples of every run (default: the CLI's)")
    parser.add_argument("--conditions", default="idle,busy")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds per case (medians compared)")
    args = parser.parse_args()
    print(f"{cores()} core(s) for this process; goal: policy within {GOAL}x of the better fixed choice")
    with tempfile.TemporaryDirectory() as tmp:
        for condition in args.conditions.split(","):
            if condition == "busy":
                with busy() as pids:
                    print(f"busy: one CPU-bound process per core (pids {pids})")
                    for name in args.cases.split(","):
                        _case(name, args.samples, Path(tmp), args.repeat)
            else:
                print("idle: no process started by this benchmark (others on the machine may run)")
                for name in args.cases.split(","):
                    _case(name, args.samples, Path(tmp), args.repeat)


if __name__ == "__main__":
    main()
