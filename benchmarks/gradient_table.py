"""The paper's memory-saving gradient experiment in miniature, on the shipped checkpoints.

Behrmann et al., "Understanding and Mitigating Exploding Inverses in Invertible Neural
Networks", AISTATS 2021 (https://arxiv.org/abs/2006.09347), section 5: INN classifiers trained
with memory-saving backpropagation get wrong gradients when the inverse is unstable; the FD
regularizer keeps them right. Their ``compute_gradient_angles.py`` compares, on the first 42
training batches of 128 images in eval mode with the cross-entropy loss, the true gradient over
all flow parameters with the memory-saving one (angle, L2 and relative L2 distance).

Here, with innaudit's own :func:`innaudit.audits.gradient_compare.compare_gradients` (the algorithm of
the ``gradient`` audit):

- the eight supervised classifiers (``digits-classifier-{affine,additive}[-fd|-nf|-ms]``; ``-ms``
  trained with memory-saving gradients in the loop) with the paper's loss, cross-entropy of the linear head on ``F(x)`` (gradient over the flow's
  parameters, the head's gradient is exact either way), and with the flow's NLL;
- the density models on the digits (``digits-affine``, ``-affine-fd``, ``-affine-deep``,
  ``-additive``, ``-residual``) with their NLL;
- the paper's 2-D regression toy (section 5.3), ``regression2d-affine`` and ``-affine-nf``, with
  its training loss ``||F(x) - (0, x2)||^2`` (MSE) and with the NLL.

Data: the unshuffled training digits (1437 images) in batches of ``--batch`` (128 as in the
paper: 11 full batches and one of 29), without dequantization noise; for the toy, its 4000
training points in batches of 500. Printed per model: the
median and largest relative error ``||g' - g|| / ||g||`` and angle over the batches, the share
of batches with a non-finite memory-saving gradient, the largest reconstruction error of a
block input, and the first block of the backward walk whose reconstruction leaves float32
rounding (1000 eps).

``--continue-steps N`` then trains ``digits-classifier-affine`` further (the recipe's setting:
cross-entropy, Adam lr 1e-3, batches of 128 dequantized training digits, true gradients) and
prints the cross-entropy rows every ``N / 4`` steps: the paper's error-against-iteration curve.

Usage: ``python benchmarks/gradient_table.py [--batch N] [--checkpoints DIR] [--continue-steps N]
[--models A,B]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from innaudit.audits.gradient_compare import BatchComparison, compare_gradients, culprit, nll_loss
from innaudit.data.builtin import regression_targets, toy_2d
from innaudit.data.digits import LEVELS, load_digits
from innaudit.loading import load_model
from innaudit.model.contract import InvertibleModel

CLASSIFIERS = [f"digits-classifier-{c}{r}" for c in ("affine", "additive") for r in ("", "-fd", "-nf", "-ms")]
DENSITY = ["digits-affine", "digits-affine-fd", "digits-affine-deep", "digits-additive", "digits-residual"]
TOYS = ["regression2d-affine", "regression2d-affine-nf"]
LEVEL = 1000 * torch.finfo(torch.float32).eps


def _batches(batch: int) -> list[tuple[Tensor, Tensor]]:
    images, labels = load_digits("train")
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]


def _row(name: str, loss: str, found: Sequence[BatchComparison], names: Sequence[str]) -> str:
    rel = np.array([r.rel_error for r in found])
    angle = np.array([r.angle for r in found])
    recon = np.max([r.recon_error for r in found], axis=0)
    where = culprit(recon, LEVEL)
    bad = np.mean([r.nonfinite for r in found])

    def num(values: np.ndarray, how: str) -> str:
        kept = values[np.isfinite(values)]
        return "-" if kept.size == 0 else f"{getattr(np, how)(kept):.1e}"

    return (
        f"{name:30s} {loss:4s} {num(rel, 'median'):>9s} {num(rel, 'max'):>9s} "
        f"{num(angle, 'median'):>9s} {num(angle, 'max'):>9s} {100 * bad:6.1f} "
        f"{recon.max():9.1e}  {names[where] if where >= 0 else '-'}"
    )


def _mse(z: Tensor, log_det: Tensor | None, x: Tensor) -> Tensor:
    """The regression toy's training loss (summed over dimensions, mean over the batch)."""
    return F.mse_loss(z, regression_targets(x), reduction="sum") / len(x)


