"""The ``layers`` audit."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import (
    block_name,
    full_range_floor,
    map_batches,
    sample_counts,
    set_progress,
    shared_cuts,
    shared_view,
)
from innaudit.audits.cost import AuditCost, Cost, jacobian_costs
from innaudit.audits.jacobians import Checks, measure
from innaudit.config.settings import Threshold
from innaudit.core.metrics import better, neither, rate, worse
from innaudit.core.stats import nan_max, nan_min, per_sample_norm, relative_error, round_significant, where_error_enters
from innaudit.data import Dataset
from innaudit.model.contract import InvertibleModel, host

__all__ = [
    "BlockTrace",
    "Layers",
    "chain_errors",
    "leaves_rounding",
    "trace_blocks",
    "whole_round_trip",
    "worst_samples",
]


@dataclass(frozen=True)
class BlockTrace:
    """One block's numbers on the traced samples (per sample, float64 arrays).

    ``rel_error`` is ``||f^-1(f(h)) - h|| / max(||h||, floor)`` (inf where non-finite): the
    error this block adds on its exact input; ``chain_error`` is ``||g - h|| / max(||h||, floor)``
    with ``g`` the block's input recovered by inverting the whole chain from ``z = F(x)``
    down through this block (inf where non-finite): the error accumulated up to here;
    ``scale_min`` is NaN for blocks without ``scales``; ``sv_min``/``sv_max`` of ``J_f(h)``;
    ``stopped``: per sample, whether a budget's deadline stopped the block's Lanczos runs
    before they converged (None when none was stopped).
    """

    name: str
    rel_error: np.ndarray
    nonfinite: np.ndarray
    scale_min: np.ndarray
    sv_min: np.ndarray
    sv_max: np.ndarray
    chain_error: np.ndarray | None = None
    stopped: np.ndarray | None = None


def whole_round_trip(model: InvertibleModel, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The whole model's round trip ``F^-1(F(x))`` per sample: the error ``||F^-1(F(x)) - x||``
    (inf where non-finite), which ranks the samples as ``roundtrip``'s ``worst_indices`` does, and
    the relative error as ``roundtrip`` measures it."""
    domain = model.info.domain
    with torch.no_grad():
        back = model.inverse(model.forward(x))
    err = per_sample_norm(back - x)
    err = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
    return err.cpu().numpy(), _relative(back, x, full_range_floor(domain.numel, domain.width))


