"""The ``bounds`` audit."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import innaudit.loading.adapters  # noqa: F401  (registers the library blocks' residual branches)
from innaudit.audits.attack import default_epsilon
from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.block_constants import BlockConstants, block_constants
from innaudit.audits.bounds_local import (
    DomainCertificate,
    LocalCertificates,
    ModelChain,
    block_shapes,
    chain_mismatch,
    domain_search,
    local_certificates,
    model_chain,
)
from innaudit.audits.bounds_search import search_witness
from innaudit.audits.common import map_batches, sample_counts, set_progress
from innaudit.audits.cost import AuditCost, Cost, jacobian_costs
from innaudit.audits.jacobians import measure
from innaudit.config.settings import Threshold
from innaudit.core.bound_kind import AFFINE_KINDS, BoundKind
from innaudit.core.metrics import neither, percent, rate, worse
from innaudit.linalg import EXACT_MAX_DIM
from innaudit.linalg.chain import Stage, chain_bound, chain_limit
from innaudit.linalg.lipschitz import BlockBound, block_bound, block_stages
from innaudit.model.contract import InvertibleModel

__all__ = ["Bounds", "Certificate", "model_bounds", "model_certificate", "search_cost"]


def _block_shapes(model: InvertibleModel, blocks: Sequence[InvertibleModel]) -> list[tuple[int, ...]]:
    return block_shapes(model, blocks)


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
        chain: the whole model as a chain with offsets and activations, for the local and
            domain certificates (None when a block is not a chain).
    """

    blocks: tuple[BlockBound, ...]
    forward_product: float
    inverse_product: float
    forward_chain: float | None
    inverse_chain: float | None
    chain: ModelChain | None = None

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
        whole = model_chain(model) if chains[0] is not None else None
    return Certificate(
        blocks,
        _product([b.forward for b in blocks]),
        _product([b.inverse for b in blocks]),
        chains[0],
        chains[1],
        whole,
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

    Where the model is used (:mod:`innaudit.audits.bounds_local`, :mod:`innaudit.audits.bounds_search`):
    when the whole model is one chain that reproduces its forward pass, bound propagation gives
    every activation's slope range inside a box, and the chain bound with those ranges certifies
    ``sup ||J_F||`` over it (and ``sup ||J_F^-1||`` by Weyl's inequality on the mean-slope chain,
    or by the inverse chain where every block's inverse sees its forward's pre-activations).
    ``{d}.local``: the largest such certificate over the L_inf balls of ``local_radius`` (null:
    the ``attack`` audit's radius, half a quantization bin) around the samples (inf: not
    certified; a ball with unstable activations split into at most ``local_cells`` boxes where
    ``d <= domain_split_max_dim``); ``{d}.domain``: over the box holding the model's domain and the set, split by
    branch and bound into at most ``domain_cells`` boxes where ``d <= domain_split_max_dim``;
    ``{d}.global``: the smaller of ``bound`` (all of R^d) and ``domain``. ``{d}.witness``: the
    largest local constant a search found in that box (``search_steps`` steps from
    ``search_samples`` samples of the first set with that box and ``search_starts`` seeded
    random starts, ``search_proposals`` random steps each, up to ``block_max_dim``
    dimensions; one search per box), or the set's measured maximum if larger: measured at a point, so the global
    constant is at least it, and above ``global`` it fails the audit (``witness_exceeds``).
    ``{d}.global_tightness`` = global / measured, ``{d}.witness_tightness`` = global / witness,
    ``{d}.local_tightness`` = local / measured; a sample measured above its own ball's
    certificate counts as a violation. ``unmeasured_blocks`` warns, with the blocks named, when
    a block is wider than ``block_max_dim`` (its own constants are then not measured).

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
        "witness_exceeds": Threshold(warn=None, fail=0.0),
        "unmeasured_blocks": Threshold(warn=0.0, fail=None),
    }
    options = {
        "samples": 32,
        "slack": 1e-3,
        "method": "auto",
        "chain_max_dim": 2048,
        "block_max_dim": 1024,
        "block_samples": 8,
        "local_radius": None,
        "local_max_unstable": 0.5,
        "local_cells": 64,
        "domain_cells": 16384,
        "split_target": 1.1,
        "domain_split_max_dim": 4,
        "search_steps": 16,
        "search_samples": 4,
        "search_starts": 4,
        "search_proposals": 3,
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
                worse(f"{d}.global", doc="the global certificate: the R^d bound or the domain box's, the smaller"),
                worse(f"{d}.domain", doc="certified sup of the local constant over the domain box"),
                neither(f"{d}.witness", doc="largest local constant found by the search (a lower bound)"),
                worse(f"{d}.local", doc="largest certified sup of the local constant over a sample's ball"),
                worse(f"{d}.global_tightness", doc="global certificate / measured constant"),
                worse(f"{d}.witness_tightness", doc="global certificate / witness"),
                worse(f"{d}.local_tightness", doc="local certificate / measured constant"),
            )
        ),
        neither("local_radius", doc="L-inf radius of the balls of the local certificate"),
        neither("domain_cells", doc="boxes the domain certificate's branch and bound evaluated"),
        worse("local_unstable", doc="mean share of activations whose slope is not fixed in a ball"),
        neither("local_certified", doc="share of samples whose ball has a finite local certificate both ways"),
        worse("witness_exceeds", doc="directions whose witness exceeds the global certificate"),
        worse("unmeasured_blocks", doc="blocks wider than block_max_dim: their own constants not measured"),
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
        (planned as 8 blocks of the largest size measured: ``d`` capped at ``block_max_dim``)
        and the witness search (:func:`search_cost`)."""
        size = min(dim, int(options.get("block_max_dim", 1024)))
        per_set = Cost(vmap_vjp=8 * size, dense=8 * float(size) ** 3) * int(options.get("block_samples", 8))
        per_set = per_set + search_cost(dim, options)
        return {k: AuditCost(v.per_sample, v.per_set + per_set) for k, v in jacobian_costs(dim, 128).items()}

    def __init__(self) -> None:
        self._cache: tuple[int, int, Certificate] | None = None
        self._domains: dict[int, dict[tuple[float, float], DomainCertificate]] = {}
        self._witnesses: dict[tuple[int, float, float], tuple[float, float]] = {}

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
        units of a sharded run); then, per set, the domain certificate over the box holding the
        domain and the set, and the witness search."""
        limit = int(ctx.option("chain_max_dim"))
        cert = self._certificate(ctx.model, limit)
        chain = list(ctx.model.blocks())
        residual = [b.kind is BoundKind.RESIDUAL for b in cert.blocks]
        totals = sample_counts(ctx)
        radius = _local_radius(ctx)
        max_dim = min(int(ctx.option("block_max_dim")), EXACT_MAX_DIM)
        wide = tuple(
            _name(k, b)
            for k, (b, shape) in enumerate(zip(chain, _block_shapes(ctx.model, chain), strict=True))
            if math.prod(shape) > max_dim
        )

        def work(unit: tuple[int, int, int]) -> _Part:
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
                stop=ctx.overdue,
            )
            rows = int(ctx.option("block_samples")) - start  # the set's first block_samples samples
            per_block = block_constants(chain, x, residual, int(ctx.option("block_max_dim")), rows) if chain else []
            ball = (radius, float(ctx.option("local_max_unstable")), int(ctx.option("local_cells")))
            split = (int(ctx.option("domain_split_max_dim")), float(ctx.option("split_target")))
            local = _local(cert.chain, ctx.model, x, ball, limit, split, ctx.overdue)
            return s.forward_max, s.inverse_max, per_block, local

        slack = 1 + float(ctx.option("slack"))
        progress = set_progress(ctx, [d.name for d in ctx.datasets], totals)
        for ds, mine in zip(ctx.datasets, map_batches(ctx, totals, work, progress=progress), strict=True):
            domain, low, high = self._domain(ctx, cert, mine, limit)
            key = (id(ctx.model), low, high)  # one search per box: the global constant is the model's
            if key not in self._witnesses:
                points = domain.points if domain is not None else None
                self._witnesses[key] = _witness(ctx, ds, low, high, points)
            witness = self._witnesses[key]
            extra = _Extra(
                domain.forward if domain is not None else math.nan,
                domain.inverse if domain is not None else math.nan,
                witness,
                radius,
                wide,
                max_dim,
                float(ctx.option("local_max_unstable")),
                domain,
            )
            yield _measurement(ds.name, cert, mine, slack, extra)

    def _domain(
        self, ctx: AuditContext, cert: Certificate, parts: list[_Part], limit: int
    ) -> tuple[DomainCertificate | None, float, float]:
        """``(certificate, low, high)``: the domain certificate over the box that holds the
        model's domain and the set's samples (cached by box; None without a chain)."""
        domain = ctx.model.info.domain
        low = min([domain.low, *(float(p[3].low) for p in parts)])
        high = max([domain.high, *(float(p[3].high) for p in parts)])
        if cert.chain is None:
            return None, low, high
        key = (low, high)
        cache = self._domains.setdefault(id(ctx.model), {})
        if key not in cache:
            d = domain.numel
            lo, hi = torch.full((d,), low, dtype=torch.float64), torch.full((d,), high, dtype=torch.float64)
            with chain_limit(limit):
                cache[key] = domain_search(
                    cert.chain,
                    lo,
                    hi,
                    int(ctx.option("domain_cells")),
                    int(ctx.option("domain_split_max_dim")),
                    (cert.forward, cert.inverse),
                    float(ctx.option("local_max_unstable")),
                    float(ctx.option("split_target")),
                    ctx.overdue,
                )
        return cache[key], low, high


