"""Tightness of the ``bounds`` certificate on the shipped checkpoints.

Tightness = certified Lipschitz bound / largest measured local singular value (``sigma_max`` of
the Jacobian over the audited samples), for the whole model (forward and inverse) and for the
loosest block. A tightness of 1 is a certificate that cannot be improved; the goal is within
10x on ``checkerboard-residual`` and the additive flows.

Usage: ``python benchmarks/bounds.py [--samples 256] [CHECKPOINT ...]`` (names in
``checkpoints/`` without ``.pt``). Runs ``innaudit run CKPT --audit bounds -o json=...`` per
checkpoint and prints one row each, with "met" / "not met"; exits 0 whatever the outcome.
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


def _metrics(checkpoint: str, samples: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "innaudit", "run", str(ROOT / "checkpoints" / f"{checkpoint}.pt")]
        cmd += ["--audit", "bounds", "--samples", str(samples), "-o", f"json={out}"]
        subprocess.run(cmd, check=False, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if not out.exists():
            return {}
        report = json.loads(out.read_text())
    metrics: dict[str, float] = {}
    for audit in report.get("audits", []):
        for result in audit.get("results", []):
            for direction in ("forward", "inverse"):
                metrics[direction] = max(metrics.get(direction, 0.0), result["metrics"][direction]["tightness"])
            metrics["block"] = max(metrics.get("block", 0.0), result["metrics"]["block_tightness"]["max"])
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", default=list(DEFAULT))
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    print(f"{'checkpoint':<26}{'forward':>12}{'inverse':>12}{'loosest block':>15}  goal (<= {GOAL:g}x)")
    for name in args.checkpoints:
        m = _metrics(name, args.samples)
        if not m:
            print(f"{name:<26}  (no report)")
            continue
        worst = max(m["forward"], m["inverse"])
        verdict = "met" if math.isfinite(worst) and worst <= GOAL else "not met"
        print(f"{name:<26}{m['forward']:>11.3g}x{m['inverse']:>11.3g}x{m['block']:>14.3g}x  {verdict}")


if __name__ == "__main__":
    main()
