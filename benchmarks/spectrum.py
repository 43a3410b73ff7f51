"""Speed and accuracy goals of the Jacobian methods in ``innaudit.linalg``.

1. Exact method (``jacobian_singular_values``: vmap over jacrev, SVD in float64) against the
   reference code's way: a per-sample loop of ``torch.autograd.functional.jacobian``, on the
   same samples of the shipped digits checkpoint. Goal: at least 10x faster, singular values
   equal to 1e-5 relative.
2. Matrix-free method (Lanczos through JVP/VJP, ``sigma_min`` from the inverse) at dimension
   3072 (a coupling-image flow on 3x32x32 with randomized coupling outputs) against the exact
   SVD of the full Jacobian. Goal: both extreme singular values within 1 % using at most 64
   JVP/VJP pairs per sample and per direction.

Usage: ``python benchmarks/spectrum.py [--samples 64] [--big-samples 2] [--threads N]``.
Prints ratios and "met" / "not met"; exits 0 whatever the outcome.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

if importlib.util.find_spec("innaudit") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from innaudit.core.domain import DataDomain
from innaudit.linalg import extreme_singular_values, jacobian_singular_values
from innaudit.loading import load_model
from innaudit.loading.adapt import adapt_module
from innaudit.zoo import build

ROOT = Path(__file__).resolve().parent.parent


def _verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def exact_vs_loop(samples: int) -> None:
    """Goal 1: vmap exact method against the per-sample autograd loop."""
    model = load_model(str(ROOT / "checkpoints" / "digits-affine.pt")).model
    from innaudit.data.digits import load_digits

    x = torch.as_tensor(load_digits("test")[0][:samples])
    fwd = lambda t: model.forward(t, grad=True)  # noqa: E731
    jacobian_singular_values(fwd, x)  # warm-up (torch.func's first call imports and caches)
    t_fast, t_loop = float("inf"), float("inf")
    for _ in range(3):  # best of three, interleaved, as in benchmarks/roundtrip.py
        start = time.perf_counter()
        fast = jacobian_singular_values(fwd, x)
        t_fast = min(t_fast, time.perf_counter() - start)
        start = time.perf_counter()
        rows = []
        for xi in x:
            one = lambda v: model.forward(v.unsqueeze(0), grad=True).reshape(-1)  # noqa: E731
            with torch.enable_grad():
                jac = torch.autograd.functional.jacobian(one, xi).reshape(64, 64)
            rows.append(torch.linalg.svdvals(jac.double()))
        t_loop = min(t_loop, time.perf_counter() - start)
    slow = torch.stack(rows)
    rel = float(((fast - slow).abs() / slow.abs().clamp_min(1e-30)).max())
    speedup = t_loop / t_fast
    print(
        f"[1] exact (vmap/jacrev) vs per-sample autograd.functional.jacobian, {samples} digits, "
        f"dim 64: {t_fast:.3f} s vs {t_loop:.3f} s, speed-up {speedup:.1f}x (goal >= 10x: "
        f"{_verdict(speedup >= 10)}); max relative difference of singular values {rel:.2e} "
        f"(goal <= 1e-5: {_verdict(rel <= 1e-5)})"
    )


def _big_model():
    module = build(
        "coupling-image",
        {"shape": [3, 32, 32], "steps": 4, "hidden": 32, "coupling": "affine", "scale": "bounded", "seed": 0},
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in module.blocks:
            out = getattr(getattr(block, "net", None), "out", None)
            if out is not None:
                out.weight.normal_(0.0, 0.05, generator=gen)
    return adapt_module(module, DataDomain(shape=(3, 32, 32)), {"benchmark": "spectrum"})


def matrix_free_vs_exact(samples: int, max_iter: int = 64) -> None:
    """Goal 2: matrix-free extremes at dimension 3072 against the exact SVD."""
    model = _big_model()
    x = torch.rand(samples, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    fwd = lambda t: model.forward(t, grad=True)  # noqa: E731
    inv = lambda t: model.inverse(t, grad=True)  # noqa: E731
    start = time.perf_counter()
    exact = jacobian_singular_values(fwd, x)
    t_exact = time.perf_counter() - start
    start = time.perf_counter()
    top, inv_top = extreme_singular_values(
        fwd, inv, x, tol=1e-4, max_iter=max_iter, generator=torch.Generator().manual_seed(0)
    )
    t_free = time.perf_counter() - start
    err_max = float(((top.values - exact[:, 0]) / exact[:, 0]).abs().max())
    err_min = float(((1 / inv_top.values - exact[:, -1]) / exact[:, -1]).abs().max())
    pairs = int(max(top.iterations.max(), inv_top.iterations.max()))
    ok = err_max <= 1e-2 and err_min <= 1e-2 and pairs <= 64
    print(
        f"[2] matrix-free vs exact SVD at dim 3072, {samples} samples: sigma_max "
        f"{exact[:, 0].tolist()} rel. error {err_max:.2e}; sigma_min {exact[:, -1].tolist()} "
        f"rel. error {err_min:.2e}; JVP/VJP pairs per sample and direction <= {pairs} "
        f"(forward {top.iterations.tolist()}, inverse {inv_top.iterations.tolist()}); "
        f"time {t_free:.1f} s vs {t_exact:.1f} s exact, ratio {t_exact / t_free:.1f}x "
        f"(goal within 1 % using <= 64 pairs: {_verdict(ok)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--big-samples", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads for both sides (default: torch's, one per core)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads: {torch.get_num_threads()} (both sides)")
    exact_vs_loop(args.samples)
    matrix_free_vs_exact(args.big_samples)


if __name__ == "__main__":
    main()
