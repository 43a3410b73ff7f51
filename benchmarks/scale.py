"""Real-size runs: the default audits under ``--budget`` at d = 64, CIFAR size and 64x64 size.

Goal: every audit's wall time is at most 1.3 times the raw model evaluations it performed, and the
whole run under ``--budget B`` ends within 1.25 B plus start-up.

Two models are built here from the zoo, their weights perturbed away from the zoo's identity
initialization so that Jacobians and Lanczos runs are not trivial (a trained model costs the same
per evaluation): ``d64``, a coupling flow on d = 64 with coupling nets of width 64 (4 steps),
``cifar``, a coupling flow on d = 3 x 32 x 32 = 3072 with MLP coupling nets of width
512 (8 steps, about 21 M parameters), and ``64x64``, the same on d = 3 x 64 x 64 = 12,288 (4 steps
of width 256). Each is saved as a native checkpoint with smooth random images in [0, 1] as its
``--data`` file, and ``innaudit run MODEL --data x.npy --budget B -o json=...`` runs in a child
process. Per audit the report's ``run.plan`` gives the seconds used, the samples and method
chosen, and ``model_s``: the seconds of the raw model evaluations it performed (its forward,
inverse, VJP and JVP counts times the costs measured at start-up). Printed per audit: samples,
method, used seconds, raw seconds, their ratio; per run: wall time against the budget (start-up
apart), the child's peak resident memory, and that no audit is ``error``.

``--busy`` starts a CPU-bound process on each core for the runs (and ends them): the budget
must hold on a busy machine, the runner re-planning as it goes (``run.replans``, printed).
``--threads policy`` (the default) leaves the count to the runner's thread policy; a number
pins it.

Usage: ``python benchmarks/scale.py [--budget 10m] [--models d64,cifar,64x64] [--threads policy|N]
[--busy] [--device cuda] [--skip AUDITS] [--audits AUDITS] [--keep DIR]``. On a GPU: ``python benchmarks/scale.py --device cuda
--budget 3m`` (with ``python -m pytest tests/test_cuda.py``). Exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

if importlib.util.find_spec("innaudit") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from busy import busy

from innaudit.config.duration import parse_duration
from innaudit.core.domain import DataDomain
from innaudit.loading.native import save_checkpoint
from innaudit.zoo import build

AUDIT_GOAL = 1.3
BUDGET_GOAL = 1.25
ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "d64": {"shape": [64], "steps": 4, "hidden": 64, "image": (1, 8, 8)},
    "cifar": {"shape": [3 * 32 * 32], "steps": 8, "hidden": 512, "image": (3, 32, 32)},
    "64x64": {"shape": [3 * 64 * 64], "steps": 4, "hidden": 256, "image": (3, 64, 64)},
}
CHILD = """
import resource, sys
from innaudit.cli import main
try:
    main(sys.argv[1:])
finally:
    sys.stderr.write(f"peak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n")
