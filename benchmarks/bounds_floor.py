"""How tight a local certificate of ``sup ||J_F||`` could be with perfect bound propagation: the
floor of the ``bounds`` audit's first-order enclosures on a shipped checkpoint.

The local certificate bounds ``J_F`` over a sample's L_inf ball (half a quantization bin) from
each activation's slope range in the ball. Bound propagation can only over-state those ranges:
a ReLU that it calls unstable may in truth keep its sign. This script replaces the propagated
ranges by an oracle's: a ReLU counts as unstable only where ``--points`` points drawn in the
ball (uniformly and at its corners) show it switching, which is fewer than the true number. The
two enclosures are then computed with those ranges:

- **centred form** (the audit's, :mod:`innaudit.linalg.boxes`): ``|J - J_mid| <= sum_j |Q_j|
  B_j (|G_j| + W_j)`` entrywise;
- **norm form**: the same telescoping identity ``J - J_mid = sum_j Q_j B_j R_j J_j(x)`` with
  spectral norms in place of absolute values (``||diag(R_j)|| <= 1``): ``||J - J_mid|| <=
  sum_j ||Q_j B_j|| U_j``, where ``U_j`` bounds ``||J_j(x)||`` by the same sum up to stage ``j``.
  It keeps the cancellations ``|.|`` loses.

Both are certificates for the oracle's ranges, not for the ball: what these enclosures would
give with perfect bound propagation (ranges no wider than the true ones). Printed per sample:
the share of ReLUs seen switching, the largest ``||J_F||`` measured at the points, and each
floor over it. Where the floors stay far above 10x, no bound propagation brings these
enclosures to 10x, and what is left is a search over the switching units' patterns (mixed-integer programming: Jordan and Dimakis, "Exactly Computing the Local Lipschitz
Constant of ReLU Networks", NeurIPS 2020, https://arxiv.org/abs/2003.01219, who also show the
Lipschitz constant of a ReLU network is hard to approximate).

Usage: ``python benchmarks/bounds_floor.py [CHECKPOINT] [--samples N] [--points P] [--scale S]``
(``CHECKPOINT`` a name in ``checkpoints/`` without ``.pt``, ``digits-additive`` by default; the
ball's radius is half a bin times ``S``, 1 by default). The norm form takes a spectral norm per
pair of activation stages, the measurement an exact Jacobian per point.
Exits 0 whatever the outcome.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import Tensor

from innaudit.audits.bounds_local import ModelChain, model_chain
from innaudit.data import Role, default_data, resolve_dataset
from innaudit.linalg.boxes import _runs, block_enclosures, forward_bound, product_enclosure
from innaudit.linalg.chain import Slopes
from innaudit.linalg.intervals import box_slopes
from innaudit.loading import load_model
from innaudit.model.contract import InvertibleModel

ROOT = Path(__file__).resolve().parent.parent


def _points(x: Tensor, radius: float, count: int, gen: torch.Generator) -> Tensor:
    """``count`` points uniformly in the ball around ``x`` (``(d,)``) and ``count`` at its
    corners, float64."""
    d = x.numel()
    inside = x + radius * (2 * torch.rand(count, d, generator=gen, dtype=torch.float64) - 1)
    corners = x + radius * (2 * torch.randint(0, 2, (count, d), generator=gen).double() - 1)
    return torch.cat([inside, corners])


def oracle_slopes(chain: ModelChain, points: Tensor) -> list[Slopes]:
    """Every activation stage's slope range over ``points`` (``(n, d)``), one range ``(1, dim)``
    per stage: the smallest and largest slope seen at a point (a ReLU is unstable only where
    the points show it switching)."""
    seen = box_slopes(chain.stages, points, torch.zeros_like(points))
    assert seen is not None, "the chain cannot be evaluated"
    return [Slopes(s.low.amin(0, keepdim=True), s.high.amax(0, keepdim=True), s.act, s.carry) for s in seen]


def _measured(model: InvertibleModel, points: Tensor) -> float:
    """The largest ``||J_F||`` at ``points`` (``(n, d)``), from the model's own Jacobians."""
    shape = tuple(model.info.domain.shape)

    def flat(v: Tensor) -> Tensor:
        return model.forward(v.reshape(1, *shape), grad=True).reshape(-1)

    jac = torch.func.vmap(torch.func.jacrev(flat))(points.to(model.dtype))
    return float(torch.linalg.matrix_norm(jac.detach().double(), ord=2).max())


def _norm(m: Tensor) -> float:
    return float(torch.linalg.matrix_norm(m, ord=2)) if m.numel() else 0.0


def norm_form(chain: ModelChain, slopes: list[Slopes]) -> float:
    """``||J_mid|| + sum_j ||Q_j B_j|| U_j`` (module docstring) for the one box whose slope
    ranges are ``slopes``."""
    mats, count = _runs(chain.stages)
    mids = [((s.low[0] + s.high[0]) / 2).double() for s in slopes]
    halves = [((s.high[0] - s.low[0]) / 2).double() for s in slopes]
    sup: list[float] = []  # U_j: sup ||J_j(x)|| of the pre-activation of stage j (j = count: the output)
    mid = mats[0]  # G_j: the mean-slope chain up to stage j
    tails: list[Tensor] = []  # per earlier stage i: the mean-slope chain from its output to stage j's input
    for j in range(count + 1):
        total = _norm(mid)
        for i, tail in enumerate(tails):
            loose = halves[i] > 0
            if bool(loose.any()):
                total += _norm(tail[:, loose] * halves[i][loose][None, :]) * sup[i]
        sup.append(total)
        if j < count:
            mid = mats[j + 1] @ (mids[j][:, None] * mid)
            tails = [mats[j + 1] @ (mids[j][:, None] * tail) for tail in tails] + [mats[j + 1]]
    return sup[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", default="digits-additive")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--scale", type=float, default=1.0, help="the ball's radius in half bins")
    args = parser.parse_args()
    model = load_model(str(ROOT / "checkpoints" / f"{args.checkpoint}.pt")).model
    domain = model.info.domain
    chain = model_chain(model)
    spec = default_data(domain)
    if chain is None or spec is None or domain.bin_width is None:
        print(f"{args.checkpoint}: no chain, no built-in data set or no quantization bins: nothing to measure")
        return
    radius = 0.5 * domain.bin_width * args.scale
    x = resolve_dataset(spec, Role.IN_DISTRIBUTION, domain, args.samples, 0).first(args.samples)
    gen = torch.Generator().manual_seed(0)
    print(f"{args.checkpoint}: {spec}, L_inf radius {radius:.4g}, {2 * args.points} points per ball")
    print("sample  switching  measured   centred floor       norm floor   seconds")
    for k, row in enumerate(x.reshape(len(x), -1).double()):
        start = time.perf_counter()
        points = _points(row, radius, args.points, gen)
        slopes = oracle_slopes(chain, points)
        acts = [(s.high[0, s.carry :] > s.low[0, s.carry :]) for s in slopes]
        switching = sum(int(a.sum()) for a in acts) / sum(a.numel() for a in acts)
        measured = max(_measured(model, part) for part in points.split(500))
        centred = float(forward_bound(product_enclosure(block_enclosures(chain.blocks, slopes)))[0])
        normed = norm_form(chain, slopes)
        print(
            f"{k:6d}  {switching:8.1%}  {measured:8.4g}  {centred:9.3g} ({centred / measured:7.2g}x)"
            f"  {normed:8.3g} ({normed / measured:7.2g}x)  {time.perf_counter() - start:7.1f}"
        )


if __name__ == "__main__":
    main()