def search_cost(dim: int, options: Mapping[str, Any]) -> Cost:
    """The witness search of one set, both directions: per step and start, the proposals' and
    the current point's exact Jacobians and SVDs and a gradient (three passes); nothing above
    ``block_max_dim`` or with ``search_steps`` 0."""
    steps = int(options.get("search_steps", 0))
    if steps <= 0 or dim > min(int(options.get("block_max_dim", 1024)), EXACT_MAX_DIM):
        return Cost()
    starts = int(options.get("search_samples", 0)) + int(options.get("search_starts", 0)) + 2  # + the domain's
    points = 2 * starts * (steps * (int(options.get("search_proposals", 0)) + 1) + 1)
    return Cost(vmap_vjp=points * dim, dense=points * float(dim) ** 3, vjp=2 * 3 * starts * steps)


@dataclass(frozen=True)
class _Batch:
    """A batch's local certificates, its samples' range, and why no local certificate."""

    local: LocalCertificates
    low: float
    high: float
    mismatch: str


_Part = tuple[np.ndarray, np.ndarray, list[BlockConstants], _Batch]


@dataclass(frozen=True)
class _Extra:
    """A set's domain certificates, witnesses ``(forward, inverse)`` and the local radius."""

    domain_forward: float
    domain_inverse: float
    witness: tuple[float, float]
    radius: float
    wide: tuple[str, ...] = ()
    block_max_dim: int = 0
    max_unstable: float = 0.5
    domain: DomainCertificate | None = None


