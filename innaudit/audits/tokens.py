"""The ``tokens`` audit: autoregressive (TarFlow / STARFlow) blocks, token by token."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import map_batches, sample_counts, set_progress
from innaudit.audits.cost import AuditCost, Cost
from innaudit.audits.token_trace import JacobiTrace, SampleTrace, TokenTrace, token_blocks, trace_batch, trace_samples
from innaudit.config.settings import Threshold
from innaudit.core.errors import ConfigError
from innaudit.core.metrics import neither, percent, rate, worse
from innaudit.model.contract import InvertibleModel

__all__ = ["AUTOCAST", "Tokens", "first_leaving", "token_range"]

AUTOCAST = {"none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The ``autocast`` option: the dtype the precision lane samples under (None: no lane)."""


def _fmax(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)] if values.size else values
    return float(kept.max()) if kept.size else math.nan


def token_range(errors: np.ndarray, limit: float) -> tuple[int, int]:
    """``(first, last)`` step where some sample's error is above ``limit`` or non-finite,
    ``(-1, -1)`` when none is; ``errors`` is ``(n, T)`` in block order."""
    over = ~(errors <= limit)
    steps = np.flatnonzero(over.any(0)) if errors.size else np.zeros(0, dtype=int)
    return (int(steps[0]), int(steps[-1])) if steps.size else (-1, -1)


def first_leaving(traces: Sequence[TokenTrace], limit: float) -> int:
    """Position in ``traces`` of the block whose inverse first takes the accumulated error
    above ``limit`` or to non-finite, walking the inverse chain from ``z`` (last block first);
    -1 when none does."""
    for k in range(len(traces) - 1, -1, -1):
        if token_range(traces[k].chain, limit)[0] >= 0:
            return k
    return -1


def _merge(parts: Sequence[list[TokenTrace]]) -> list[TokenTrace]:
    """One trace per block from the batches' traces (samples concatenated in order)."""
    merged = list(parts[0])
    for part in parts[1:]:
        for k, t in enumerate(part):
            m = merged[k]
            jac = m.jacobi
            if jac is not None and t.jacobi is not None:
                jac = replace(
                    jac,
                    iterations=np.concatenate([jac.iterations, t.jacobi.iterations]),
                    converged=np.concatenate([jac.converged, t.jacobi.converged]),
                    residual=np.concatenate([jac.residual, t.jacobi.residual]),
                    agreement=np.concatenate([jac.agreement, t.jacobi.agreement]),
                )
            merged[k] = replace(
                m,
                chain=np.concatenate([m.chain, t.chain]),
                own=np.concatenate([m.own, t.own]) if m.own is not None and t.own is not None else None,
                path=np.concatenate([m.path, t.path]),
                scales=m.scales.merge(t.scales),
                jacobi=jac,
            )
    return merged


