"""The paper's OOD table on real images, for the shipped 3x32x32 Glow and its bounded twin.

Behrmann et al., AISTATS 2021 (https://arxiv.org/abs/2006.09347), table 2: a CIFAR-10 Glow
round-trips its test set (0 % non-finite) but is non-finite on 100 % of the noise sets and on
24.9-38.9 % of some natural-image sets. Here the same measurement (``roundtrip``: the share of
samples whose ``F^-1(F(x))`` is NaN/Inf, and the largest relative error of the finite ones) runs
on ``checkpoints/patches-glow.pt`` (affine coupling, learned split priors) and
``checkpoints/patches-glow-additive.pt`` (additive coupling, fixed priors: globally
bi-Lipschitz) against their test patches, the held-out natural patches, the shipped
natural-image sets (``textures``, ``faces``, ``photos``: :mod:`innaudit.data.natural`) and the
paper's noise sets. ``docs/data.md`` has the table this prints.

Usage: ``python benchmarks/ood_table.py [--samples 1000] [--seed 0] [--markdown]``. Needs
scikit-image (``innaudit[images]``). Exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

if importlib.util.find_spec("innaudit") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

import innaudit

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "patches-glow (affine)": ROOT / "checkpoints" / "patches-glow.pt",
    "patches-glow-additive": ROOT / "checkpoints" / "patches-glow-additive.pt",
}
SETS = {
    "held-out": "patches:ood",
    "textures": "textures",
    "faces": "faces",
    "photos": "photos",
    "uniform": "uniform",
    "gaussian": "gaussian",
    "rademacher": "rademacher",
}


def table(samples: int, seed: int) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``{model: {set: (non-finite share, max relative error of the finite, n)}}``."""
    rows: dict[str, dict[str, tuple[float, float, int]]] = {}
    for label, path in MODELS.items():
        report = innaudit.audit(str(path), ood=dict(SETS), audits=["roundtrip"], samples=samples, seed=seed)
        (audit,) = report.audits
        rows[label] = {
            r.dataset: (
                float(r.metrics["nonfinite_fraction"]),
                float(r.metrics["rel_error_l2"]["max"]),
                int(r.metrics["n"]),
            )
            for r in audit.results
        }
    return rows


def _cell(value: tuple[float, float, int]) -> str:
    share, error, _ = value
    shown = "-" if not math.isfinite(error) else f"{error:.1e}"
    return f"{100 * share:.1f} % / {shown}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = table(args.samples, args.seed)
    sets = list(next(iter(rows.values())))
    sizes = {s: next(iter(rows.values()))[s][2] for s in sets}
    header = ["set (samples)", *rows]
    lines = [" | ".join(header)]
    if args.markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in sets:
        cells = [f"{s} ({sizes[s]})", *(_cell(rows[m][s]) for m in rows)]
        lines.append("| " + " | ".join(cells) + " |" if args.markdown else " | ".join(cells))
    print("non-finite share / max relative error of the finite round trips")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
