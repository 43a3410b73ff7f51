"""Speed-up of ``torchrun --nproc-per-node N -m innaudit run`` over one process.

Goal: 2 processes x 1 thread finish the same audit at least 1.8 times faster than 1 process x 1
thread on 2 idle cores (the work is shared out by batches; the gathers, the process group and a
second model load are the overhead). On a machine with GPUs, ``--device cuda`` compares 1 GPU
with ``--nproc`` GPUs.

Each configuration is the whole command, start-up included, timed ``--repeats`` times,
alternating, best kept; the JSON reports of both are checked equal (timings and
``run.world_size`` left out) so the speed-up is of the same result. The machine's load average
is printed beside the figures: a busy machine lowers the speed-up.

Usage: ``python benchmarks/distributed.py [--model checkpoints/digits-affine.pt] [--samples 4000]
[--audit roundtrip --audit spectrum] [--nproc 2] [--repeats 2] [--device cpu]``. Exits 0 whatever
the speed-up; exits 1 if the reports differ.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.8
IGNORED = {"duration_s", "started_at", "world_size", "threads", "plan"}


def _strip(value: object) -> object:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _timed(command: list[str], threads: int) -> tuple[float, int]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    return time.perf_counter() - start, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="checkpoints/digits-affine.pt")
    parser.add_argument("--audit", action="append", default=None)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    audits = [x for a in (args.audit or ["roundtrip", "spectrum"]) for x in ("--audit", a)]
    with tempfile.TemporaryDirectory() as tmp:
        base = [args.model, *audits, "--samples", str(args.samples), "--device", args.device, "-q"]
        one = [sys.executable, "-m", "innaudit", "run", *base, "-o", f"json={tmp}/one.json"]
        many = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                str(args.nproc), "-m", "innaudit", "run", *base, "-o", f"json={tmp}/many.json"]
        best = {"one": math.inf, "many": math.inf}
        codes = {}
        for _ in range(args.repeats):
            for name, command in (("one", one), ("many", many)):
                seconds, codes[name] = _timed(command, 1)
                best[name] = min(best[name], seconds)
        same = _strip(json.loads(Path(tmp, "one.json").read_text())) == _strip(
            json.loads(Path(tmp, "many.json").read_text()))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    speedup = best["one"] / best["many"]
    print(f"model {args.model}, audits {' '.join(audits[1::2])}, --samples {args.samples}, device {args.device}, "
          f"{os.cpu_count()} cores, load average {load:.2f} at the end")
    print(f"1 process x 1 thread: {best['one']:.1f} s (exit {codes['one']}); {args.nproc} processes x 1 thread: "
          f"{best['many']:.1f} s (torchrun exit {codes['many']}), best of {args.repeats}")
    print(f"speed-up {speedup:.2f}x (goal >= {GOAL}x on {args.nproc} idle cores); reports equal: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