def _merge_samples(parts: Sequence[SampleTrace | None]) -> SampleTrace | None:
    got = [p for p in parts if p is not None]
    if not got:
        return None

    def cat(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        return None if any(a is None for a in arrays) else np.concatenate([a for a in arrays if a is not None])

    return SampleTrace(
        np.concatenate([p.low_vs_32 for p in got]),
        cat([p.low_vs_64 for p in got]),
        cat([p.f32_vs_64 for p in got]),
        tuple(dict.fromkeys(n for p in got for n in p.notes)),
    )


@register
class Tokens(Audit):
    r"""Autoregressive flow blocks (TarFlow, STARFlow) round-tripped and localized token by token.

    Property: a transformer autoregressive flow block maps token ``t`` as ``z_t = (x_t - b_t)
    exp(-a_t)`` with ``(a_t, b_t)`` predicted from the tokens before it; its forward pass
    computes all of them at once under a causal mask, its inverse one token at a time from the
    tokens already inverted (a KV cache): ``x_t = z_t exp(a_t) + b_t`` (Zhai et al.,
    "Normalizing Flows are Capable Generative Models", 2024, https://arxiv.org/abs/2412.06329).
    An error made at step ``t`` of the inverse changes every later ``(a, b)``, so errors grow
    along the autoregressive order, and ``exp(a)`` amplifies them (Behrmann et al., AISTATS
    2021, https://arxiv.org/abs/2006.09347: the inverse is only as stable as its Lipschitz
    constant). Applies to models whose blocks declare their tokens
    (:class:`~innaudit.model.autoregressive.AutoregressiveBlock`: the zoo's ``tarflow``, the
    ml-tarflow adapter).

    Per set, the first ``samples`` samples go forward through every block; then the inverse
    chain runs from ``z``, ``g_K = z``, ``g_{k-1} = f_k^-1(g_k)``. Per autoregressive block,
    per sample and per token in the block's order, with the relative token error ``e_t =
    ||u_t - v_t|| / max(||v_t||, ||v|| / sqrt(T))``:

    - ``chain``: ``g_{k-1}`` against the forward activation ``h_{k-1}`` (the error accumulated
      up to this block); ``chain_rel_error.max``; the culprit is the first block, walking the
      chain from ``z``, whose inverse takes some token's error above ``rounding`` (or to
      non-finite): ``culprit``, ``culprit_index``, ``first_token`` / ``last_token`` (the
      steps in that block's order where the error is above ``rounding``) and
      ``first_position`` (the sequence position of ``first_token``);
    - ``own``: the block's inverse applied to its exact output ``h_k``: ``block_rel_error.max``;
    - the path gap: the masked forward applied to the cached inverse's output,
      ``e(f_k(g_{k-1}), g_k)``: ``path_gap.max``;
    - the log-scales ``a`` of the masked pass on ``h_{k-1}``: ``log_scale.min`` / ``.max`` /
      ``.std`` and the shares of elements with ``|a| > 5`` and ``|a| > 10``
      (``log_scale.above_5``, ``.above_10``); ``exp(a)`` is what the inverse multiplies by;
    - a block that inverts by Jacobi iterations (:class:`~innaudit.model.iterative.IterativeInverse`,
      STARFlow, Gu et al. 2025, https://arxiv.org/abs/2506.06276): its solve of ``h_k`` with
      its own threshold and cap against the sequential inverse: ``jacobi.nonconverged_fraction``
      (samples whose solve stopped at the cap in some block), ``jacobi.iterations.max``,
      ``jacobi.residual.max`` (``||f(x_J) - h_k|| / ||h_k||`` by the block's forward, never
      the solver's word) and ``jacobi.agreement.max`` (token error against the sequential
      inverse).

    The precision lane (option ``autocast``, ``bfloat16`` by default, as the TarFlow and
    STARFlow sampling scripts run): the chain from the same ``z`` under ``torch.autocast``, and
    in float64 (a copy of the model); per token of the sample (the first autoregressive
    block's input, in its order): ``autocast_<dtype>.departure_float32`` and
    ``.departure_float64`` (max), ``float32.departure_float64`` and
    ``autocast_<dtype>.first_token``, the first step whose departure from float64 (float32
    when float64 cannot run) is above ``departure``. Informational: no gate.

    ``series.tokens`` holds the block x token heat maps (max over samples). Gates: a non-finite
    token fails; ``chain_rel_error.max``, ``block_rel_error.max``, ``path_gap.max`` and
    ``jacobi.agreement.max`` warn above 1e-4 and fail above 1e-2 (the ``roundtrip`` levels); a
    Jacobi solve stopped at its cap fails. Cost: one forward pass and one inverse pass of twice
    the batch (the chain and the blocks' own round trips together) per batch, a forward pass per
    block for the log-scales and one for the path gap; the precision lane adds an inverse pass
    under autocast and one in float64.

    Reading a failure: the culprit block and token range say where the inverse leaves
    rounding; errors that grow along a block's order with large ``log_scale.max`` are the
    ``exp(a)`` amplification (bound it: STARFlow's soft clip ``c * tanh(u / c)`` and softplus
    scale); a path gap with small block errors means the cached and the masked passes disagree
    (a different attention kernel, a cache bug); a non-converged Jacobi solve needs more
    iterations or a tighter stop (at most ``T - 1`` iterations are exact).
    """

    id = "tokens"
    title = "Autoregressive blocks token by token: accumulated error, path gap, log-scales"
    thresholds = {
        "nonfinite_fraction": Threshold(warn=None, fail=0.0),
        "chain_rel_error.max": Threshold(warn=1e-4, fail=1e-2),
        "block_rel_error.max": Threshold(warn=1e-4, fail=1e-2),
        "path_gap.max": Threshold(warn=1e-4, fail=1e-2),
        "jacobi.nonconverged_fraction": Threshold(warn=None, fail=0.0),
        "jacobi.agreement.max": Threshold(warn=1e-4, fail=1e-2),
    }
    options = {
        "samples": 16,
        "rounding": 1e-4,
        "isolate": False,
        "autocast": "bfloat16",
        "departure": 0.05,
        "jacobi": True,
    }
    metrics = (
        neither("n", doc="samples"),
        neither("blocks", doc="autoregressive blocks"),
        neither("tokens", doc="tokens per sequence"),
        rate("nonfinite_fraction", "samples with a non-finite token in some block"),
        worse("chain_rel_error", doc="largest accumulated token error of the inverse chain"),
        worse("block_rel_error", doc="largest token error of a block's own round trip"),
        worse("path_gap", doc="largest token gap, masked forward of the cached inverse"),
        neither("culprit_index", doc="block where the accumulated error leaves rounding (-1: none)"),
        neither("culprit", doc="name of the block at culprit_index ('': none)"),
        neither("where", doc="where the error enters, in words"),
        neither("first_token", doc="first step (block order) above rounding in the culprit (-1: none)"),
        neither("last_token", doc="last step above rounding in the culprit (-1: none)"),
        neither("first_position", doc="sequence position of first_token (-1: none)"),
        worse("log_scale.max", doc="largest log-scale a"),
        neither("log_scale.min", doc="smallest log-scale a"),
        neither("log_scale.std", doc="spread of the log-scales"),
        worse("log_scale.above_5", unit="fraction", doc="share of log-scales with |a| > 5"),
        worse("log_scale.above_10", unit="fraction", doc="share of log-scales with |a| > 10"),
        neither("jacobi.blocks", doc="blocks that invert by Jacobi iterations"),
        rate("jacobi.nonconverged_fraction", "samples whose Jacobi solve stopped at the cap"),
        worse("jacobi.iterations", doc="Jacobi iterations used"),
        worse("jacobi.residual", doc="||f(x_J) - z|| / ||z|| of the Jacobi solution"),
        worse("jacobi.agreement", doc="token error of Jacobi against the sequential inverse"),
        *(
            m
            for p in ("autocast_bfloat16", "autocast_float16")
            for m in (
                worse(f"{p}.departure_float32", doc="token departure of the autocast sample from float32"),
                worse(f"{p}.departure_float64", doc="token departure of the autocast sample from float64"),
                neither(f"{p}.first_token", doc="first step departing by more than `departure` (-1: none)"),
            )
        ),
        worse("float32.departure_float64", doc="token departure of the float32 sample from float64"),
    )

    @classmethod
    def costs(cls, dim: int, options: Mapping[str, Any]) -> Mapping[str, AuditCost]:
        """Per sample: two forward passes (the model's and the masked pass per block) and an
        inverse pass, another inverse with ``isolate``, and an inverse under autocast plus one in
        float64 (counted 1.5) for the precision lane."""
        lane = 0.0 if str(options.get("autocast")) == "none" else 2.5
        own = 1.0 if options.get("isolate") else 0.0
        return {"": AuditCost(Cost(forward=2, inverse=1 + own + lane))}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """``autocast`` must name a lane; ``rounding`` and ``departure`` must be positive."""
        if str(options.get("autocast")) not in AUTOCAST:
            raise ConfigError(f"tokens.autocast is {options.get('autocast')!r}; expected one of {', '.join(AUTOCAST)}")
        for key in ("rounding", "departure"):
            value = options.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"tokens.{key} is {value!r}; expected a positive number")

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped for a model without autoregressive token blocks, or without data."""
        if not token_blocks(ctx.model):
            return "the model has no autoregressive token blocks (TarFlow / STARFlow, AutoregressiveBlock)"
        return None if ctx.datasets else "no data sets"

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement per data set; the sets' batches are the work units."""
        totals = sample_counts(ctx)
        lane_dtype = AUTOCAST[str(ctx.option("autocast"))]
        wide = _wide_copy(ctx.model) if lane_dtype is not None else (None, "")

        def work(unit: tuple[int, int, int]) -> tuple[list[TokenTrace], SampleTrace | None]:
            index, start, stop = unit
            x = ctx.datasets[index].make(start, stop).to(device=ctx.device, dtype=ctx.model.dtype)
            traces, z, sample = trace_batch(
                ctx.model, x, isolate=bool(ctx.option("isolate")), jacobi=bool(ctx.option("jacobi"))
            )
            lane = None
            if lane_dtype is not None:
                lane = trace_samples(ctx.model, wide[0], z, sample, _autocast(ctx.device, lane_dtype), traces[0].order)
            return traces, lane

        progress = set_progress(ctx, [d.name for d in ctx.datasets], totals)
        for index, parts in enumerate(map_batches(ctx, totals, work, progress=progress)):
            if not parts:
                continue
            traces = _merge([p[0] for p in parts])
            samples = _merge_samples([p[1] for p in parts])
            notes = ([wide[1]] if wide[1] else []) + (list(samples.notes) if samples is not None else [])
            metrics, text = _measure(traces, samples, ctx, lane_dtype)
            yield Measurement(ctx.datasets[index].name, metrics, "; ".join([text, *notes]), {"tokens": _series(traces)})