def _local_radius(ctx: AuditContext) -> float:
    given = ctx.option("local_radius")
    return float(given) if given is not None else default_epsilon(ctx.model.info.domain)[0]


def _local(
    chain: ModelChain | None,
    model: InvertibleModel,
    x: torch.Tensor,
    ball: tuple[float, float, int],
    limit: int,
    split: tuple[int, float],
    stop: Callable[[], bool],
) -> _Batch:
    """The local certificates of a batch over balls of ``ball = (radius, max_unstable, cells)``,
    split where ``d <= split[0]`` until within ``split[1]`` of the best value (or ``stop()``),
    where the chain reproduces the model."""
    flat = x.reshape(len(x), -1)
    low, high = float(flat.min()) if len(x) else math.inf, float(flat.max()) if len(x) else -math.inf
    if chain is None:
        return _Batch(LocalCertificates.missing(len(x)), low, high, "the model is not a chain")
    reason = chain_mismatch(chain, model, x)
    if reason is not None:
        return _Batch(LocalCertificates.missing(len(x)), low, high, reason)
    with chain_limit(limit):
        return _Batch(local_certificates(chain, x, *ball, split[0], split[1], stop), low, high, "")


def _witness(
    ctx: AuditContext, ds: Any, low: float, high: float, points: torch.Tensor | None = None
) -> tuple[float, float]:
    """The search's largest ``sigma_max(J_F)`` and ``1 / sigma_min(J_F)`` from the set's first
    samples, seeded random starts in ``[low, high]`` and ``points`` (the domain search's best
    cell centres, measured here by the model itself); NaN above ``block_max_dim``."""
    dim = ctx.model.info.domain.numel
    steps = int(ctx.option("search_steps"))
    if steps <= 0 or dim > min(int(ctx.option("block_max_dim")), EXACT_MAX_DIM):
        return math.nan, math.nan
    shape = tuple(ctx.model.info.domain.shape)
    gen = ctx.generator(ds.name, "witness")
    data = ds.make(0, min(ds.size, int(ctx.option("search_samples"))))
    count = int(ctx.option("search_starts"))
    uniform = low + (high - low) * torch.rand((count, *shape), generator=gen, dtype=torch.float64)
    found = [data.reshape(-1, *shape).double(), uniform]
    if points is not None and len(points):
        found.append(points.reshape(-1, *shape).double())
    starts = torch.cat(found).to(device=ctx.device, dtype=ctx.model.dtype)
    fn = lambda t: ctx.model.forward(t, grad=True)  # noqa: E731
    proposals = int(ctx.option("search_proposals"))
    found = [
        search_witness(fn, starts, low, high, steps=steps, proposals=proposals, generator=gen, inverse=inverse).value
        for inverse in (False, True)
    ]
    return found[0], found[1]


