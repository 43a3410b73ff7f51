"""Tightness and cost of the ``bounds`` certificate on the shipped checkpoints, before and after.

Tightness = certificate / a measured local singular value, per checkpoint and direction, three
figures: ``global/data`` (the global certificate: the R^d one or the domain box's, the smaller,
over the data's largest measured ``sigma_max``), ``global/witness`` (the same over the largest
local constant measured anywhere in the domain box: the part of the gap that is the
certificate's, not the data's) and ``local/data`` (the local certificate over each sample's
ball). The goal is within 10x on ``checkerboard-residual`` and the additive flows. The cost is
the ``bounds`` audit's own seconds (``duration_s`` of the report).

"Before" runs the same command with another checkout of innaudit on ``PYTHONPATH`` (``--before
DIR``, e.g. ``git worktree add /tmp/main main``), "after" this one; the two runs of each
checkpoint alternate, ``--repeats`` times (the seconds are the median), one thread each, so the
cost ratio is measured on the same machine at the same time.

Usage: ``python benchmarks/bounds.py [--before DIR] [--samples N] [--repeats R] [CHECKPOINT ...]``
(names in ``checkpoints/`` without ``.pt``; the audit's own sample default when ``--samples`` is
not given). Prints two rows per checkpoint (forward, inverse) and the cost ratio; exits 0
whatever the outcome.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ("checkerboard-residual", "checkerboard-additive", "digits-additive", "digits-residual")
GOAL = 10.0

FIGURES = ("global_tightness", "witness_tightness", "local_tightness")
"""Per direction: global / data, global / witness, local / data."""

LABELS = ("global/data", "global/witness", "local/data")


def _report(checkpoint: str, samples: int | None, package: Path) -> dict:
    """The JSON report of ``innaudit run CHECKPOINT --audit bounds`` with ``package`` first on
    ``PYTHONPATH``; empty when the run wrote none."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "innaudit", "run", str(ROOT / "checkpoints" / f"{checkpoint}.pt")]
        cmd += ["--audit", "bounds", "-o", f"json={out}", "--no-progress"]
        if samples is not None:
            cmd += ["--samples", str(samples)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(package)}
        subprocess.run(cmd, check=False, capture_output=True, env=env, cwd=tmp)
        return json.loads(out.read_text()) if out.exists() else {}


def _figures(report: dict) -> dict[str, float]:
    """The worst figure over the sets per direction, and the audit's seconds."""
    values: dict[str, list[float]] = {}
    seconds = math.nan
    for audit in report.get("audits", []):
        seconds = float(audit.get("duration_s", math.nan))
        for result in audit.get("results", []):
            for direction in ("forward", "inverse"):
                for figure in FIGURES:
                    value = result["metrics"][direction].get(figure)
                    values.setdefault(f"{direction}.{figure}", []).append(math.inf if value is None else float(value))
    found = {k: max((v for v in vs if not math.isnan(v)), default=math.nan) for k, vs in values.items()}
    found["seconds"] = seconds
    return found


def _measure(checkpoint: str, samples: int | None, before: Path | None, repeats: int) -> list[dict[str, float]]:
    """``[before, after]`` (``[after]`` without ``before``), the runs alternating."""
    packages = ([before] if before is not None else []) + [ROOT]
    runs: list[list[dict[str, float]]] = [[] for _ in packages]
    for _ in range(max(1, repeats)):
        for k, package in enumerate(packages):
            runs[k].append(_figures(_report(checkpoint, samples, package)))
    out = []
    for found in runs:
        merged = dict(found[0])
        merged["seconds"] = statistics.median(f["seconds"] for f in found)
        out.append(merged)
    return out


def _cell(value: float) -> str:
    return f"{value:>14.3g}x" if not math.isnan(value) else f"{'-':>15}"


def _verdict(value: float) -> str:
    return "met" if math.isfinite(value) and value <= GOAL else "not met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", default=list(DEFAULT))
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--before", type=Path, default=None, help="a checkout of the baseline (main)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    head = "".join(f"{h:>15}" for h in LABELS)
    print(f"{'checkpoint':<24}{'map':<9}{'run':<8}{head}  goal (<= {GOAL:g}x) on global/witness, local/data")
    for name in args.checkpoints:
        found = _measure(name, args.samples, args.before, args.repeats)
        tags = ("before", "after") if args.before is not None else ("after",)
        if not all(len(f) > 1 for f in found):
            print(f"{name:<24}  (no report)")
            continue
        for direction in ("forward", "inverse"):
            for tag, m in zip(tags, found, strict=True):
                cells = "".join(_cell(m.get(f"{direction}.{f}", math.nan)) for f in FIGURES)
                goal = (
                    f"{_verdict(m[f'{direction}.witness_tightness'])} / {_verdict(m[f'{direction}.local_tightness'])}"
                )
                print(f"{name:<24}{direction:<9}{tag:<8}{cells}  {goal}")
        seconds = "  ".join(f"{tag} {m['seconds']:.2f} s" for tag, m in zip(tags, found, strict=True))
        ratio = f"  (after / before {found[1]['seconds'] / found[0]['seconds']:.2f}x)" if len(found) == 2 else ""
        print(f"{name:<24}{'cost':<9}{'':<8}{seconds}{ratio}")


if __name__ == "__main__":
    main()
