"""Cost of one ``attack`` step against the model's raw forward + inverse + backward.

Goal: one attack step (``innaudit.audits.attack_search.sign_gradient_attack``: objective, round-trip
scoring, non-finite bookkeeping, sign step, projection) costs at most 1.15 times the raw
``x.requires_grad_(); r = inverse(forward(x)); ||r - x||.sum().backward()`` on the same batch
with the bare module (no InvertibleModel wrapper).

Both are timed on the same batch of in-cell digits through the shipped checkpoint, interleaved
after a warm-up; the best of ``--repeats`` runs of each is compared. Both objectives
are reported: ``reconstruction`` (the default) and ``amplification``, which pays one extra
inverse pass without autograd to score the plain round trip.

Usage: ``python benchmarks/attack.py [--checkpoint checkpoints/digits-affine.pt]
[--batch-size 64] [--steps 20] [--repeats 5] [--threads 1]``. Prints ratios and "met"/"not
met"; exits 0 whatever the ratio.
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

from innaudit.audits.attack_search import attack_ball, sign_gradient_attack
from innaudit.data.digits import load_digits
from innaudit.loading import load_model

GOAL = 1.15
ROOT = Path(__file__).resolve().parent.parent


def _raw(module: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps + 1):
        xa = x.detach().clone().requires_grad_(True)
        out = module(xa)
        z = out[0] if isinstance(out, tuple) else out
        back = module.inverse(z)
        torch.linalg.vector_norm((back - xa).flatten(1), dim=1).sum().backward()
    return time.perf_counter() - start


def _attack(model, ball, steps: int, objective: str) -> float:
    start = time.perf_counter()
    sign_gradient_attack(model, ball, steps, 0.032 * ball.epsilon, objective, torch.Generator().manual_seed(0))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "digits-additive.pt"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint).model
    model.module.eval()
    x = torch.from_numpy(load_digits("test")[0][: args.batch_size]).to(model.dtype)
    domain = model.info.domain
    ball = attack_ball(x, domain, 0.5 * (domain.bin_width or domain.width / 256), torch.Generator().manual_seed(0))
    _raw(model.module, ball.centre, 2)
    times: dict[str, list[float]] = {"raw": [], "reconstruction": [], "amplification": []}
    for _ in range(args.repeats):
        times["raw"].append(_raw(model.module, ball.centre, args.steps))
        for objective in ("reconstruction", "amplification"):
            times[objective].append(_attack(model, ball, args.steps, objective))
    raw = min(times["raw"])
    print(
        f"{Path(args.checkpoint).name}: batch {len(x)}, {args.steps + 1} evaluations, best of {args.repeats}, "
        f"{args.threads} thread(s); raw forward+inverse+backward {1e3 * raw / (args.steps + 1):.2f} ms/step"
    )
    for objective in ("reconstruction", "amplification"):
        ratio = min(times[objective]) / raw
        print(f"attack step ({objective}) / raw: {ratio:.3f}  goal <= {GOAL}: {'met' if ratio <= GOAL else 'not met'}")


if __name__ == "__main__":
    main()
