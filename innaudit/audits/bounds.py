"""The ``bounds`` audit."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import innaudit.loading.adapters  # noqa: F401  (registers the library blocks' residual branches)
from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.block_constants import BlockConstants, block_constants
from innaudit.audits.common import map_batches, sample_counts, set_progress
from innaudit.audits.cost import AuditCost, Cost, jacobian_costs
from innaudit.audits.jacobians import measure
from innaudit.config.settings import Threshold
from innaudit.core.bound_kind import AFFINE_KINDS, BoundKind
from innaudit.core.metrics import neither, rate, worse
from innaudit.linalg.chain import Stage, chain_bound, chain_limit
from innaudit.linalg.lipschitz import BlockBound, block_bound, block_stages
from innaudit.model.contract import InvertibleModel

__all__ = ["Bounds", "Certificate", "model_bounds", "model_certificate"]


def _block_shapes(model: InvertibleModel, blocks: Sequence[InvertibleModel]) -> list[tuple[int, ...]]:
    """The input shape of every block, from a zero probe through the chain."""
    where = next(iter(model.module.parameters()), None)
    h = torch.zeros(1, *model.info.domain.shape, dtype=model.dtype, device=where.device if where is not None else "cpu")
    shapes = []
    for block in blocks:
        shapes.append(tuple(h.shape[1:]))
        h = block.carry(block.forward(h))
    return shapes


def _name(i: int, b: InvertibleModel) -> str:
    return f"{i}:{b.info.architecture or type(b.module).__name__}"


def model_bounds(model: InvertibleModel) -> list[BlockBound]:
    """Per-block certified bounds of ``model`` (one entry for a model without blocks)."""
    blocks = model.blocks()
    if not blocks:
        name = model.info.architecture or type(model.module).__name__
        return [block_bound(model.module, tuple(model.info.domain.shape), name)]
    shapes = _block_shapes(model, blocks)
    return [block_bound(b.module, s, _name(i, b)) for i, (b, s) in enumerate(zip(blocks, shapes, strict=True))]


@dataclass(frozen=True)
class Certificate:
    """The whole model's certificate and its blocks'.

    Attributes:
        blocks: every block's bounds.
        forward_product, inverse_product: the products of the block bounds (inf when a block
            has none).
        forward_chain, inverse_chain: the chain bound of the whole model (None when a block is
            not a chain, or the chain is wider than ``chain_max_dim``).
    """

    blocks: tuple[BlockBound, ...]
    forward_product: float
    inverse_product: float
    forward_chain: float | None
    inverse_chain: float | None

    @property
    def forward(self) -> float:
        """The certified ``Lip(F)``: the smaller of the two bounds."""
        return min(self.forward_product, self.forward_chain if self.forward_chain is not None else math.inf)

    @property
    def inverse(self) -> float:
        """The certified ``Lip(F^-1)``."""
        return min(self.inverse_product, self.inverse_chain if self.inverse_chain is not None else math.inf)


def _product(values: Sequence[float | None]) -> float:
    return math.prod(v if v is not None else math.inf for v in values)


def _model_chain(model: InvertibleModel, inverse: bool) -> float | None:
    blocks = list(model.blocks())
    pairs: list[tuple[Any, tuple[int, ...]]]
    if blocks:
        pairs = [(b.module, s) for b, s in zip(blocks, _block_shapes(model, blocks), strict=True)]
    else:
        pairs = [(model.module, tuple(model.info.domain.shape))]
    stages: list[Stage] = []
    for module, shape in reversed(pairs) if inverse else pairs:
        found = block_stages(module, shape, inverse)
        if found is None:
            return None
        stages += found
    return chain_bound(stages) if stages else None


def model_certificate(model: InvertibleModel, chain_max_dim: int = 2048) -> Certificate:
    """Every block's bounds and the whole model's, chains up to ``chain_max_dim`` wide."""
    with chain_limit(chain_max_dim):
        blocks = tuple(model_bounds(model))
        chains = (_model_chain(model, False), _model_chain(model, True))
    return Certificate(
        blocks, _product([b.forward for b in blocks]), _product([b.inverse for b in blocks]), chains[0], chains[1]
    )


@register
class Bounds(Audit):
    r"""Certified global Lipschitz bounds of ``F``, ``F^-1`` and every block, beside the measured
    local constants.

    Property: ``Lip(f_K o ... o f_1) <= prod_k Lip(f_k)`` (and likewise for the inverse), each
    block's constant certified from its parameters (Behrmann et al., AISTATS 2021, table 1;
    https://arxiv.org/abs/2006.09347): additive coupling ``(L + sqrt(L^2 + 4)) / 2``, residual
    blocks ``1 + c`` and ``1 / (1 - c)``, ActNorm and invertible 1x1 convolutions by their
    scales' and ``W``'s extreme singular values, squeeze and permutations 1. Layer norms are
    certified for the operator each layer really is (SVD of the dense operator when small, Gram
    iteration with the layer's padding, stride and dilation otherwise; Delattre et al., ICML
    2023, https://arxiv.org/abs/2305.16173), and a net's ``Lip`` is the smaller of the product of
    its layers' norms and the chain bound over its activations' slope ranges (Combettes and
    Pesquet 2020, https://arxiv.org/abs/1903.01014); see :mod:`innaudit.linalg.lipschitz`. When
    every block is a chain of linear maps and activations (additive coupling flows, and the
    forward map of residual flows), the whole model is bounded by its own chain bound too,
    usually far below the product (option ``chain_max_dim``: the widest chain state bounded,
    2048 by default). A bound holds on all of ``R^d``: no input, however far out of
    distribution, can make the map amplify a perturbation by more.

    Residual blocks: the certified ``Lip(g)`` (``lip_g``) sits beside the library's own estimate
    (``lip_g_estimate``: power iteration, a lower bound of each layer's norm, stale in eval) and
    the largest local value measured, ``sigma_max(J_f(h) - I)``. A block whose certified
    ``Lip(g) >= 1`` fails, with its largest layer named: its fixed-point inverse is not
    guaranteed to converge (``residual.uncertified``); one whose estimate says ``< 1`` while the
    certificate says ``>= 1`` is called out (``residual.estimate_misses``).

    Coupling blocks whose scale is unbounded below (``exp``, Glow's ``sigmoid(h + 2)``) or whose
    cross term grows with the input (every affine coupling) have no global bound: their
    certificate is empirical, said so, with the measured ``log g`` range on each set
    (``log_scale``, from a ``scales(h)`` hook) instead, and ``empirical_blocks`` warns. Blocks of
    unknown type skip the audit.

    Metrics per set (first ``samples`` samples, exact Jacobians where ``d <= 4096``; a block's
    own constants from its exact Jacobian on the set's first ``block_samples`` samples where its
    input has at most ``block_max_dim`` dimensions, NaN above and beyond: one dense Jacobian and
    SVD per block and sample costs ``d^3``):
    ``forward.bound`` (the certificate), ``forward.product``, ``forward.chain`` (NaN when not a
    chain), ``forward.measured`` = max ``sigma_max(J_F(x))``, ``forward.tightness`` = bound /
    measured (1 is exact; the tracked figure), and ``inverse.*`` alike with
    ``sigma_max(J_F^-1(F(x)))``; ``block_tightness.max`` (the loosest block's certified /
    measured); ``violation_fraction``: samples whose measured constant, of the model or of a
    block, exceeds its bound by more than the relative ``slack`` (float32 rounding).
    ``series.blocks`` lists every block: kind, bounds, how they were computed, measured
    constants, tightness, ``lip_g`` / estimate / measured, the log-scale range.

    Reading a failure: a violation means a declared constant is wrong (a spectral normalization
    that was not calibrated) or the model is not the composition it claims; an uncertified
    residual block means the fixed point may diverge: run ``convergence``. A tightness far above
    1 means the certificate is valid but says little; the measured constant is only a lower
    bound of the true one on the sets.

    References:
        Behrmann, Vicol, Wang, Grosse, Jacobsen, "Understanding and Mitigating Exploding
        Inverses in Invertible Neural Networks", AISTATS 2021 (PMLR 130),
        https://arxiv.org/abs/2006.09347
    """

    id = "bounds"
    title = "Certified Lipschitz bounds of F, F^-1 and every block, beside the measured constants"
    thresholds = {
        "violation_fraction": Threshold(warn=None, fail=0.0),
        "residual.uncertified": Threshold(warn=None, fail=0.0),
        "empirical_blocks": Threshold(warn=0.0, fail=None),
    }
    options = {
        "samples": 32,
        "slack": 1e-3,
        "method": "auto",
        "chain_max_dim": 2048,
        "block_max_dim": 1024,
        "block_samples": 8,
    }
    metrics = (
        *tuple(
            m
            for d in ("forward", "inverse")
            for m in (
                worse(f"{d}.bound", doc=f"certified Lipschitz bound of the {d} map"),
                worse(f"{d}.product", doc="product of the blocks' bounds"),
                worse(f"{d}.chain", doc="chain bound of the whole model"),
                worse(f"{d}.measured", doc=f"largest measured local Lipschitz constant of the {d} map"),
                worse(f"{d}.tightness", doc="certified bound / measured constant"),
            )
        ),
        neither("n", doc="samples"),
        neither("blocks", doc="blocks"),
        neither("certified_blocks", doc="blocks with a global certificate"),
        worse("empirical_blocks", doc="blocks whose certificate is empirical (unbounded scale)"),
        worse("block_tightness.max", doc="the loosest block's certified / measured"),
        worse("residual.lip_g_max", doc="largest certified Lip(g) of a residual block"),
        worse("residual.lip_g_measured_max", doc="largest measured local Lip(g)"),
        worse("residual.uncertified", doc="residual blocks whose certified Lip(g) is not below one"),
        worse("residual.estimate_misses", doc="library estimate < 1 but certificate >= 1"),
        neither("log_scale.min", doc="smallest measured log-scale of an empirical block"),
        neither("log_scale.max", doc="largest measured log-scale of an empirical block"),
        rate("violation_fraction", "samples whose measured constant exceeds a bound"),
    )

    @classmethod
    def costs(cls, dim: int, options: Mapping[str, Any]) -> Mapping[str, AuditCost]:
        """Both directions' largest singular values per sample, exact or by Lanczos (128
        iterations), and per set the blocks' exact Jacobians on ``block_samples`` samples
        (planned as 8 blocks of the largest size measured: ``d`` capped at ``block_max_dim``)."""
        size = min(dim, int(options.get("block_max_dim", 1024)))
        per_set = Cost(vmap_vjp=8 * size, dense=8 * float(size) ** 3) * int(options.get("block_samples", 8))
        return {k: AuditCost(v.per_sample, v.per_set + per_set) for k, v in jacobian_costs(dim, 128).items()}

    def __init__(self) -> None:
        self._cache: tuple[int, int, Certificate] | None = None

    def _certificate(self, model: InvertibleModel, chain_max_dim: int) -> Certificate:
        if self._cache is None or self._cache[:2] != (id(model), chain_max_dim):
            self._cache = (id(model), chain_max_dim, model_certificate(model, chain_max_dim))
        return self._cache[2]

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped when a block has no global bound and no empirical stand-in (unknown types),
        unless an affine coupling already makes the whole certificate empirical: then the
        unknown blocks are listed without a certificate and the audit runs."""
        blocks = self._certificate(ctx.model, int(ctx.option("chain_max_dim"))).blocks
        if any(b.kind in AFFINE_KINDS for b in blocks):
            return None
        for b in blocks:
            if (b.forward is None or b.inverse is None) and not b.empirical and b.kind is not BoundKind.RESIDUAL:
                return f"no certified global bound: block {b.name}: {b.how}"
        return None

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement per data set: the certificates (one model-level computation every rank
        makes alike) and the measured constants beside them (the sets' batches are the work
        units of a sharded run)."""
        cert = self._certificate(ctx.model, int(ctx.option("chain_max_dim")))
        chain = list(ctx.model.blocks())
        residual = [b.kind is BoundKind.RESIDUAL for b in cert.blocks]
        totals = sample_counts(ctx)

        def work(unit: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, list[BlockConstants]]:
            index, start, stop = unit
            ds = ctx.datasets[index]
            x = ds.make(start, stop).to(device=ctx.device, dtype=ctx.model.dtype)
            # salted by the batch's number in its set, as a single pass numbers them
            s = measure(
                lambda t: ctx.model.forward(t, grad=True),
                lambda t: ctx.model.inverse(t, grad=True),
                x,
                method=ctx.option("method"),
                tol=1e-4,
                max_iter=128,
                generator=ctx.generator(ds.name, start // max(1, ctx.batch_size)),
            )
            rows = int(ctx.option("block_samples")) - start  # the set's first block_samples samples
            per_block = block_constants(chain, x, residual, int(ctx.option("block_max_dim")), rows) if chain else []
            return s.forward_max, s.inverse_max, per_block

        slack = 1 + float(ctx.option("slack"))
        progress = set_progress(ctx, [d.name for d in ctx.datasets], totals)
        for ds, mine in zip(ctx.datasets, map_batches(ctx, totals, work, progress=progress), strict=True):
            yield _measurement(ds.name, cert, mine, slack)


def _max(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else math.nan


def _ratio(bound: float | None, measured: float) -> float:
    if bound is None or not math.isfinite(measured) or measured <= 0:
        return math.nan if bound is not None else math.inf
    return bound / measured


def _joined(parts: list[tuple[np.ndarray, np.ndarray, list[BlockConstants]]], k: int, key: str) -> np.ndarray:
    return np.concatenate([getattr(p[2][k], key) for p in parts]) if parts else np.zeros(0)


def _measurement(
    name: str, cert: Certificate, parts: list[tuple[np.ndarray, np.ndarray, list[BlockConstants]]], slack: float
) -> Measurement:
    f = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    i = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    violated = (f > cert.forward * slack) | (i > cert.inverse * slack)
    rows = []
    measured_blocks = bool(parts and parts[0][2])
    for k, b in enumerate(cert.blocks if measured_blocks else ()):
        bf, bi, bg = (_joined(parts, k, key) for key in ("forward", "inverse", "lip_g"))
        violated |= (bf > (b.forward or math.inf) * slack) | (bi > (b.inverse or math.inf) * slack)
        if b.lip_g is not None:
            violated |= bg > b.lip_g * slack
        rows.append(_block_row(b, bf, bi, bg, _joined(parts, k, "log_scale_min"), _joined(parts, k, "log_scale_max")))
    mf, mi = _max(f), _max(i)
    metrics: dict[str, Any] = {
        "n": len(f),
        "blocks": len(cert.blocks),
        "certified_blocks": sum(1 for b in cert.blocks if b.forward is not None and b.inverse is not None),
        "empirical_blocks": sum(1 for b in cert.blocks if b.empirical),
        "forward": _direction(cert.forward, cert.forward_product, cert.forward_chain, mf),
        "inverse": _direction(cert.inverse, cert.inverse_product, cert.inverse_chain, mi),
        "block_tightness": {"max": _loosest(rows)},
        "violation_fraction": float(violated.mean()) if len(f) else 0.0,
    }
    residual = [
        (b, r)
        for b, r in zip(cert.blocks, rows or [{}] * len(cert.blocks), strict=True)
        if b.kind is BoundKind.RESIDUAL
    ]
    if residual:
        metrics["residual"] = _residual_metrics(residual)
    scales = [r for b, r in zip(cert.blocks, rows, strict=False) if b.empirical]
    if scales:
        metrics["log_scale"] = {  # -inf is a scale that underflowed to 0: kept, it is the finding
            "min": _nan_min([r["log_scale_min"] for r in scales]),
            "max": -_nan_min([-r["log_scale_max"] for r in scales]),
        }
    return Measurement(
        name, metrics, _message(cert, metrics, residual, violated), {"blocks": rows or _plain_rows(cert)}
    )


def _direction(bound: float, product: float, chain: float | None, measured: float) -> dict[str, float]:
    return {
        "bound": bound,
        "product": product,
        "chain": chain if chain is not None else math.nan,
        "measured": measured,
        "tightness": _ratio(bound, measured) if math.isfinite(bound) else math.inf,
    }


def _block_row(
    b: BlockBound, f: np.ndarray, i: np.ndarray, g: np.ndarray, low: np.ndarray, high: np.ndarray
) -> dict[str, Any]:
    worst = b.worst_layer
    mf, mi = _max(f), _max(i)
    row: dict[str, Any] = {
        "name": b.name,
        "kind": b.kind.value,
        "certificate": "global"
        if b.forward is not None and b.inverse is not None
        else ("empirical" if b.empirical else "none"),
        "forward_bound": b.forward,
        "inverse_bound": b.inverse,
        "how": b.how,
        "forward_measured": mf,
        "inverse_measured": mi,
        "forward_tightness": _ratio(b.forward, mf),
        "inverse_tightness": _ratio(b.inverse, mi),
        "worst_layer": f"{worst.name} {worst.norm:.4g}" if worst is not None else "",
        "log_scale_min": float(np.nanmin(low)) if np.isfinite(low).any() else math.nan,
        "log_scale_max": float(np.nanmax(high)) if np.isfinite(high).any() else math.nan,
        "empirical": b.empirical,
    }
    if b.kind is BoundKind.RESIDUAL:
        row |= {
            "lip_g": b.lip_g,
            "lip_g_estimate": b.lip_g_estimate,
            "estimate_how": b.estimate_how,
            "lip_g_measured": _max(g),
        }
    return row


def _plain_rows(cert: Certificate) -> list[dict[str, Any]]:
    """Rows for a model without blocks (nothing measured per block)."""
    empty = np.full(1, math.nan)
    return [_block_row(b, empty, empty, empty, empty, empty) for b in cert.blocks]


def _loosest(rows: list[dict[str, Any]]) -> float:
    values = [
        v for r in rows for v in (r["forward_tightness"], r["inverse_tightness"]) if v is not None and math.isfinite(v)
    ]
    return max(values) if values else math.nan


def _residual_metrics(residual: list[tuple[BlockBound, dict[str, Any]]]) -> dict[str, float]:
    lips = [b.lip_g if b.lip_g is not None else math.inf for b, _ in residual]
    measured = [r.get("lip_g_measured", math.nan) for _, r in residual]
    return {
        "lip_g_max": max(lips),
        "lip_g_measured_max": _finite_max(measured),
        "uncertified": sum(1 for c in lips if c >= 1.0),
        "estimate_misses": sum(
            1
            for b, _ in residual
            if b.lip_g_estimate is not None and b.lip_g_estimate < 1.0 and (b.lip_g is None or b.lip_g >= 1.0)
        ),
    }


def _finite_max(values: Sequence[float]) -> float:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return max(kept) if kept else math.nan


def _nan_min(values: Sequence[float]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return min(kept) if kept else math.nan


def _message(
    cert: Certificate, metrics: dict[str, Any], residual: list[tuple[BlockBound, dict[str, Any]]], violated: np.ndarray
) -> str:
    parts = []
    if violated.any():
        parts.append(f"{int(violated.sum())} sample(s) exceed a certified bound")
    for b, _ in residual:
        if b.lip_g is not None and b.lip_g >= 1.0:
            worst = b.worst_layer
            layer = f", largest layer {worst.name} norm {worst.norm:.4g}" if worst is not None else ""
            text = f"block {b.name}: certified Lip(g) = {b.lip_g:.4g} >= 1, the fixed point may diverge{layer}"
            if b.lip_g_estimate is not None and b.lip_g_estimate < 1.0:
                text += f"; the library's estimate says {b.lip_g_estimate:.4g} < 1 ({b.estimate_how})"
            parts.append(text)
    for d, label in (("forward", "Lip(F)"), ("inverse", "Lip(F^-1)")):
        m = metrics[d]
        if math.isfinite(m["bound"]):
            how = "chain" if math.isfinite(m["chain"]) and m["chain"] <= m["product"] else "product"
            parts.append(
                f"{label} <= {m['bound']:.3g} ({how}; measured {m['measured']:.3g}, tightness {m['tightness']:.3g}x)"
            )
    empirical = [b for b in cert.blocks if b.empirical]
    if empirical:
        scale = metrics.get("log_scale", {})
        low, high = scale.get("min", math.nan), scale.get("max", math.nan)
        measured = (
            f"measured log-scale range [{low:.3g}, {high:.3g}]"
            if not (math.isnan(low) and math.isnan(high))
            else "log-scale range not measured (the blocks have no scales(h) hook)"
        )
        parts.append(
            f"{len(empirical)} block(s) without a global bound, certificate empirical ({empirical[0].name}: "
            f"{empirical[0].empirical}); {measured}"
        )
    return "; ".join(parts)