def _wide_copy(model: InvertibleModel) -> tuple[InvertibleModel | None, str]:
    try:
        return model.copy_as(torch.float64), ""
    except (RuntimeError, TypeError, ValueError) as exc:
        return None, f"float64 reference not computed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def _autocast(device: torch.device, dtype: torch.dtype) -> Any:
    def context() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device.type, dtype=dtype)

    return context


def _measure(
    traces: list[TokenTrace], samples: SampleTrace | None, ctx: AuditContext, lane: torch.dtype | None
) -> tuple[dict[str, Any], str]:
    limit = float(ctx.option("rounding"))
    n = len(traces[0].chain)
    broken = np.zeros(n, dtype=bool)
    for t in traces:
        broken |= ~np.isfinite(t.chain).all(1) | (~np.isfinite(t.own).all(1) if t.own is not None else False)
    where = first_leaving(traces, limit)
    first, last = token_range(traces[where].chain, limit) if where >= 0 else (-1, -1)
    metrics: dict[str, Any] = {
        "n": n,
        "blocks": len(traces),
        "tokens": int(traces[0].chain.shape[1]),
        "nonfinite_fraction": float(broken.mean()) if n else 0.0,
        "chain_rel_error": {"max": _fmax(np.concatenate([t.chain.ravel() for t in traces]))},
        "path_gap": {"max": _fmax(np.concatenate([t.path.ravel() for t in traces]))},
        "culprit": traces[where].name if where >= 0 else "",
        "culprit_index": traces[where].index if where >= 0 else -1,
        "first_token": first,
        "last_token": last,
        "first_position": int(traces[where].order[first]) if first >= 0 else -1,
        "where": _where(traces, where, first, last),
    }
    owns = [t.own for t in traces if t.own is not None]
    if owns:
        metrics["block_rel_error"] = {"max": _fmax(np.concatenate([o.ravel() for o in owns]))}
    metrics.update(_scale_metrics(traces))
    metrics.update(_jacobi_metrics(traces))
    if lane is not None and samples is not None:
        metrics.update(_lane_metrics(samples, lane, float(ctx.option("departure"))))
    return metrics, _message(traces, where, first, last, limit, metrics)


