"""The ``bounds`` audit."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch

from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import batch_units, by_set, sample_counts
from innaudit.audits.cost import AuditCost, jacobian_costs
from innaudit.audits.jacobians import measure
from innaudit.config.settings import Threshold
from innaudit.core.metrics import neither, rate, worse
from innaudit.linalg.lipschitz import BlockBound, block_bound
from innaudit.model.contract import InvertibleModel

__all__ = ["Bounds", "model_bounds"]


def _block_shapes(model: InvertibleModel, blocks: Sequence[InvertibleModel]) -> list[tuple[int, ...]]:
    """The input shape of every block, from a zero probe through the chain."""
    where = next(iter(model.module.parameters()), None)
    h = torch.zeros(1, *model.info.domain.shape, dtype=model.dtype, device=where.device if where is not None else "cpu")
    shapes = []
    for block in blocks:
        shapes.append(tuple(h.shape[1:]))
        h = block.carry(block.forward(h))
    return shapes


def model_bounds(model: InvertibleModel) -> list[BlockBound]:
    """Per-block certified bounds of ``model`` (one entry for a model without blocks)."""
    blocks = model.blocks()
    if not blocks:
        return [
            block_bound(
                model.module, tuple(model.info.domain.shape), model.info.architecture or type(model.module).__name__
            )
        ]
    shapes = _block_shapes(model, blocks)
    return [
        block_bound(b.module, s, f"{i}:{b.info.architecture or type(b.module).__name__}")
        for i, (b, s) in enumerate(zip(blocks, shapes, strict=False))
    ]


@register
class Bounds(Audit):
    r"""Certified global bounds on ``Lip(F)`` and ``Lip(F^-1)`` from the architecture.

    Property: ``Lip(f_K o ... o f_1) <= prod_k Lip(f_k)`` (and likewise for the inverse), with
    each block's constant from its parameters by the building-block lemmas (Behrmann et al.,
    AISTATS 2021, table 1; https://arxiv.org/abs/2006.09347): additive coupling ``(L + sqrt(L^2 + 4)) / 2 <=
    1 + Lip(t)`` both ways, residual blocks ``1 + c`` and ``1 / (1 - c)``, ActNorm and
    invertible 1x1 convolutions by their scales' and ``W``'s extreme singular values, squeeze
    and permutations 1, ``Lip(t)`` from the exact spectral norms of the net's layers (conv
    layers as operators at the input resolution). See :mod:`innaudit.linalg.lipschitz`. A bound holds
    on all of ``R^d``: no input, however far out of distribution, can make the inverse amplify
    a perturbation by more than ``inverse.bound``.

    Affine coupling has no global bound (the inverse multiplies by ``1 / g`` which is unbounded,
    and a cross term grows with the input): the audit is skipped, naming the first such block.
    Blocks contribute through the ``lipschitz_bounds()`` hook or the built-in rules.

    Metrics per set: ``forward.bound``, ``inverse.bound`` (the certified products), the largest
    measured local constants ``forward.measured`` = max ``sigma_max(J_F(x))`` and
    ``inverse.measured`` = max ``sigma_max(J_F^-1(F(x)))`` over the first ``samples`` samples
    (exact Jacobians), their ratios to the bounds (tightness, in (0, 1]), and
    ``violation_fraction``: samples whose measured constant exceeds a bound by more than the
    relative ``slack`` (float32 rounding of the Jacobian). ``series.blocks`` lists each block's
    bounds.

    Reading a failure: a violation means a block's declared constant is wrong (e.g. a spectral
    normalization that was not calibrated) or the model is not the composition it claims; the
    bound cannot be trusted. Gate: any violation fails.

    References:
        Behrmann, Vicol, Wang, Grosse, Jacobsen, "Understanding and Mitigating Exploding
        Inverses in Invertible Neural Networks", AISTATS 2021 (PMLR 130),
        https://arxiv.org/abs/2006.09347
    """

    id = "bounds"
    title = "Certified global Lipschitz bounds of F and F^-1 from the architecture"
    thresholds = {"violation_fraction": Threshold(warn=None, fail=0.0)}
    options = {"samples": 32, "slack": 1e-3, "method": "auto"}
    metrics = (
        *tuple(
            m
            for d in ("forward", "inverse")
            for m in (
                worse(f"{d}.bound", doc=f"certified Lipschitz bound of the {d} map"),
                worse(f"{d}.measured", doc=f"largest measured local Lipschitz constant of the {d} map"),
                neither(f"{d}.tightness", doc="measured / bound"),
            )
        ),
        neither("n", doc="samples"),
        neither("blocks", doc="blocks bounded"),
        rate("violation_fraction", "samples whose measured constant exceeds the bound"),
    )

    @classmethod
    def costs(cls, dim: int, options: Mapping[str, Any]) -> Mapping[str, AuditCost]:
        """Both directions' largest singular values, exact or by Lanczos (128 iterations)."""
        return jacobian_costs(dim, 128)

    def __init__(self) -> None:
        self._cache: tuple[int, list[BlockBound]] | None = None

    def _bounds(self, model: InvertibleModel) -> list[BlockBound]:
        if self._cache is None or self._cache[0] != id(model):
            self._cache = (id(model), model_bounds(model))
        return self._cache[1]

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped when a block has no global bound (affine coupling, unknown block types)."""
        for b in self._bounds(ctx.model):
            if b.forward is None or b.inverse is None:
                return f"no certified global bound: block {b.name}: {b.how}"
        return None

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement per data set: the bounds and the measured constants beside them. The
        bounds are one model-level computation every rank makes alike; the sets' batches of
        measured constants are the work units of a sharded run."""
        bounds = self._bounds(ctx.model)
        # skip_reason let the audit run, so every block has both bounds
        fwd = math.prod(cast(float, b.forward) for b in bounds)
        inv = math.prod(cast(float, b.inverse) for b in bounds)
        series = {
            "blocks": {
                "name": [b.name for b in bounds],
                "forward_bound": [b.forward for b in bounds],
                "inverse_bound": [b.inverse for b in bounds],
                "how": [b.how for b in bounds],
            }
        }
        forward = lambda t: ctx.model.forward(t, grad=True)  # noqa: E731
        inverse = lambda t: ctx.model.inverse(t, grad=True)  # noqa: E731
        slack = 1 + ctx.option("slack")
        totals = sample_counts(ctx)
        units = batch_units(totals, ctx.batch_size)

        def work(unit: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
            index, start, stop = unit
            ds = ctx.datasets[index]
            x = ds.make(start, stop).to(device=ctx.device, dtype=ctx.model.dtype)
            # salted by the batch's number in its set, as a single pass numbers them
            s = measure(
                forward,
                inverse,
                x,
                method=ctx.option("method"),
                tol=1e-4,
                max_iter=128,
                generator=ctx.generator(ds.name, start // max(1, ctx.batch_size)),
            )
            return s.forward_max, s.inverse_max

        for ds, mine in zip(ctx.datasets, by_set(units, ctx.map(units, work), len(ctx.datasets)), strict=True):
            f = np.concatenate([part[0] for part in mine]) if mine else np.zeros(0)
            i = np.concatenate([part[1] for part in mine]) if mine else np.zeros(0)
            violated = (f > fwd * slack) | (i > inv * slack)
            mf, mi = _max(f), _max(i)
            metrics = {
                "n": len(f),
                "blocks": len(bounds),
                "forward": {"bound": fwd, "measured": mf, "tightness": mf / fwd},
                "inverse": {"bound": inv, "measured": mi, "tightness": mi / inv},
                "violation_fraction": float(violated.mean()) if len(f) else 0.0,
            }
            message = f"Lip(F) <= {fwd:.3g} (measured {mf:.3g}), Lip(F^-1) <= {inv:.3g} (measured {mi:.3g})"
            if violated.any():
                message = f"{int(violated.sum())} sample(s) exceed a certified bound; " + message
            yield Measurement(ds.name, metrics, message, series)


def _max(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else math.nan
