"""A user's own normflows flow on the 8x8 digits, built by a factory and trained by a plain loop.

The worked example of ``docs/repair.md``: ``flow()`` is the factory ``innaudit`` loads with
``--weights`` (``benchmarks/repair_factory.py:flow``), ``train()`` the user's training loop, in
which the paper's FD regularizer is two lines (``--fd``). The flow is RealNVP-style: 8 normflows
``AffineCouplingBlock`` s (``exp`` scale, unbounded) with half swaps between them.

Run ``python benchmarks/repair_factory.py -o flow-weights.pt [--fd] [--steps N]`` (one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

DIM = 64
LEVELS = 17


def flow(couplings: int = 8) -> nn.Module:
    """The factory: a normflows RealNVP on flattened 8x8 digits in ``[0, 1)`` (17 levels)."""
    import normflows as nf

    layers: list[nn.Module] = []
    for _ in range(couplings):
        layers.append(nf.flows.AffineCouplingBlock(nf.nets.MLP([DIM // 2, 64, DIM], init_zeros=True)))
        layers.append(nf.flows.Permute(DIM, mode="swap"))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(DIM, trainable=False), layers)
    model.input_shape = (DIM,)  # what innaudit reads to build the data domain
    model.data_range = (0.0, 1.0)
    model.data_levels = LEVELS
    return model


def small_flow() -> nn.Module:
    """The same flow with 4 couplings (``--couplings 4``)."""
    return flow(4)


def _bounded(model: nn.Module) -> nn.Module:
    """``model`` with the bounded scales a repair chose: the clamps (``run.repair.remedies[0]
    .parameters.clamp`` of the repair's JSON report) read from ``clamps.json``, or from the file
    that ``REPAIR_CLAMPS`` names."""
    from innaudit.remedies import bound_scales

    path = Path(os.environ.get("REPAIR_CLAMPS", "clamps.json"))
    return bound_scales(model, json.loads(path.read_text(encoding="utf-8")))


def repaired_flow() -> nn.Module:
    """:func:`flow` with the repair's bounded scales; load the repaired state dict with ``--weights``."""
    return _bounded(flow())


def repaired_small_flow() -> nn.Module:
    """:func:`small_flow` with the repair's bounded scales."""
    return _bounded(small_flow())


def digits() -> torch.Tensor:
    """The training digits, flattened, at the lower edges of their bins in ``[0, 1)``."""
    from innaudit.data.digits import load_digits

    return torch.from_numpy(load_digits("train")[0]).reshape(-1, DIM).float()


def train(steps: int = 1500, fd: bool = False, seed: int = 0, couplings: int = 8) -> nn.Module:
    """The user's loop: maximum likelihood with Adam on dequantized digits, optionally with FD."""
    from innaudit.train.regularizers import fd_regularizer

    torch.manual_seed(seed)
    model, x_all = flow(couplings), digits()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(steps):
        batch = x_all[torch.randint(len(x_all), (128,), generator=generator)]
        x = batch + torch.rand(batch.shape, generator=generator) / LEVELS  # dequantize
        loss = model.forward_kld(x)  # normflows: -log p(x); model.inverse is x -> z
        if fd and step % 10 == 0:  # the paper's FD term, every 10th step
            loss = loss + fd_regularizer(model.inverse, model.forward, x, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="where to write the state dict")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--fd", action="store_true", help="add the FD regularizer to the loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--couplings", type=int, default=8, help="8 (flow) or 4 (small_flow)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = train(args.steps, args.fd, args.seed, args.couplings)
    torch.save(model.state_dict(), args.output)
    print(f"wrote {args.output} ({args.steps} steps{', FD' if args.fd else ''}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