"""


def _images(shape: tuple[int, int, int], count: int, seed: int = 0) -> np.ndarray:
    """Smooth random images in [0, 1] (low-frequency noise, upsampled), flattened."""
    gen = torch.Generator().manual_seed(seed)
    c, h, w = shape
    coarse = torch.rand(count, c, h // 8, w // 8, generator=gen)
    fine = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (fine + 0.02 * torch.rand(count, c, h, w, generator=gen)).clamp(0, 1).reshape(count, -1).numpy()


def _prepare(name: str, folder: Path) -> tuple[Path, Path, int]:
    spec = MODELS[name]
    config = {"shape": spec["shape"], "steps": spec["steps"], "hidden": spec["hidden"], "seed": 0}
    module = build("coupling-vector", config)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the zoo starts at the identity; perturb it so Jacobians are not trivial
        for p in module.parameters():
            p.add_(0.05 * p.abs().mean().clamp_min(0.02) * torch.randn(p.shape, generator=gen))
    params = sum(p.numel() for p in module.parameters())
    ckpt = save_checkpoint(
        folder / f"{name}.pt",
        module,
        "coupling-vector",
        config,
        DataDomain(shape=tuple(spec["shape"]), low=0.0, high=1.0),
    )
    data = folder / f"{name}.npy"
    np.save(data, _images(spec["image"], 2000).astype(np.float32))
    return ckpt, data, params


def _run(
    ckpt: Path, data: Path, budget: str, out: Path, threads: str, device: str, skip: str = "", audits: str = ""
) -> tuple[float, float, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env |= {"PYTHONPATH": str(ROOT), "NO_COLOR": "1"} | ({} if threads == "policy" else {"OMP_NUM_THREADS": threads})
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            "run",
            str(ckpt),
            "--data",
            str(data),
            "--budget",
            budget,
            "--device",
            device,
            "-q",
            "-o",
            f"json={out}",
            *[arg for aid in filter(None, skip.split(",")) for arg in ("--skip", aid)],
            *(arg for aid in audits.split(",") if aid for arg in ("--audit", aid)),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - start
    rss = [line for line in proc.stderr.splitlines() if line.startswith("peak_rss_kib=")]
    peak = int(rss[-1].split("=")[1]) / 1024 if rss else float("nan")
    return wall, peak, proc.stderr


def _report(name: str, params: int, budget_s: float, wall: float, peak_mib: float, out: Path) -> None:
    report = json.loads(out.read_text())
    plan, run = report["run"]["plan"], report["run"]
    used = sum(a.get("used_s", 0.0) for a in plan["audits"])
    print(
        f"\n== {name}: d = {int(plan['units']['dim'])}, {params / 1e6:.1f} M parameters, "
        f"batch {plan['batch_size']}, budget {budget_s:.0f} s"
    )
    print(f"{'audit':<10} {'samples':>7} {'method':<12} {'used s':>8} {'raw s':>8} {'ratio':>6}  cut")
    for a in plan["audits"]:
        ratio = a.get("used_s", 0.0) / a["model_s"] if a["model_s"] > 0 else float("nan")
        mark = "met" if ratio <= AUDIT_GOAL else "not met"
        print(
            f"{a['id']:<10} {a['samples']:>7} {a['method'] or '-':<12} {a.get('used_s', 0.0):>8.1f} "
            f"{a['model_s']:>8.1f} {ratio:>6.2f}  {mark}; {a.get('cut', '')}"
        )
    statuses = {a["id"]: a["status"] for a in report["audits"]}
    missing = [a["id"] for a in plan["audits"] if a["id"] not in statuses]
    failed = [k for k, v in statuses.items() if v == "error"]
    print(
        f"every selected audit has a result: {'yes' if not missing and not failed else 'no'} "
        f"(missing {missing or 'none'}, error {failed or 'none'})"
    )
    startup = wall - used
    print(
        f"audits {used:.1f} s = {used / budget_s:.2f} x budget ({'met' if used <= BUDGET_GOAL * budget_s else 'not met'}"
        f" <= {BUDGET_GOAL}); whole run {wall:.1f} s = {wall / budget_s:.2f} x budget, of which start-up and "
        f"report {startup:.1f} s (run.duration_s {run.get('duration_s', 0):.1f} s)"
    )
    print(
        f"peak resident memory {peak_mib:.0f} MiB; statuses {statuses}; "
        f"errors: {[k for k, v in statuses.items() if v == 'error'] or 'none'}"
    )
    spectrum = [r["metrics"].get("method") for a in report["audits"] if a["id"] == "spectrum" for r in a["results"]]
    print(f"spectrum method per set: {spectrum}; threads {run.get('threads')}")
    for replanned in run.get("replans", []):
        print(f"  re-plan: {replanned}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--models", default="d64,cifar,64x64")
    parser.add_argument("--threads", default="policy", help="policy (the runner measures) or OMP threads of the run")
    parser.add_argument("--busy", action="store_true", help="a CPU-bound process on each core during the runs")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the GPU entry: --device cuda --budget 3m)")
    parser.add_argument("--keep", metavar="DIR", help="Keep models, data, reports and logs in DIR.")
    parser.add_argument("--skip", default="", help="audits to leave out (innaudit run --skip)")
    parser.add_argument("--audits", default="", help="comma-separated audits to run (default: the default battery)")
    args = parser.parse_args()
    budget_s = parse_duration(args.budget)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            ckpt, data, params = _prepare(name, folder)
            out = folder / f"{name}.json"
            with busy(None if args.busy else 0) as pids:
                if pids:
                    print(f"\nbusy: one CPU-bound process per core (pids {pids})")
                before = os.getloadavg()
                wall, peak, stderr = _run(
                    ckpt, data, args.budget, out, args.threads, args.device, args.skip, args.audits
                )
                after = os.getloadavg()
            print(
                f"\nload average (1 min) {before[0]:.1f} before the run, {after[0]:.1f} after, on {os.cpu_count()} cores"
            )
            if not out.exists():
                print(f"== {name}: the run wrote no report:\n{stderr[-2000:]}")
                continue
            (folder / f"{name}.log").write_text(stderr)
            _report(name, params, budget_s, wall, peak, out)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
