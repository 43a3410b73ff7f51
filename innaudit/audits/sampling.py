"""The ``sampling`` audit."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import level_stats, map_batches, no_autograd, prior_set, recording, round_trip, set_progress
from innaudit.config.settings import Threshold
from innaudit.core.metrics import neither, rate, worse
from innaudit.core.stats import ErrorAccumulator
from innaudit.data import Dataset
from innaudit.model.latent import LevelStats

__all__ = ["Sampling"]


@register
class Sampling(Audit):
    r"""Sampling: ``z ~ N(0, T^2 I) -> x = F^-1(z) -> z' = F(x)``, per temperature ``T``.

    Property: a normalizing flow used as a generator must map prior draws to finite samples, and
    those samples must map back to the draws. This answers "can I sample from it": the paper's
    FlowGAN runs stopped on NaN samples (Behrmann et al. 2021, failure (iii)).

    Per draw: ``err = ||z - z'||_2`` and ``rel = err / max(||z||_2, 1e-6 sqrt(D))``. A draw is
    non-finite when ``x`` or ``z'`` holds NaN or Inf. Metrics per temperature (sets named
    ``prior@T=1.0``...): the same as ``roundtrip`` in latent space, with
    ``sample_nonfinite_fraction`` the share of draws whose sample ``x`` is already non-finite,
    and ``out_of_range_fraction`` the share of finite samples with an element more than one
    data-range width outside ``[low, high]``.

    Draws come from a generator seeded by (seed, "sampling", T, batch), ``--samples`` per
    temperature. A model with its own per-level priors (a normflows ``MultiscaleFlow``'s ``q0``)
    is sampled from them at temperature ``T``; otherwise ``z = T * eps``, ``eps ~ N(0, I)``. For a
    multi-scale latent, ``levels.<i>`` gives level ``i``'s ``nonfinite_fraction`` (share of
    draws whose ``F(F^-1(z))`` is non-finite on that level) and ``norm`` (``min``/``max`` of its
    finite per-sample norms): which level breaks first. Gate defaults as for ``roundtrip``: any non-finite draw fails; a relative
    error above 1e-4 warns and above 1e-2 fails.

    References:
        Behrmann, Vicol, Wang, Grosse, Jacobsen, "Understanding and Mitigating Exploding
        Inverses in Invertible Neural Networks", AISTATS 2021 (PMLR 130),
        https://arxiv.org/abs/2006.09347
    """

    id = "sampling"
    title = "Sampling from the prior: z -> F^-1(z) -> F(F^-1(z))"
    thresholds = {
        "nonfinite_fraction": Threshold(warn=None, fail=0.0),
        "rel_error_l2.max": Threshold(warn=1e-4, fail=1e-2),
    }
    options = {"temperatures": (1.0, 0.7)}
    metrics = (
        neither("n", doc="prior draws"),
        neither("temperature"),
        rate("nonfinite_fraction", "samples whose round trip is non-finite"),
        rate("nan_fraction", "samples with a NaN"),
        rate("inf_fraction", "samples with an Inf"),
        rate("sample_nonfinite_fraction", "samples F^-1(z) that are non-finite"),
        rate("out_of_range_fraction", "samples outside the data range"),
        worse("error_l2", doc="||F(F^-1(z)) - z||_2"),
        worse("rel_error_l2", doc="error / ||z||"),
        rate("levels.*.nonfinite_fraction", "draws whose level-i latent F(F^-1(z)) is non-finite"),
        neither("levels.*.norm", doc="range of the level's latent norms"),
    )

    @classmethod
    def capacities(cls, datasets: Sequence[Dataset], options: Mapping[str, Any], samples: int) -> list[int]:
        """One set of ``samples`` prior draws per temperature."""
        return [samples] * len(options["temperatures"])

    @classmethod
    def set_names(cls, datasets: Sequence[Dataset], options: Mapping[str, Any]) -> tuple[str, ...]:
        """``prior@T=t`` for each temperature."""
        del datasets  # the draws come from the prior
        return tuple(prior_set(t) for t in options["temperatures"])

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement per temperature; each temperature's batches of draws are the work
        units of a sharded run (a batch's draws are seeded by its start, not by the rank)."""
        n = ctx.samples
        dim = math.prod(ctx.latent_shape)
        domain = ctx.model.info.domain
        temperatures = list(ctx.option("temperatures"))
        names = [prior_set(t) for t in temperatures]

        def work(unit: tuple[int, int, int]) -> tuple[ErrorAccumulator, LevelStats | None, Tensor]:
            index, start, stop = unit
            temperature = temperatures[index]
            outside: list[Tensor] = []

            def inverse(z: Tensor) -> Tensor:
                x = ctx.model.inverse(z)
                flat = x.reshape(len(x), -1)
                far = ((flat < domain.low - domain.width) | (flat > domain.high + domain.width)).any(1)
                outside.append(far & torch.isfinite(flat).all(1))
                return x

            levels = level_stats(ctx.model)
            with no_autograd(ctx):
                acc = round_trip(
                    inverse,
                    recording(ctx.model.forward, levels),
                    [self._draw(ctx, temperature, start, stop - start)],
                    1e-6 * math.sqrt(dim),
                )
            far = torch.cat(outside)  # stays on the device in one process; the ranks gather host data
            return acc, levels, far if ctx.shard.single else far.cpu()

        sizes = [n] * len(temperatures)
        grouped = map_batches(ctx, sizes, work, progress=set_progress(ctx, names, sizes), paced=True)
        for temperature, name, mine in zip(temperatures, names, grouped, strict=True):
            acc = ErrorAccumulator(floor=1e-6 * math.sqrt(dim))
            levels = level_stats(ctx.model)
            for part, part_levels, _ in mine:
                acc.extend(part)
                if levels is not None and part_levels is not None:
                    levels.extend(part_levels)
            metrics = acc.metrics("sample")
            if levels is not None:
                metrics["levels"] = levels.metrics()
            metrics["temperature"] = float(temperature)
            outside = [far for _, _, far in mine]
            metrics["out_of_range_fraction"] = float(torch.cat(outside).double().mean()) if outside else 0.0
            yield Measurement(name, metrics, series={"error_histogram": acc.histogram()})

    @staticmethod
    def _draw(ctx: AuditContext, temperature: float, start: int, count: int) -> Tensor:
        """The ``count`` prior draws of the batch at ``start`` (seeded by (T, start))."""
        gen = ctx.generator("prior", temperature, start)
        eps = torch.randn((count, *ctx.latent_shape), generator=gen)
        return ctx.model.sample_prior(eps, temperature, gen).to(device=ctx.device, dtype=ctx.model.dtype)
