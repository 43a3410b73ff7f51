"""The plain default run of shipped checkpoints: seconds per audit and in all.

Goals (issue 31): the plain ``innaudit run checkpoints/patches-glow.pt`` (d = 3072, every
default audit) in under half of the 10.8 minutes it took on idle cores before, with the same
samples and the same verdict; and the plain run's time of every shipped checkpoint, on idle
and on busy cores, written down for users (``--shipped``: every ``checkpoints/*.pt``, smallest
file first, then one table; ``--busy``: a CPU-bound process on each core during the runs, as
``benchmarks/busy.py`` makes).

The run is a child process, ``python -m innaudit run MODEL -q --no-progress -o json=...``, from
this checkout; with ``--against DIR`` the same command runs from another checkout too (e.g. the
commit before, exported with ``git archive COMMIT | tar -x -C DIR``), one after the other, or
both at once with ``--together`` (then both see the same load). Printed: per audit the seconds
it used (the report's ``audits[].duration_s``), its sets (and samples per set under a budget), its status and, for
``logdet``, the reference it computed; then the whole run's seconds (``run.duration_s``, and
the wall time of the process), the verdict, the load average before and after each run, and
with ``--against`` the ratio this / other per audit. On a busy machine compare only ratios
measured in one invocation.

Usage: ``python benchmarks/plain_run.py [--model checkpoints/patches-glow.pt ...] [--shipped]
[--busy] [--threads 1] [--against DIR] [--together] [--audit ID ...] [--samples N]``. Exits 0
whatever the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from busy import busy

ROOT = Path(__file__).resolve().parent.parent
BEFORE_IDLE_S = 10.8 * 60
"""The plain run's wall time on idle cores before issue 31 (the issue's figure)."""


@dataclass(frozen=True)
class Outcome:
    """One run: its report (None when it wrote none), the process's wall seconds and exit code,
    the 1-minute load average before and after."""

    report: dict[str, Any] | None
    wall_s: float
    code: int
    load: tuple[float, float]
    stderr: str


def _command(tree: Path, args: argparse.Namespace, out: Path) -> tuple[list[str], dict[str, str]]:
    extra = ["--threads", str(args.threads)] if args.threads else []
    extra += ["--samples", str(args.samples)] if args.samples else []
    for audit in args.audit or []:
        extra += ["--audit", audit]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS" or not args.threads}
    env["PYTHONPATH"] = str(tree)
    model = str((tree / args.model) if not Path(args.model).is_absolute() else Path(args.model))
    cmd = [sys.executable, "-m", "innaudit", "run", model, *extra, "-q", "--no-progress", "-o", f"json={out}"]
    return cmd, env


def _start(tree: Path, args: argparse.Namespace, out: Path) -> tuple[subprocess.Popen[str], float, float]:
    cmd, env = _command(tree, args, out)
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, time.perf_counter(), os.getloadavg()[0]


def _finish(proc: subprocess.Popen[str], started: float, load: float, out: Path) -> Outcome:
    _, err = proc.communicate()
    wall = time.perf_counter() - started
    report = json.loads(out.read_text()) if out.exists() else None
    return Outcome(report, wall, proc.returncode, (load, os.getloadavg()[0]), err)


def _audits(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per audit id: its status, its seconds (``duration_s``) and, when the run was planned
    under a budget (``run.plan``), its samples per set and sets."""
    planned = {a["id"]: a for a in report["run"].get("plan", {}).get("audits", [])}
    return {
        a["id"]: {
            "status": a["status"],
            "used_s": float(a["duration_s"]),
            "samples": planned.get(a["id"], {}).get("samples", "-"),
            "sets": planned.get(a["id"], {}).get("sets", len(a["results"])),
        }
        for a in report["audits"]
    }


def _reference(report: dict[str, Any]) -> str:
    """How ``logdet`` computed its reference, from its first set that has one."""
    for audit in report["audits"]:
        if audit["id"] != "logdet":
            continue
        for result in audit["results"]:
            m = result["metrics"]
            if m.get("reference") == "estimated":
                return f"estimated: stochastic Lanczos quadrature, {m.get('reference_probes', '?')} probes x {m.get('reference_steps', '?')} steps"
            if m.get("reference") == "exact":
                return "exact"
    return "none"


def _show(name: str, o: Outcome) -> None:
    print(f"{name}: exit {o.code}, wall {o.wall_s:.1f} s, load average {o.load[0]:.1f} -> {o.load[1]:.1f}")
    if o.report is None:
        print(f"  no report: {o.stderr.strip()[-400:]}")
        return
    run = o.report["run"]
    print(f"  threads {run.get('threads', {}).get('threads', '?')} ({run.get('threads', {}).get('source', '?')})")
    for aid, a in _audits(o.report).items():
        print(
            f"  {aid:<12} {a.get('used_s', float('nan')):8.1f} s  {a['samples']:>6} samples x {a['sets']} set(s)  {a['status']}"
        )
    print(f"  logdet reference: {_reference(o.report)}")
    total = float(run.get("duration_s", float("nan")))
    against = (
        f"; {total / BEFORE_IDLE_S:.2f} x the issue's 10.8 min (idle cores only)" if "patches-glow.pt" in name else ""
    )
    print(f"  total {total:.1f} s (run.duration_s), verdict {o.report['summary']['status']}{against}")


