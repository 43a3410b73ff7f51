"""The paper's two result tables in miniature, from the shipped checkpoints (CPU, a few minutes).

Behrmann et al., "Understanding and Mitigating Exploding Inverses in Invertible Neural
Networks", AISTATS 2021 (paper-spec.md section 6):

(a) Table B, OOD reconstruction: per data set (checkerboard models also on a 100 x 100 grid
    over [-8, 8)^2), % non-finite round trips and the mean L2
    error over the finite ones, for the affine (Glow-like), additive and residual (ResFlow)
    density models on the digits and on the 2-D checkerboard. The residual rows also give the
    fixed-point tolerance and the number of capped solves.
(b) Table C, supervised INN classifiers: coupling x regularizer -> invertible?, test accuracy,
    reconstruction error on the test digits, and the smallest / largest singular value of the
    exact 64x64 Jacobian (minimum of sigma_min and maximum of sigma_max over the 360 test digits;
    the paper used one test image).
(c) the 2-D regression toy (paper 5.3): sigma_min collapse with and without the NF term.

Usage: ``python benchmarks/paper_table.py [--samples N] [--checkpoints DIR]``. Missing
checkpoints are listed, not fatal. Every figure comes from innaudit's own API.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

import innaudit
from innaudit.linalg import jacobian_singular_values
from innaudit.loading import load_model

ROUNDTRIP_MODELS = (
    "digits-affine",
    "digits-affine-fd",
    "digits-additive",
    "digits-residual",
    "checkerboard-affine",
    "checkerboard-additive",
    "checkerboard-residual",
)
CLASSIFIERS = [(c, r) for c in ("additive", "affine") for r in ("none", "fd", "nf")]


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1e}"


def _roundtrip(path: Path, samples: int, extra_ood: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Metrics per set of the roundtrip audit (default battery, plus ``extra_ood``)."""
    ood = ("uniform", "gaussian", "rademacher", *extra_ood)
    report = innaudit.audit(str(path), ood=ood, config={"audits": ["roundtrip"], "samples": samples})
    (result,) = report.audits
    if result.error:
        raise RuntimeError(f"{path}: {result.error}")
    return {r.dataset: dict(r.metrics) for r in result.results}


def table_a(folder: Path, samples: int) -> list[str]:
    """Rows ``model | set | % non-finite | mean err (finite) | max rel err | cap hits``."""
    lines = [
        "(a) Round trip x -> F^-1(F(x)) per set (Table B in miniature)",
        f"{'model':24s} {'set':18s} {'% non-finite':>12s} {'err (finite)':>12s} {'max rel err':>11s} {'cap hits':>8s}",
    ]
    for name in ROUNDTRIP_MODELS:
        path = folder / f"{name}.pt"
        if not path.exists():
            lines.append(f"{name:24s} (missing)")
            continue
        extra = ("grid=grid:-8,8,100",) if name.startswith("checkerboard") else ()
        model = load_model(str(path)).model
        for dataset, m in _roundtrip(path, samples, extra).items():
            hits = m.get("inverse_cap_hits")
            lines.append(
                f"{name:24s} {dataset:18s} {100 * m['nonfinite_fraction']:12.1f} "
                f"{_fmt(m['error_l2']['mean']):>12s} {_fmt(m['rel_error_l2']['max']):>11s} "
                f"{'-' if hits is None else hits:>8}"
            )
        if model.info.inverse_tolerance is not None:
            lines.append(
                f"{'':24s} fixed-point tolerance {model.info.inverse_tolerance:g}, "
                f"cap {model.info.inverse_max_iter} iterations"
            )
    return lines


def _provenance(path: Path) -> dict[str, Any]:
    """The provenance block of a native checkpoint (plain data; weights_only load)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return dict(payload.get("provenance") or {})


def _singular_values(path: Path, x: torch.Tensor) -> tuple[float, float]:
    model = load_model(str(path)).model
    values = jacobian_singular_values(lambda t: model.forward(t, grad=True), x)
    finite = torch.isfinite(values).all(1)
    if not bool(finite.any()):
        return math.nan, math.nan
    return float(values[finite, -1].min()), float(values[finite, 0].max())


def table_b(folder: Path) -> list[str]:
    """Rows ``coupling | regularizer | invertible? | test acc | recon err | min SV | max SV``."""
    from innaudit.data.digits import load_digits

    x = torch.from_numpy(load_digits("test")[0])
    lines = [
        "(b) Supervised INN classifiers on the 8x8 digits (Table C in miniature)",
        f"{'coupling':9s} {'reg':5s} {'inv?':5s} {'test acc':>8s} {'recon err':>10s} "
        f"{'min SV':>9s} {'max SV':>9s} {'noise %nf':>9s}",
    ]
    for coupling, reg in CLASSIFIERS:
        name = f"digits-classifier-{coupling}" + ("" if reg == "none" else f"-{reg}")
        path = folder / f"{name}.pt"
        if not path.exists():
            lines.append(f"{coupling:9s} {reg:5s} (missing {path.name})")
            continue
        acc = float(_provenance(path).get("test_accuracy", math.nan))
        metrics = _roundtrip(path, 2000)
        data = metrics["digits:test"]
        noise = max(m["nonfinite_fraction"] for k, m in metrics.items() if k != "digits:test")
        invertible = data["nonfinite_fraction"] == 0 and data["rel_error_l2"]["max"] < 1e-2
        smin, smax = _singular_values(path, x)
        lines.append(
            f"{coupling:9s} {reg:5s} {'yes' if invertible else 'NO':5s} "
            f"{100 * acc:8.2f} {_fmt(data['error_l2']['mean']):>10s} {_fmt(smin):>9s} "
            f"{_fmt(smax):>9s} {100 * noise:9.1f}"
        )
    return lines


def table_c(folder: Path) -> list[str]:
    """The 2-D regression toy: % non-finite and sigma_min on its inputs, with / without NF."""
    from innaudit.data.builtin import toy_2d

    x = toy_2d("regression2d", 2000, torch.Generator().manual_seed(11))
    lines = [
        "(c) 2-D regression toy (paper 5.3): target (0, x2) is not invertible",
        f"{'model':24s} {'% non-finite':>12s} {'err (finite)':>12s} {'max err':>9s} {'min SV':>9s} {'max SV':>9s}",
    ]
    for name in ("regression2d-affine", "regression2d-affine-nf"):
        path = folder / f"{name}.pt"
        if not path.exists():
            lines.append(f"{name:24s} (missing)")
            continue
        model = load_model(str(path)).model
        with torch.no_grad():
            back = model.inverse(model.forward(x))
        err = (back - x).norm(dim=1)
        finite = torch.isfinite(err)
        smin, smax = _singular_values(path, x)
        lines.append(
            f"{name:24s} {100 * (1 - finite.double().mean().item()):12.2f} "
            f"{_fmt(float(err[finite].mean())):>12s} {_fmt(float(err[finite].max())):>9s} "
            f"{_fmt(smin):>9s} {_fmt(smax):>9s}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--checkpoints", type=Path, default=Path(__file__).parents[1] / "checkpoints")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for block in (table_a(args.checkpoints, args.samples), table_b(args.checkpoints), table_c(args.checkpoints)):
        print("\n".join(block), end="\n\n", flush=True)


if __name__ == "__main__":
    main()