def _max(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else math.nan


def _ratio(bound: float | None, measured: float) -> float:
    if bound is None or not math.isfinite(measured) or measured <= 0:
        return math.nan if bound is not None else math.inf
    return bound / measured


def _joined(parts: list[_Part], k: int, key: str) -> np.ndarray:
    return np.concatenate([getattr(p[2][k], key) for p in parts]) if parts else np.zeros(0)


def _measurement(name: str, cert: Certificate, parts: list[_Part], slack: float, extra: _Extra) -> Measurement:
    max_unstable = extra.max_unstable
    f = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    i = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    local_f = np.concatenate([p[3].local.forward for p in parts]) if parts else np.zeros(0)
    local_i = np.concatenate([p[3].local.inverse for p in parts]) if parts else np.zeros(0)
    global_f = _smaller(cert.forward, extra.domain_forward)
    global_i = _smaller(cert.inverse, extra.domain_inverse)
    violated = (f > global_f * slack) | (i > global_i * slack)
    violated |= (f > local_f * slack) | (i > local_i * slack)  # NaN (not computed) compares False
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
        "forward": _direction(cert.forward, cert.forward_product, cert.forward_chain, mf)
        | _where_used(global_f, extra.domain_forward, extra.witness[0], local_f, f),
        "inverse": _direction(cert.inverse, cert.inverse_product, cert.inverse_chain, mi)
        | _where_used(global_i, extra.domain_inverse, extra.witness[1], local_i, i),
        "local_radius": extra.radius,
        "domain_cells": extra.domain.cells if extra.domain is not None else 0,
        "block_tightness": {"max": _loosest(rows)},
        "violation_fraction": float(violated.mean()) if len(f) else 0.0,
    }
    metrics["witness_exceeds"] = sum(
        1 for d in ("forward", "inverse") if metrics[d]["witness"] > metrics[d]["global"] * slack
    )
    unstable = np.concatenate([p[3].local.unstable for p in parts]) if parts else np.zeros(0)
    metrics["local_unstable"] = _nan_mean(unstable)
    certified = np.isfinite(local_f) & np.isfinite(local_i)
    metrics["local_certified"] = float(certified.mean()) if len(certified) else math.nan
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
    metrics["unmeasured_blocks"] = len(extra.wide)
    text = _message(cert, metrics, residual, violated, extra.wide, extra.block_max_dim)
    reasons = sorted({p[3].mismatch for p in parts} - {""})
    if cert.chain is not None and reasons:
        text += f"; no local certificate: {reasons[0]}"
    if extra.domain is not None and extra.domain.cells > 1 and not extra.domain.converged:
        text += (
            f"; the domain certificate's branch and bound stopped after {extra.domain.cells} boxes before it came "
            f"within bounds.split_target of the largest value found (raise bounds.domain_cells or the budget)"
        )
    skipped = int((np.isnan(local_f) & ~np.isnan(unstable)).sum())
    if skipped:
        text += (
            f"; no local certificate for {skipped} sample(s): more than {percent(max_unstable)} of the activations "
            f"change slope within {extra.radius:.3g} of them (a smaller bounds.local_radius, or "
            f"bounds.local_max_unstable 1 to bound them anyway)"
        )
    return Measurement(name, metrics, text, {"blocks": rows or _plain_rows(cert)})