def measure(path: Path, batches: list[tuple[Tensor, Tensor]], classifier: bool) -> list[str]:
    """Rows for one checkpoint: cross-entropy (classifiers) or MSE (the toy), and NLL."""
    model = load_model(str(path)).model
    blocks = model.blocks()
    names = [f"{i}:{b.info.architecture}" for i, b in enumerate(blocks)]
    rows = []
    if path.stem in TOYS:
        rows.append(_row(path.stem, "MSE", [compare_gradients(blocks, x, _mse) for x, _ in batches], names))
    if classifier:
        head = model.module.head
        found = [
            compare_gradients(blocks, x, lambda z, ld, _x, y=y: F.cross_entropy(head(z.flatten(1)), y))
            for x, y in batches
        ]
        rows.append(_row(path.stem, "CE", found, names))
    found = [compare_gradients(blocks, x, nll_loss) for x, _ in batches]
    rows.append(_row(path.stem, "NLL", found, names))
    return rows


def _ce_row(model: InvertibleModel, batches: list[tuple[Tensor, Tensor]], label: str) -> str:
    blocks, head = model.blocks(), model.module.head
    names = [f"{i}:{b.info.architecture}" for i, b in enumerate(blocks)]
    found = [
        compare_gradients(blocks, x, lambda z, ld, _x, y=y: F.cross_entropy(head(z.flatten(1)), y)) for x, y in batches
    ]
    return _row(label, "CE", found, names)


def continue_training(path: Path, batches: list[tuple[Tensor, Tensor]], steps: int) -> None:
    """Train the classifier ``steps`` more steps; print its gradient error every quarter."""
    model = load_model(str(path)).model
    module = model.module
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    gen = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    for step in range(steps + 1):
        if step % max(1, steps // 4) == 0:
            print(_ce_row(model, batches, f"{path.stem} +{step}"), flush=True)
        module.train()
        index = torch.randint(len(x), (128,), generator=gen)
        xb = x[index] + torch.rand(x[index].shape, generator=gen) / LEVELS
        z, _ = module(xb)
        loss = F.cross_entropy(module.head(z.flatten(1)), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    module.eval()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--continue-steps", type=int, default=0)
    parser.add_argument("--models", default=",".join(CLASSIFIERS + DENSITY + TOYS), help="comma-separated names")
    parser.add_argument("--checkpoints", type=Path, default=Path(__file__).resolve().parents[1] / "checkpoints")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    batches = _batches(args.batch)
    print(f"True vs memory-saving gradients over {len(batches)} training batches of up to {args.batch} digits")
    print(
        f"{'model':30s} {'loss':4s} {'rel med':>9s} {'rel max':>9s} {'ang med':>9s} {'ang max':>9s} "
        f"{'%nonfin':>6s} {'recon max':>9s}  first block off rounding ({LEVEL:.1e})"
    )
    toy = toy_2d("regression2d", 4000, torch.Generator().manual_seed(11))  # the recipe's seed-0 training set
    toy_batches = [(toy[i : i + 500], toy[i : i + 500]) for i in range(0, len(toy), 500)]
    for name in [n for n in args.models.split(",") if n]:
        path = args.checkpoints / f"{name}.pt"
        if not path.exists():
            print(f"{name:30s} (missing)")
            continue
        for row in measure(path, toy_batches if name in TOYS else batches, name in CLASSIFIERS):
            print(row)
    if args.continue_steps > 0:
        continue_training(args.checkpoints / "digits-classifier-affine.pt", batches, args.continue_steps)
    print("angle: arccos of the cosine clipped to 1 - 1e-9, so 4.5e-05 rad is the smallest it reports")


if __name__ == "__main__":
    main()
