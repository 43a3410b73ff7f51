"""Tightness of the ``bounds`` certificate on the shipped checkpoints.

Tightness = certificate / a measured local singular value, per checkpoint and direction, four
figures: ``before/data`` (the certificate on all of R^d, as on main before the local and domain
certificates, over the data's largest measured ``sigma_max``), ``global/data`` (the global
certificate: the R^d one or the domain box's by bound propagation, the smaller),
``global/witness`` (the same over the largest local constant the search found in the domain
box: the part of the gap that is the certificate's, not the data's), ``local/data`` (the local
certificate over each sample's ball). The goal is within 10x on ``checkerboard-residual`` and
the additive flows.

Usage: ``python benchmarks/bounds.py [--samples 256] [CHECKPOINT ...]`` (names in
``checkpoints/`` without ``.pt``). Runs ``innaudit run CKPT --audit bounds -o json=...`` per
checkpoint and prints two rows each (forward, inverse), with "met" / "not met" for the local and
the global figure; exits 0 whatever the outcome.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ("checkerboard-residual", "checkerboard-additive", "digits-additive", "digits-residual")
GOAL = 10.0


FIGURES = ("tightness", "global_tightness", "witness_tightness", "local_tightness")
"""Per direction: before (the R^d certificate, unchanged from main) / data, then global / data,
global / witness, local / data."""


def _metrics(checkpoint: str, samples: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "innaudit", "run", str(ROOT / "checkpoints" / f"{checkpoint}.pt")]
        cmd += ["--audit", "bounds", "--samples", str(samples), "-o", f"json={out}"]
        subprocess.run(cmd, check=False, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if not out.exists():
            return {}
        report = json.loads(out.read_text())
    values: dict[str, list[float]] = {}
    for audit in report.get("audits", []):
        for result in audit.get("results", []):
            for direction in ("forward", "inverse"):
                for figure in FIGURES:
                    value = result["metrics"][direction].get(figure)
                    values.setdefault(f"{direction}.{figure}", []).append(math.inf if value is None else float(value))
            values.setdefault("block", []).append(float(result["metrics"]["block_tightness"]["max"]))
    return {k: max((v for v in vs if not math.isnan(v)), default=math.nan) for k, vs in values.items()}


def _verdict(value: float) -> str:
    return "met" if math.isfinite(value) and value <= GOAL else "not met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", default=list(DEFAULT))
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    head = "".join(f"{h:>15}" for h in ("before/data", "global/data", "global/witness", "local/data"))
    print(f"{'checkpoint':<24}{'map':<9}{head}  goal (<= {GOAL:g}x) on local / global")
    for name in args.checkpoints:
        m = _metrics(name, args.samples)
        if not m:
            print(f"{name:<24}  (no report)")
            continue
        for direction in ("forward", "inverse"):
            cells = "".join(f"{m[f'{direction}.{f}']:>14.3g}x" for f in FIGURES)
            local, glob = m[f"{direction}.local_tightness"], m[f"{direction}.global_tightness"]
            print(f"{name:<24}{direction:<9}{cells}  {_verdict(local)} / {_verdict(glob)}")
        print(f"{name:<24}{'blocks':<9}{m['block']:>14.3g}x  (the loosest block's own certificate / measured)")


if __name__ == "__main__":
    main()