def _compare(this: Outcome, other: Outcome) -> None:
    if this.report is None or other.report is None:
        return
    mine, theirs = _audits(this.report), _audits(other.report)
    print("this / other, per audit (same invocation):")
    for aid in mine:
        if aid in theirs and theirs[aid].get("used_s"):
            same = "same" if mine[aid]["samples"] == theirs[aid]["samples"] else "OTHER"
            print(f"  {aid:<12} {mine[aid]['used_s'] / theirs[aid]['used_s']:6.2f}  ({same} samples)")
    verdicts = (this.report["summary"]["status"], other.report["summary"]["status"])
    ratio = this.report["run"]["duration_s"] / other.report["run"]["duration_s"]
    print(
        f"  total        {ratio:6.2f}  (verdicts {verdicts[0]} / {verdicts[1]}: {'same' if verdicts[0] == verdicts[1] else 'DIFFERENT'})"
    )


def _models(args: argparse.Namespace) -> list[str]:
    """The checkpoints to run: ``--model`` in order, or with ``--shipped`` every shipped one,
    smallest file first."""
    if args.shipped:
        return [
            str(p.relative_to(ROOT))
            for p in sorted((ROOT / "checkpoints").glob("*.pt"), key=lambda p: p.stat().st_size)
        ]
    return args.model or ["checkpoints/patches-glow.pt"]


def _row(model: str, o: Outcome) -> str:
    """One line of the closing table: wall, audits' seconds, threads, verdict, slowest audit."""
    name = f"`{Path(model).name}`"
    if o.report is None or not o.report["audits"]:
        return f"| {name} | {o.wall_s:.1f} s | no audit (exit {o.code}) | | | | |"
    audits = _audits(o.report)
    slowest = max(audits, key=lambda a: audits[a]["used_s"])
    threads = o.report["run"].get("threads", {})
    return (
        f"| {name} | {o.wall_s:.1f} s | {float(o.report['run']['duration_s']):.1f} s "
        f"| {threads.get('threads', '?')} ({threads.get('source', '?')}) "
        f"| {o.report['summary']['status']} (exit {o.code}) | {slowest} {audits[slowest]['used_s']:.1f} s "
        f"| {o.load[0]:.1f} -> {o.load[1]:.1f} |"
    )


def _run_one(model: str, args: argparse.Namespace, tmp: Path) -> Outcome:
    """The plain run of one checkpoint (and of the other checkout's, with ``--against``),
    printed per audit; returns this checkout's outcome."""
    one = argparse.Namespace(**{**vars(args), "model": model})
    trees = [("this", ROOT)] + ([("other", args.against.resolve())] if args.against else [])
    outs = {name: tmp / f"{name}-{Path(model).stem}.json" for name, _ in trees}
    outcomes: dict[str, Outcome] = {}
    if args.together:
        started = [(name, _start(tree, one, outs[name])) for name, tree in trees]
        outcomes = {name: _finish(*s, outs[name]) for name, s in started}
    else:
        for name, tree in reversed(trees):  # the other checkout first: "before" then "after"
            outcomes[name] = _finish(*_start(tree, one, outs[name]), outs[name])
    for name, tree in trees:
        _show(f"{model}, {name} ({tree})", outcomes[name])
    if "other" in outcomes:
        _compare(outcomes["this"], outcomes["other"])
    return outcomes["this"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="relative to each checkout (repeatable; default patches-glow)")
    parser.add_argument("--shipped", action="store_true", help="every checkpoints/*.pt, smallest first")
    parser.add_argument("--busy", action="store_true", help="a CPU-bound process on each core during the runs")
    parser.add_argument("--threads", type=int, help="--threads of every run (default: the runner's policy)")
    parser.add_argument("--against", type=Path, help="another checkout to run the same command from")
    parser.add_argument("--together", action="store_true", help="run both checkouts at once")
    parser.add_argument("--audit", action="append", help="--audit of every run (repeatable; default: all)")
    parser.add_argument("--samples", type=int, help="--samples of every run (default: the CLI's)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU(s) on the machine; load average now {os.getloadavg()[0]:.1f}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, busy() if args.busy else contextlib.nullcontext():
        for model in _models(args):
            rows.append(_row(model, _run_one(model, args, Path(tmp))))
            print(rows[-1], flush=True)
    print(f"\nplain runs ({'busy: a CPU-bound process per core' if args.busy else 'no load added'}):")
    print("| checkpoint | wall | run.duration_s | threads | verdict | slowest audit | load average |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