def worst_samples(errors: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest ``errors`` (inf first; ties in index order): the samples the
    other audits flag first."""
    return np.argsort(-errors, kind="stable")[:k]


def _scale_min(block: InvertibleModel, h: Tensor) -> np.ndarray:
    """Per sample, the smallest ``|g|`` of the block's affine scales (NaN without ``scales``)."""
    g = block.scales(h)
    if g is None:
        return np.full(len(h), math.nan)
    low = np.abs(host(g)).min(1) if g.shape[1] else np.full(len(h), math.nan)
    return np.where(np.isfinite(low), low, math.nan)


def trace_blocks(
    blocks: Sequence[InvertibleModel],
    x: Tensor,
    *,
    method: str,
    tol: float,
    max_iter: int,
    generator: torch.Generator,
    stop: Callable[[], bool] | None = None,
    checks: Sequence[Checks] | None = None,
) -> list[BlockTrace]:
    """Push ``x`` through the blocks; at each, round-trip the block and take its spectrum.

    ``stop`` (matrix-free): asked between the Lanczos iterations of every block; once True,
    each block's spectrum ends after its first iteration (its round trip is still exact) and
    ``stopped`` says so. ``checks``: per block, the autograd checks of its maps kept from an
    earlier trace (:class:`~innaudit.audits.jacobians.Checks`; None checks them here)."""
    floor = 1e-6 * math.sqrt(x[0].numel())
    h, out, inputs, split = x, [], [], False
    for i, block in enumerate(blocks):
        inputs.append(h)
        with torch.no_grad():
            y = block.forward(h)
            back = block.inverse(y)
        bad = ~(torch.isfinite(y.reshape(len(y), -1)).all(1) & torch.isfinite(back.reshape(len(h), -1)).all(1))
        rel = relative_error(back, h, floor)
        rel = torch.where(bad, torch.full_like(rel, math.inf), rel)

        def forward(t: Tensor, b: InvertibleModel = block) -> Tensor:
            return b.forward(t, grad=True)

        def inverse(t: Tensor, b: InvertibleModel = block) -> Tensor:
            return b.inverse(t, grad=True)

        s = measure(
            forward,
            inverse,
            h,
            method=method,
            tol=tol,
            max_iter=max_iter,
            generator=generator,
            stop=stop,
            checks=checks[i] if checks is not None else None,
        )
        name = block_name(i, block)
        out.append(
            BlockTrace(
                name,
                rel.cpu().numpy(),
                bad.cpu().numpy(),
                _scale_min(block, h),
                s.forward_min,
                s.forward_max,
                stopped=s.stopped,
            )
        )
        carried = block.carry(y)
        split = split or carried is not y
        h = carried
    if split:  # a multi-scale chain: a split block's inverse needs the level it factored out
        return out
    chain = chain_errors(blocks, inputs, h, floor)
    return [replace(t, chain_error=c) for t, c in zip(out, chain, strict=True)]


def _relative(got: Tensor, want: Tensor, floor: float) -> np.ndarray:
    """``||got - want|| / max(||want||, floor)`` per sample, inf where ``got`` is not finite."""
    bad = ~torch.isfinite(got.reshape(len(got), -1)).all(1)
    rel = relative_error(got, want, floor)
    return torch.where(bad | rel.isnan(), torch.full_like(rel, math.inf), rel).cpu().numpy()


def chain_errors(
    blocks: Sequence[InvertibleModel], inputs: Sequence[Tensor], z: Tensor, floor: float
) -> list[np.ndarray]:
    """Accumulated error of the inverse chain: from ``z``, ``g_K = z``, ``g_{k-1} =
    f_k^-1(g_k)``; entry ``k`` is the relative error of ``g_{k-1}`` against the forward
    activation ``h_{k-1}`` (``inputs[k]``), per sample."""
    out: list[np.ndarray] = [np.empty(0)] * len(blocks)
    g = z
    with torch.no_grad():
        for k in range(len(blocks) - 1, -1, -1):
            g = blocks[k].inverse(g)
            out[k] = _relative(g, inputs[k], floor)
    return out


def leaves_rounding(traces: Sequence[BlockTrace], limit: float) -> int:
    """Index of the block whose inverse first takes the accumulated error (walking the inverse
    chain from ``z``, last block first) above ``limit`` or to non-finite; -1 when none does."""
    return where_error_enters([t.chain_error for t in traces], limit)


def culprit(traces: Sequence[BlockTrace], jump: float, error_floor: float, condition_floor: float) -> tuple[int, str]:
    """The first block where the chain breaks: non-finite first, else the first block whose
    error or condition number is at least ``jump`` times the median over blocks and above its
    floor. ``(-1, reason)`` when no block stands out."""
    for i, t in enumerate(traces):
        if t.nonfinite.any():
            return i, "first non-finite block"
    errors = np.array([nan_max(t.rel_error) for t in traces])
    with np.errstate(divide="ignore", invalid="ignore"):
        conds = np.array([nan_max(t.sv_max / t.sv_min) for t in traces])
    err_mid, cond_mid = np.nanmedian(errors), np.nanmedian(conds)
    for i in range(len(traces)):
        if errors[i] >= max(jump * err_mid, error_floor):
            return i, f"error jumps to {errors[i]:.3g} (median over blocks {err_mid:.3g})"
        if conds[i] >= max(jump * cond_mid, condition_floor):
            return i, f"condition jumps to {conds[i]:.3g} (median over blocks {cond_mid:.3g})"
    return -1, "no block stands out"


@register
class Layers(Audit):
    r"""Block-by-block round trips and conditioning on each set's worst samples.

    Property: a composition ``F = f_K o ... o f_1`` is only as invertible as its worst block;
    ``Lip(F^-1) <= prod_k Lip(f_k^-1)`` (Behrmann et al., AISTATS 2021, section 2). This audit
    localizes a failure the round-trip audits report. Per set, the first ``samples`` samples are
    ranked by their full round-trip error ``||F^-1(F(x)) - x||`` (non-finite first, the same
    ranking as ``roundtrip``'s ``worst_indices``) and the ``worst`` of them are pushed through
    the blocks; at block ``k`` with input ``h``: the block round trip ``rel = ||f_k^-1(f_k(h)) -
    h|| / ||h||``, non-finite outputs, the smallest affine scale ``min |g|`` when the block has
    ``scales(x)`` (``1 / min |g|`` is the block's inverse amplification), and ``sigma_min`` /
    ``sigma_max`` of ``J_{f_k}(h)`` (option ``method``: ``auto`` is exact up to dimension 4096,
    ``matrix-free`` Lanczos beyond, ``sigma_min = 1 / sigma_max`` of the inverse).

    The culprit is the first block with a non-finite output or reconstruction, else the first
    whose relative error is at least ``jump`` times the median over blocks and above 1e-5, or
    whose condition number is at least ``jump`` times the median and above 1e3 (spectrum's warn
    level). Metrics: ``culprit`` (block name, "" when none), ``culprit_index`` (-1 when none),
    ``nonfinite_fraction`` (traced samples that break at some block or in the inverse chain), ``block_rel_error.max``,
    ``block_condition.max``, ``scale_min`` (smallest affine scale seen). ``series.blocks`` has
    one row per block.

    The inverse chain: from ``z = F(x)`` the blocks' inverses are applied one after the other,
    ``g_K = z``, ``g_{k-1} = f_k^-1(g_k)``, and each ``g_{k-1}`` is compared with the forward
    activation ``h_{k-1}``: ``chain_rel_error`` at block ``k``. Per-block errors that are harmless
    on exact inputs (1e-6 each) compound there, up to the whole model's failure. Metrics:
    ``chain_rel_error.max`` (largest accumulated relative error, inf when non-finite, over the
    traced samples and, at the input, the whole model's round trip ``F^-1(F(x))`` on all
    ``samples`` samples, measured as ``roundtrip`` measures it), ``chain_index`` (the block
    whose inverse first takes the accumulated error above ``rounding`` or to non-finite, -1 when
    none) and ``chain_block`` (its name). Gated as ``roundtrip``'s ``rel_error_l2.max``, so the
    two never disagree on the same samples.

    Under ``--budget``, the blocks' Lanczos runs stop between iterations once the audit is
    past its deadline (the block round trips and the inverse chain are still measured on every
    block): ``budget_cut_fraction`` (present only then) is the share of traced samples whose
    block spectra were stopped, and above 0 it warns, so a cut trace is never a pass.

    In a multi-scale flow the blocks are walked level by level in data -> latent order and named
    ``level i / block j: ClassName``; a split block returns ``[kept, z_i]`` and ``kept`` goes on.

    Reading a failure: the culprit is where to look (a coupling whose scale underflows, an ill
    conditioned 1x1 convolution). Gates as for ``roundtrip``: a non-finite block fails; a block
    relative error above 1e-4 warns, above 1e-2 fails.

    References:
        Behrmann, Vicol, Wang, Grosse, Jacobsen, "Understanding and Mitigating Exploding
        Inverses in Invertible Neural Networks", AISTATS 2021 (PMLR 130),
        https://arxiv.org/abs/2006.09347
    """

    id = "layers"
    title = "Block-by-block round trip and conditioning on the worst samples"
    thresholds = {
        "nonfinite_fraction": Threshold(warn=None, fail=0.0),
        "block_rel_error.max": Threshold(warn=1e-4, fail=1e-2),
        "chain_rel_error.max": Threshold(warn=1e-4, fail=1e-2),
        "budget_cut_fraction": Threshold(warn=0.0, fail=None),
    }
    options = {"samples": 64, "worst": 2, "method": "auto", "tol": 1e-4, "max_iter": 32, "jump": 10.0, "rounding": 1e-4}
    metrics = (
        neither("n", doc="samples"),
        neither("blocks", doc="blocks walked"),
        rate("nonfinite_fraction", "samples non-finite in some block"),
        worse("block_rel_error", doc="largest per-block relative round-trip error"),
        worse("block_condition", doc="largest per-block condition"),
        better("scale_min", doc="smallest coupling scale"),
        neither("culprit_index", doc="first failing block (-1: none)"),
        worse("chain_rel_error", doc="accumulated relative error of the inverse chain from z"),
        neither("chain_index", doc="block where the accumulated error leaves rounding (-1: none)"),
        neither("culprit", doc="name of the first failing block ('': none)"),
        neither("chain_block", doc="name of the block at chain_index ('': none)"),
        rate("budget_cut_fraction", "traced samples whose block spectra the budget stopped"),
    )

    shrinkable = {"max_iter": 8}

    @classmethod
    def costs(cls, dim: int, options: Mapping[str, Any]) -> Mapping[str, AuditCost]:
        """A round trip per sample to find the worst, then the blocks' Jacobians of ``worst``."""
        worst = int(options["worst"])
        return {
            m: AuditCost(Cost(forward=1, inverse=1), c.per_sample * worst)
            for m, c in jacobian_costs(dim, int(options["max_iter"])).items()
        }

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped for a model without ``blocks()`` or without data."""
        if not ctx.model.blocks():
            return "the model exposes no blocks() to localize failures in"
        return None if ctx.datasets else "no data sets"

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement per data set, from two sharded passes: the sets' batches (the whole
        model's round trip of every sample, which ranks them), then the sets (the block trace of
        each set's worst samples)."""
        blocks = ctx.model.blocks()
        totals = sample_counts(ctx)

        def check(unit: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
            index, start, stop = unit
            x = ctx.datasets[index].make(start, stop).to(device=ctx.device, dtype=ctx.model.dtype)
            return whole_round_trip(shared_view(ctx, ctx.model, index, start, stop), x)  # roundtrip's passes

        checked = {
            i: (np.concatenate([e for e, _ in parts]), np.concatenate([r for _, r in parts]))
            for i, parts in enumerate(
                map_batches(
                    ctx,
                    totals,
                    check,
                    progress=set_progress(ctx, [d.name for d in ctx.datasets], totals),
                    paced=True,
                    cuts=shared_cuts(ctx),
                )
            )
            if parts
        }
        picked = {i: worst_samples(errors, ctx.option("worst")) for i, (errors, _) in checked.items()}
        checks = [Checks() for _ in blocks]  # the blocks' autograd checks, once per audit
        late: dict[int, int] = {}

        def trace(index: int) -> list[BlockTrace]:
            if len(picked[index]) > 1 and ctx.overdue():  # a trace begun after the deadline: one sample
                late[index] = len(picked[index])
                picked[index] = picked[index][:1]
            x = _rows(ctx, ctx.datasets[index], totals[index], picked[index])
            return trace_blocks(
                blocks,
                x,
                method=ctx.option("method"),
                tol=ctx.option("tol"),
                max_iter=ctx.option("max_iter"),
                generator=ctx.generator(ctx.datasets[index].name),
                stop=ctx.overdue,
                checks=checks,
            )

        for index, traces in zip(picked, ctx.map(list(picked), trace), strict=True):
            where, why = culprit(traces, ctx.option("jump"), 1e-5, 1e3)
            chain = leaves_rounding(traces, ctx.option("rounding"))
            metrics = {
                **self._metrics(traces, picked[index], where),
                **_chain_metrics(traces, chain, checked[index][1]),
            }
            text = _chain_message(traces, chain, ctx.option("rounding"))
            if where >= 0 or chain < 0:
                text = f"{self._message(traces, where, why)}; {text}"
            cut = _cut(traces)
            left_out = late.get(index, len(picked[index])) - len(picked[index])
            if cut is not None or left_out:
                stopped = int(cut.sum()) if cut is not None else 0
                metrics["budget_cut_fraction"] = (stopped + left_out) / (len(picked[index]) + left_out)
            if cut is not None:
                text += (
                    f"; the budget stopped the block spectra of {int(cut.sum())} of {len(cut)} traced sample(s) "
                    "before convergence (their block condition numbers are lower bounds)"
                )
            if left_out:
                text += (
                    f"; begun after the budget's deadline, this set's trace took 1 of its {late[index]} worst samples"
                )
            yield Measurement(ctx.datasets[index].name, metrics, text, {"blocks": self._series(traces)})

    @staticmethod
    def _metrics(traces: Sequence[BlockTrace], idx: np.ndarray, where: int) -> dict[str, object]:
        broken = np.any(
            [t.nonfinite for t in traces]  # a block, or the inverse chain from z
            + [~np.isfinite(t.chain_error) for t in traces if t.chain_error is not None],
            axis=0,
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            conds = [nan_max(t.sv_max / t.sv_min) for t in traces]
        return {
            "n": len(idx),
            "blocks": len(traces),
            "samples": [int(i) for i in idx],
            "culprit": traces[where].name if where >= 0 else "",
            "culprit_index": where,
            "nonfinite_fraction": float(broken.mean()) if broken.size else 0.0,
            "block_rel_error": {"max": nan_max(np.concatenate([t.rel_error for t in traces]))},
            "block_condition": {"max": nan_max(np.array(conds))},
            "scale_min": nan_min(np.concatenate([t.scale_min for t in traces])),
        }

    @staticmethod
    def _message(traces: Sequence[BlockTrace], where: int, why: str) -> str:
        if where < 0:
            return why
        return f"block {traces[where].name}: {why}"

    @staticmethod
    def _series(traces: Sequence[BlockTrace]) -> dict[str, list]:
        num = round_significant
        with np.errstate(divide="ignore", invalid="ignore"):
            return {
                "name": [t.name for t in traces],
                "rel_error_max": [num(nan_max(t.rel_error)) for t in traces],
                "nonfinite_fraction": [float(t.nonfinite.mean()) for t in traces],
                "scale_min": [num(nan_min(t.scale_min)) for t in traces],
                "sv_min": [num(nan_min(t.sv_min)) for t in traces],
                "sv_max": [num(nan_max(t.sv_max)) for t in traces],
                "condition": [num(nan_max(t.sv_max / t.sv_min)) for t in traces],
                "chain_rel_error_max": [
                    num(nan_max(t.chain_error)) if t.chain_error is not None else math.nan for t in traces
                ],
            }


def _rows(ctx: AuditContext, ds: Dataset, total: int, picked: np.ndarray) -> Tensor:
    """Samples ``picked`` of ``ds``, each made in its batch as a single pass makes it (a random
    set draws a batch from a generator seeded by its start)."""
    step = max(1, ctx.batch_size)
    rows = []
    for i in picked.tolist():
        start = i // step * step
        rows.append(ds.make(start, min(start + step, total))[i - start])
    x = torch.stack(rows) if rows else ds.make(0, 0)
    return x.to(device=ctx.device, dtype=ctx.model.dtype)


def _cut(traces: Sequence[BlockTrace]) -> np.ndarray | None:
    """Per traced sample, whether any block's spectrum was stopped by the budget (None: none)."""
    flags = [t.stopped for t in traces if t.stopped is not None]
    return np.logical_or.reduce(flags) if flags else None


def _chain_metrics(traces: Sequence[BlockTrace], chain: int, whole: np.ndarray) -> dict[str, object]:
    errors = [t.chain_error for t in traces if t.chain_error is not None]
    worst = nan_max(np.concatenate([*errors, whole])) if errors or whole.size else math.nan
    return {
        "chain_rel_error": {"max": worst},
        "chain_index": chain,
        "chain_block": traces[chain].name if chain >= 0 else "",
    }


def _chain_message(traces: Sequence[BlockTrace], chain: int, limit: float) -> str:
    if chain < 0:
        return f"the inverse chain from z stays within {limit:g} (relative) at every block"
    err = traces[chain].chain_error
    worst = nan_max(err) if err is not None else math.nan
    after = (
        f"the accumulated error of the inverse chain from z leaves rounding at block "
        f"{traces[chain].name} ({worst:.3g} relative at its input, limit {limit:g}"
    )
    own = nan_max(traces[chain].rel_error)
    return after + f"; the block alone adds {own:.3g})"
