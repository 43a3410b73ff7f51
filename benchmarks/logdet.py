"""``logdet``'s stochastic reference at real size: accuracy against the exact value, and speed.

On a shipped checkpoint (default ``checkpoints/patches-glow.pt``, d = 3072, float32), for the
first ``--samples`` samples of its own test set:

1. Accuracy. The exact ``log|det J|``: the dense Jacobian of the model copied to float64, one
   sample at a time by ``vmap``-ped VJPs, and ``slogdet`` (the model's own log-det printed
   beside it). The estimate as the audit computes it (:func:`innaudit.linalg.slq.log_abs_det_slq`,
   ``--probes`` x ``--steps``), per sample: estimate, standard error, quadrature bias,
   ``(estimate - exact) / stderr`` and whether the exact value lies in the reported bar
   ``[estimate - bias - 3 stderr, estimate + 3 stderr]``. Goal: inside on every sample.
2. Speed. The estimator's wall time against its raw passes: the same model evaluations
   (a VJP graph per chunk, then per step one ``vmap``-ped JVP over the probes and one
   ``vmap``-ped VJP on every step but the last) timed alone, without the Krylov bookkeeping.
   Goal: wall / raw <= 1.3. And the one-probe-at-a-time estimator
   (:func:`innaudit.linalg.lanczos.log_abs_det_estimate`) on the same samples: its wall time
   over the batched one's, and their largest difference in standard errors (stated tolerance:
   1e-3).

The 1-minute load average is printed before and after; on a busy machine compare only the
ratios of one run. Usage: ``python benchmarks/logdet.py [--model PATH] [--samples 4]
[--probes 8] [--steps 32] [--threads 1] [--chunk 256] [--no-sequential]``. Exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor
from torch.func import vjp, vmap

if importlib.util.find_spec("innaudit") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from innaudit.data import default_data, resolve_dataset
from innaudit.data.dataset import Role
from innaudit.linalg import log_abs_det_estimate
from innaudit.linalg.slq import MAX_ROWS, LogDetEstimate, log_abs_det_slq
from innaudit.loading import load_model
from innaudit.model.contract import InvertibleModel

ROOT = Path(__file__).resolve().parent.parent


def _verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def exact_log_det(model: InvertibleModel, x: Tensor, chunk: int = 256) -> Tensor:
    """``slogdet`` of the float64 model's dense Jacobian, one sample at a time."""
    m64 = model.copy_as(torch.float64)
    fn = lambda t: m64.forward(t, grad=True)  # noqa: E731
    out = []
    for i in range(len(x)):
        xi = x[i : i + 1].double()
        dim = xi.numel()
        with torch.enable_grad():
            z, back = cast("tuple[Tensor, Callable[..., Any]]", vjp(fn, xi))
            eye = torch.eye(dim, dtype=torch.float64)
            rows = [
                vmap(back)(eye[s : s + chunk].reshape(-1, *z.shape))[0].reshape(-1, dim) for s in range(0, dim, chunk)
            ]
        out.append(torch.linalg.slogdet(torch.cat(rows).detach())[1])
    return torch.stack(out)


def raw_passes(model: InvertibleModel, x: Tensor, probes: int, steps: int) -> float:
    """Seconds of the model evaluations the batched estimator performs, without its bookkeeping."""
    fn = lambda t: model.forward(t, grad=True)  # noqa: E731
    size = max(1, MAX_ROWS // probes)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with torch.enable_grad():
        for s in range(0, len(x), size):
            part = x[s : s + size]
            z, back = cast("tuple[Tensor, Callable[..., Any]]", vjp(fn, part))
            jvp = lambda t, p=part: torch.func.jvp(fn, (p,), (t,))[1]  # noqa: E731
            for j in range(steps):
                t = torch.randn(probes, *part.shape, generator=gen).to(part.dtype)
                vmap(jvp)(t)
                if j < steps - 1:
                    vmap(back)(torch.randn(probes, *z.shape, generator=gen).to(part.dtype))
    return time.perf_counter() - start


def _rows(est: LogDetEstimate, exact: Tensor, model_ld: Tensor) -> bool:
    low, high = est.bounds()
    inside = (low <= exact) & (exact <= high)
    print(f"{'sample':>6} {'exact':>12} {'model':>12} {'estimate':>12} {'stderr':>8} {'bias':>8} {'z':>6}  in bar")
    for i in range(len(exact)):
        z = float((est.values[i] - exact[i]) / est.stderr[i])
        print(
            f"{i:>6} {float(exact[i]):>12.2f} {float(model_ld[i]):>12.2f} {float(est.values[i]):>12.2f} "
            f"{float(est.stderr[i]):>8.2f} {float(est.bias[i]):>8.2f} {z:>6.2f}  {bool(inside[i])}"
        )
    return bool(inside.all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "patches-glow.pt"))
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=256, help="VJPs per vmapped call of the exact Jacobian (memory)")
    parser.add_argument("--no-sequential", action="store_true", help="skip the one-probe-at-a-time estimator")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    model = load_model(args.model).model
    domain = model.info.domain
    spec = default_data(domain) or "gaussian"
    x = resolve_dataset(spec, Role.IN_DISTRIBUTION, domain, args.samples, 0).first(args.samples).to(dtype=model.dtype)
    dim = int(x[0].numel())
    print(f"{Path(args.model).name}: d = {dim}, {model.dtype}, {len(x)} samples of {spec}, {args.threads} thread(s)")
    with torch.no_grad():
        _, model_ld = model.forward_and_log_det(x)
    start = time.perf_counter()
    exact = exact_log_det(model, x, args.chunk)
    exact_s = time.perf_counter() - start
    fn = lambda t: model.forward(t, grad=True)  # noqa: E731
    log_abs_det_slq(fn, x[:1], probes=2, steps=2)  # warm-up: torch.func's first calls build their caches
    raw_passes(model, x[:1], 2, 2)
    start = time.perf_counter()
    est = log_abs_det_slq(fn, x, probes=args.probes, steps=args.steps, generator=torch.Generator().manual_seed(0))
    wall = time.perf_counter() - start
    raw = raw_passes(model, x, args.probes, min(args.steps, dim))
    print(f"\n1. accuracy ({args.probes} probes x {est.steps} steps; exact: float64 Jacobian, {exact_s:.1f} s)")
    ok = _rows(est, exact, model_ld.double() if model_ld is not None else torch.full_like(exact, math.nan))
    print(f"exact inside [estimate - bias - 3 stderr, estimate + 3 stderr] on every sample: {_verdict(ok)}")
    print(
        f"\n2. speed: estimator {wall:.2f} s, its raw passes {raw:.2f} s, ratio {wall / raw:.2f} (goal 1.3: {_verdict(wall / raw <= 1.3)})"
    )
    if not args.no_sequential:
        start = time.perf_counter()
        seq, _ = log_abs_det_estimate(
            fn, x, probes=args.probes, steps=args.steps, generator=torch.Generator().manual_seed(0)
        )
        seq_s = time.perf_counter() - start
        gap = float(((est.values - seq).abs() / est.stderr).max())
        print(f"one probe at a time: {seq_s:.2f} s = {seq_s / wall:.2f} x the batched estimator")
        print(
            f"batched vs one at a time: largest difference {gap:.2e} stderr (tolerance 1e-3: {_verdict(gap <= 1e-3)})"
        )
    print(f"\nload average (1 min): {load:.2f} before, {os.getloadavg()[0]:.2f} after, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
