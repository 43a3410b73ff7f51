"""Speed-up of ``torchrun --nproc-per-node N -m innaudit run`` over one process.

Goal: 2 processes x 1 thread finish the same audit at least 1.8 times faster than 1 process x 1
thread on 2 idle cores (the work is shared out by batches; the gathers, the process group and a
second model load are the overhead). On a machine with GPUs, ``--device cuda`` compares 1 GPU
with ``--nproc`` GPUs.

Each configuration is the whole command, start-up included, timed ``--repeats`` times,
alternating, best kept; the JSON reports of both are checked equal (timings and
``run.world_size`` left out) so the speed-up is of the same result. Beside the whole command's
speed-up it prints the audit phase's (the sum of the audits' ``duration_s``: the one process's
report against rank 0's) and the fixed part of each (whole minus audits: the ``torchrun``
launcher, each rank's torch import, model load, data sets and the planner's timings, the
reports). The fixed part is paid once per job and cannot be divided, so by Amdahl's law the
whole command gains less than the audits: it also prints the whole-command speed-up perfectly
divided audits would give. The machine's load average is printed beside the figures: a busy
machine lowers the speed-up.

Workloads: the default, ``--audit roundtrip --audit spectrum --samples 4000`` on
``checkpoints/digits-affine.pt`` (the issue's command), audits for a few seconds, about as long
as the start-up, so it stays far from the goal end to end. ``--every-audit`` runs the default
run (every audit at its own sample counts unless ``--samples`` is given); at the planner's batch
of 500 the attack's 32 samples are one work unit. The heavy workload ``--every-audit
--batch-size 32 --attack-samples N`` audits in many small units, and the larger ``N`` the closer
the whole command comes to the audit phase's speed-up (the attack searches at most the data set's
samples: give ``--data digits:all`` for more than the 360 test digits). The README ("Scale-out: torchrun") has
the figures.

Usage: ``python benchmarks/distributed.py [--model checkpoints/digits-affine.pt] [--samples 4000]
[--audit roundtrip --audit spectrum | --every-audit] [--batch-size N] [--attack-samples N] [--data SPEC]
[--nproc 2] [--repeats 2] [--device cpu]``.
Exits 0 whatever the speed-up; exits 1 if the reports differ.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.8
IGNORED = {"duration_s", "started_at", "world_size", "threads", "plan"}
DEFAULT_AUDITS = ("roundtrip", "spectrum")
DEFAULT_SAMPLES = 4000


@dataclass(frozen=True)
class Timed:
    """One whole command: its seconds, the audits' seconds in its report, its exit code."""

    whole: float
    audits: float
    code: int
    each: dict[str, float]

    @property
    def fixed(self) -> float:
        """Seconds outside the audits: launcher, start-up, planning, reports."""
        return self.whole - self.audits


def _strip(value: object) -> object:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _timed(command: list[str], threads: int, report: Path) -> Timed:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    whole = time.perf_counter() - start
    each = {a["id"]: float(a.get("duration_s") or 0.0) for a in json.loads(report.read_text())["audits"]}
    return Timed(whole, sum(each.values()), done.returncode, each)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="checkpoints/digits-affine.pt")
    parser.add_argument("--audit", action="append", default=None)
    parser.add_argument(
        "--every-audit",
        action="store_true",
        help="the default run (every audit) instead of --audit's; the heavy workload",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help=f"--samples of the run [default: {DEFAULT_SAMPLES}; with --every-audit, the run's own]",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="--batch-size of the run, the size of a work unit [default: the planner's]",
    )
    parser.add_argument("--attack-samples", type=int, default=None, help="--attack-samples of the run")
    parser.add_argument("--data", default=None, help="--data of the run (digits:all: 1797 digits to search)")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.every_audit and args.audit:
        parser.error("--every-audit runs every audit; leave out --audit")
    audits = [] if args.every_audit else [x for a in (args.audit or DEFAULT_AUDITS) for x in ("--audit", a)]
    samples = args.samples if args.samples is not None or args.every_audit else DEFAULT_SAMPLES
    with tempfile.TemporaryDirectory() as tmp:
        given = {
            "--samples": samples,
            "--batch-size": args.batch_size,
            "--attack-samples": args.attack_samples,
            "--data": args.data,
        }
        base = [
            args.model,
            *audits,
            *(x for k, v in given.items() if v is not None for x in (k, str(v))),
            "--device",
            args.device,
            "-q",
        ]
        reports = {"one": Path(tmp, "one.json"), "many": Path(tmp, "many.json")}
        commands = {
            "one": [sys.executable, "-m", "innaudit", "run", *base, "-o", f"json={reports['one']}"],
            "many": [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                str(args.nproc),
                "-m",
                "innaudit",
                "run",
                *base,
                "-o",
                f"json={reports['many']}",
            ],
        }
        best: dict[str, Timed] = {}
        for _ in range(args.repeats):
            for name, command in commands.items():
                got = _timed(command, 1, reports[name])
                if name not in best or got.whole < best[name].whole:
                    best[name] = got
        same = _strip(json.loads(reports["one"].read_text())) == _strip(json.loads(reports["many"].read_text()))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    one, many = best["one"], best["many"]
    workload = "every audit" if args.every_audit else f"audits {' '.join(audits[1::2])}"
    flags = " ".join(f"{k} {v}" for k, v in given.items() if v is not None)
    print(
        f"model {args.model}, {workload}{', ' + flags if flags else ''}, device {args.device}, "
        f"{os.cpu_count()} cores, load average {load:.2f} at the end"
    )
    print(
        f"1 process x 1 thread: {one.whole:.1f} s = fixed {one.fixed:.1f} s + audits {one.audits:.1f} s "
        f"(exit {one.code})"
    )
    print(
        f"{args.nproc} processes x 1 thread: {many.whole:.1f} s = fixed {many.fixed:.1f} s + audits "
        f"{many.audits:.1f} s (rank 0's report; torchrun exit {many.code}); best of {args.repeats}"
    )
    print(
        "per audit, 1 process / rank 0: "
        + ", ".join(f"{k} {v:.1f}/{many.each.get(k, math.nan):.1f} s" for k, v in one.each.items())
    )
    ideal = one.whole / (many.fixed + one.audits / args.nproc)
    print(
        f"speed-up: whole command {one.whole / many.whole:.2f}x, audits alone {one.audits / many.audits:.2f}x "
        f"(goal >= {GOAL}x on {args.nproc} idle cores); reports equal: {same}"
    )
    print(
        f"Amdahl: the fixed {many.fixed:.1f} s (launcher, each rank's start-up) is not divided; with the audits "
        f"divided perfectly by {args.nproc} the whole command would gain at most {ideal:.2f}x"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
