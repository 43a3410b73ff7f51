"""Overhead of the ``roundtrip`` audit over the model's own ``inverse(forward(x))``.

Goal: the audit's throughput is at least 0.9 times the raw round trip's (at most 10% overhead
from the audit machinery: the InvertibleModel wrapper's clones and mode handling, per-sample
norms, non-finite masks, accumulation and the summary statistics).

Both sides see the same pre-generated batches of uniform noise shaped like the model's input,
so the ratio isolates the audit machinery from data generation. Raw and audit runs are
interleaved after a warm-up, and the best of ``--repeats`` runs of each is compared.

Usage: ``python benchmarks/roundtrip.py [--samples 20000] [--batch-size 500] [--repeats 5]
[--threads N] [--profile]``. Prints a ratio, not a bare time; exits 0 whatever the ratio.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

if importlib.util.find_spec("innaudit") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from torch import nn

from innaudit.audits import specs
from innaudit.config.settings import parse_config
from innaudit.core.domain import DataDomain
from innaudit.data import Dataset, Role, resolve_dataset
from innaudit.loading.adapt import adapt_module
from innaudit.run.audits import Subject, run_audits

GOAL = 0.9
ARCHITECTURE = {
    "shape": [1, 8, 8],
    "steps": 8,
    "hidden": 64,
    "coupling": "affine",
    "scale": "sigmoid",
    "permutation": "conv1x1",
    "actnorm": True,
    "seed": 0,
}


def build_model() -> tuple[nn.Module, DataDomain, str]:
    """A realistic flow: the zoo's Glow-style coupling-image model on 8x8 digits-sized inputs."""
    from innaudit import zoo

    module = zoo.build("coupling-image", ARCHITECTURE)
    domain = DataDomain(shape=tuple(ARCHITECTURE["shape"]), low=0.0, high=1.0, levels=17, name="bench")
    described = ", ".join(f"{k}={v}" for k, v in ARCHITECTURE.items())
    return module.eval(), domain, f"coupling-image({described})"


def pregenerated(domain: DataDomain, samples: int, seed: int) -> tuple[Dataset, torch.Tensor]:
    """The built-in ``uniform`` set materialized once, and a Dataset serving slices of it."""
    source = resolve_dataset("uniform", Role.OOD, domain, samples, seed)
    data = torch.cat(list(source.batches(4096)))
    dataset = Dataset("uniform", "uniform", Role.OOD, samples, lambda a, b: data[a:b])
    return dataset, data


def raw_round_trip(module: nn.Module, data: torch.Tensor, batch_size: int) -> None:
    """What a user would time: ``inverse(forward(x))`` batch by batch, nothing else."""
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x = data[start : start + batch_size]
            module.inverse(module(x)[0])


def best_of(runs: list[float]) -> float:
    """The fastest run: the least disturbed by other processes on a shared machine."""
    return min(runs)


def _fmt(runs: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--profile", action="store_true", help="cProfile one audit run and print the top")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    module, domain, described = build_model()
    dataset, data = pregenerated(domain, args.samples, seed=0)
    model = adapt_module(module, domain, {"benchmark": "roundtrip"}, "coupling-image")
    config = parse_config({"audits": ["roundtrip"], "samples": args.samples, "batch_size": args.batch_size}, specs())
    latent_shape = tuple(module(data[:1])[0].shape[1:])

    def audit() -> None:
        report = run_audits(Subject(model, (dataset,), config, latent_shape))
        (result,) = report.audits
        assert result.results and result.results[0].metrics["n"] == args.samples, result.message

    def raw() -> None:
        raw_round_trip(module, data, args.batch_size)

    def timed(fn: Callable[[], None]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    # warm-up: allocator, oneDNN kernels, lazy imports on both paths
    raw(), audit()
    raw_times, audit_times = [], []
    for _ in range(args.repeats):
        raw_times.append(timed(raw))
        audit_times.append(timed(audit))

    raw_rate = args.samples / best_of(raw_times)
    audit_rate = args.samples / best_of(audit_times)
    ratio = audit_rate / raw_rate
    median_ratio = statistics.median(raw_times) / statistics.median(audit_times)
    print(f"model:            {described}")
    print(f"threads:          {torch.get_num_threads()}")
    print(f"samples:          {args.samples}")
    print(f"batch size:       {args.batch_size}")
    print(f"repeats:          {args.repeats} (best of each, interleaved)")
    print(f"raw samples/s:    {raw_rate:,.0f}")
    print(f"audit samples/s:  {audit_rate:,.0f}")
    print(f"ratio:            {ratio:.3f} (of medians: {median_ratio:.3f})")
    print(f"run times (s):    raw {_fmt(raw_times)}; audit {_fmt(audit_times)}")
    print(f"goal >= {GOAL}:      {'met' if ratio >= GOAL else 'not met'}")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(audit)
        stats = pstats.Stats(profiler).sort_stats("cumulative")
        stats.print_stats(25)


if __name__ == "__main__":
    main()
