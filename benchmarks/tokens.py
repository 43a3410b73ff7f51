"""Cost of the ``tokens`` audit as a multiple of the model's own sequential sampling passes.

Goal: at most 1.5 times. Two configurations of the audit are timed on the same samples:

- ``localize`` (``autocast: none``): the token-by-token localization (per-block, per-token
  accumulated error, first token leaving rounding, log-scales, path gap), against one
  sequential sampling pass ``model.inverse(z)`` on the same batch;
- ``default`` (``autocast: bfloat16``): the same plus the precision lane, against the three
  sampling passes that lane needs anyway (float32, under ``torch.autocast(bfloat16)`` as the
  TarFlow scripts sample, and float64).

The models are zoo ``tarflow`` flows with random heads (4 blocks of 2 layers, width 64, patch
4) at 3x32x32 (64 tokens) and 3x64x64 (256 tokens). Runs are interleaved after a warm-up and
the best of ``--repeats`` of each is compared (the least disturbed on a shared machine); the
audit's time is its own ``duration_s`` (the run's planner, which times the model's calls before
any audit, is left out).

Usage: ``python benchmarks/tokens.py [--samples 16] [--repeats 3] [--threads 1]``. Prints
ratios, not bare times; exits 0 whatever they are.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

if importlib.util.find_spec("innaudit") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from innaudit.audits import specs
from innaudit.config.settings import parse_config
from innaudit.core.domain import DataDomain
from innaudit.data import Dataset, Role
from innaudit.loading.adapt import adapt_module
from innaudit.model.contract import InvertibleModel
from innaudit.run.audits import run_audits

GOAL = 1.5
SIZES = (32, 64)


def build(size: int) -> InvertibleModel:
    """A zoo TarFlow at ``3 x size x size`` with N(0, 0.05^2) heads."""
    from innaudit import zoo
    from innaudit.zoo.tarflow import tarflow_config

    module = zoo.build("tarflow", tarflow_config(shape=[3, size, size]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for block in list(module.blocks)[1:]:
            head = block.proj_out
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.05)
    domain = DataDomain(shape=(3, size, size), low=0.0, high=1.0, levels=256, name="bench")
    return adapt_module(module.eval(), domain, {"benchmark": "tokens"}, "tarflow")


def best(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` runs (a float returned by ``fn`` is its own measured time)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        got = fn()
        times.append(got if isinstance(got, float) else time.perf_counter() - start)
    return min(times)


def measure(size: int, samples: int, repeats: int) -> None:
    model = build(size)
    x = torch.rand(samples, 3, size, size, generator=torch.Generator().manual_seed(1))
    dataset = Dataset("uniform", "uniform", Role.OOD, samples, lambda a, b: x[a:b])
    with torch.no_grad():
        z = model.forward(x)
    wide = model.copy_as(torch.float64)
    latent = tuple(z.shape[1:])

    def audit(autocast: str) -> Callable[[], float]:
        raw = {"audits": ["tokens"], "samples": samples, "batch_size": samples, "tokens": {"autocast": autocast}}
        config = parse_config(raw, specs())

        def run() -> float:
            """The audit's own seconds (``duration_s``: its run, not the planner's timings)."""
            report = run_audits(model, (dataset,), config, latent_shape=latent)
            (result,) = report.audits
            assert result.results, result.message
            return result.duration_s

        return run

    def sample() -> object:
        return model.inverse(z)

    def sample_bf16() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model.inverse(z)

    def sample_f64() -> object:
        return wide.inverse(z.double())

    localize, default = audit("none"), audit("bfloat16")
    for fn in (sample, sample_bf16, sample_f64, localize, default):  # warm-up
        fn()
    runs: dict[str, list[float]] = {"one": [], "bf16": [], "f64": [], "localize": [], "default": []}
    for _ in range(repeats):  # interleaved, so a busy spell hits every side alike
        for key, fn in (
            ("one", sample),
            ("localize", localize),
            ("bf16", sample_bf16),
            ("f64", sample_f64),
            ("default", default),
        ):
            runs[key].append(best(fn, 1))
    one = min(runs["one"])
    three = one + min(runs["bf16"]) + min(runs["f64"])
    t_localize, t_default = min(runs["localize"]), min(runs["default"])
    tokens = latent[0]
    for name, spent, base, passes in (("localize", t_localize, one, 1), ("default", t_default, three, 3)):
        ratio = spent / base
        verdict = "meets" if ratio <= GOAL else "misses"
        print(
            f"3x{size}x{size} ({tokens} tokens), {samples} samples, {name:8s}: {ratio:.2f}x its "
            f"{passes} sampling pass{'es' if passes > 1 else ''} ({verdict} the goal <= {GOAL}x); "
            f"{spent / one:.2f}x one float32 sampling pass"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for size in SIZES:
        measure(size, args.samples, args.repeats)


if __name__ == "__main__":
    main()