def _smaller(bound: float, domain: float) -> float:
    """The global certificate: the R^d bound or the domain box's, whichever is smaller."""
    return min(bound, domain) if not math.isnan(domain) else bound


def _nan_mean(values: Sequence[float] | np.ndarray) -> float:
    kept = [float(v) for v in values if not math.isnan(float(v))]
    return sum(kept) / len(kept) if kept else math.nan


def _where_used(
    global_bound: float, domain: float, witness: float, local: np.ndarray, measured: np.ndarray
) -> dict[str, float]:
    """The certificates over the domain box and the samples' neighbourhoods, the search's
    witness, and the three tightness figures: global / data, global / witness, local / data."""
    data = _max(measured)
    local_max = float(np.nanmax(local)) if np.isfinite(local).any() or np.isinf(local).any() else math.nan
    return {
        "global": global_bound,
        "domain": domain,
        "witness": max(witness, data) if not math.isnan(witness) else math.nan,
        "local": local_max,
        "global_tightness": _ratio(global_bound, data) if math.isfinite(global_bound) else math.inf,
        "witness_tightness": _ratio(global_bound, max(witness, data)) if not math.isnan(witness) else math.nan,
        "local_tightness": _ratio(local_max, data) if not math.isnan(local_max) else math.nan,
    }


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


def _where_used_words(label: str, m: Mapping[str, float], radius: float) -> list[str]:
    """The domain certificate, the witness and the local certificate, each named for what it is."""
    out = []
    if math.isfinite(m["domain"]):
        out.append(
            f"{label} <= {m['domain']:.3g} on the domain box (bound propagation; "
            f"{m['global_tightness']:.3g}x the data's maximum)"
        )
    if not math.isnan(m["witness"]):
        out.append(
            f"search witness: {label} >= {m['witness']:.3g} (global certificate "
            f"{m['witness_tightness']:.3g}x the witness)"
        )
    if math.isfinite(m["local"]):
        out.append(
            f"local certificate within {radius:.3g} (L-inf) of each sample: {label} <= {m['local']:.3g} "
            f"({m['local_tightness']:.3g}x the data's maximum)"
        )
    elif math.isinf(m["local"]):
        out.append(f"local certificate of {label} within {radius:.3g} of a sample: not certified")
    return out


def _message(
    cert: Certificate,
    metrics: dict[str, Any],
    residual: list[tuple[BlockBound, dict[str, Any]]],
    violated: np.ndarray,
    wide: Sequence[str] = (),
    block_max_dim: int = 0,
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
                f"{label} <= {m['bound']:.3g} on R^d ({how}; measured {m['measured']:.3g}, "
                f"tightness {m['tightness']:.3g}x)"
            )
        parts += _where_used_words(label, m, metrics["local_radius"])
    if metrics["witness_exceeds"]:
        parts.append("the search found a local constant above the global certificate: the certificate is wrong")
    if wide:
        parts.append(
            f"the blocks' own constants are not measured for {len(wide)} block(s) wider than block_max_dim "
            f"{block_max_dim} ({', '.join(wide[:4])}{', ...' if len(wide) > 4 else ''}): raise "
            f"bounds.block_max_dim to measure them"
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