def _where(traces: Sequence[TokenTrace], where: int, first: int, last: int) -> str:
    if where < 0:
        return ""
    span = f"token {first}" if first == last else f"tokens {first}-{last}"
    return f"{traces[where].name}, {span}"


def _scale_metrics(traces: Sequence[TokenTrace]) -> dict[str, Any]:
    scales = [t.scales for t in traces]
    count = sum(s.count for s in scales)
    mean = sum(s.total for s in scales) / max(1, count)
    spread = sum(s.squares for s in scales) / max(1, count) - mean * mean
    return {
        "log_scale": {
            "min": float(np.fmin.reduce([s.low for s in scales])),
            "max": float(np.fmax.reduce([s.high for s in scales])),
            "std": math.sqrt(max(0.0, spread)) if count else math.nan,
            "above_5": sum(s.above_5 for s in scales) / max(1, count),
            "above_10": sum(s.above_10 for s in scales) / max(1, count),
        }
    }


def _jacobi_metrics(traces: Sequence[TokenTrace]) -> dict[str, Any]:
    solved: list[JacobiTrace] = [t.jacobi for t in traces if t.jacobi is not None]
    if not solved:
        return {}
    stopped = np.any([~j.converged for j in solved], axis=0)
    return {
        "jacobi": {
            "blocks": len(solved),
            "nonconverged_fraction": float(stopped.mean()) if stopped.size else 0.0,
            "iterations": {"max": int(max(int(j.iterations.max()) for j in solved))},
            "residual": {"max": _fmax(np.concatenate([j.residual for j in solved]))},
            "agreement": {"max": _fmax(np.concatenate([j.agreement.ravel() for j in solved]))},
        }
    }


def _lane_metrics(samples: SampleTrace, dtype: torch.dtype, limit: float) -> dict[str, Any]:
    name = f"autocast_{str(dtype).removeprefix('torch.')}"
    reference = samples.low_vs_64 if samples.low_vs_64 is not None else samples.low_vs_32
    out: dict[str, Any] = {
        name: {
            "departure_float32": {"max": _fmax(samples.low_vs_32)},
            "first_token": token_range(reference, limit)[0],
        }
    }
    if samples.low_vs_64 is not None and samples.f32_vs_64 is not None:
        out[name]["departure_float64"] = {"max": _fmax(samples.low_vs_64)}
        out["float32"] = {"departure_float64": {"max": _fmax(samples.f32_vs_64)}}
    return out


def _message(
    traces: Sequence[TokenTrace], where: int, first: int, last: int, limit: float, metrics: Mapping[str, Any]
) -> str:
    if where < 0:
        text = f"every token of the inverse chain from z stays within {limit:g} (relative) in all {len(traces)} blocks"
    else:
        worst = _fmax(traces[where].chain)
        own = traces[where].own
        alone = f"; the block alone adds {_fmax(own):.3g}" if own is not None else ""
        text = (
            f"the accumulated error leaves rounding in {metrics['where']} of {metrics['tokens']} (first at "
            f"sequence position {metrics['first_position']}; {worst:.3g} relative, limit {limit:g}{alone})"
        )
    scale = metrics.get("log_scale")
    if scale:
        text += f"; log-scale a in [{scale['min']:.3g}, {scale['max']:.3g}], |a| > 5 for {percent(scale['above_5'])}"
    jac = metrics.get("jacobi")
    if jac:
        text += (
            f"; Jacobi: {percent(jac['nonconverged_fraction'])} of solves stopped at the cap, residual max "
            f"{jac['residual']['max']:.3g}, {jac['agreement']['max']:.3g} from the sequential inverse"
        )
    return text


def _series(traces: Sequence[TokenTrace]) -> dict[str, Any]:
    def rows(get: Any) -> list[list[float]]:
        return [[float(f"{v:.4g}") if math.isfinite(v) else v for v in _col_max(get(t))] for t in traces]

    series: dict[str, Any] = {"block": [t.name for t in traces], "accumulated error": rows(lambda t: t.chain)}
    if all(t.own is not None for t in traces):
        series["block error"] = rows(lambda t: t.own)
    series["path gap"] = rows(lambda t: t.path)
    return series


def _col_max(values: np.ndarray) -> list[float]:
    if not values.size:
        return []
    with np.errstate(invalid="ignore"):
        return [float(v) for v in np.fmax.reduce(values, axis=0)]
