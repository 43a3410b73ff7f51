"""The ``gradient`` audit: memory-saving gradients against the true ones.

The comparison of one batch is :mod:`innaudit.audits.gradient_compare`, the backward walk it
measures :mod:`innaudit.model.memory_saving` (the one memory-saving training takes), memcnn's
wrappers :mod:`innaudit.loading.adapters.memcnn`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import block_names, map_batches, set_progress
from innaudit.audits.cost import AuditCost, Cost
from innaudit.audits.gradient_compare import (
    BatchComparison,
    LossFn,
    block_params,
    chain_log_det,
    choose_loss,
    compare_gradients,
    composition,
    culprit,
    library_comparison,
)
from innaudit.audits.preflight import PreflightFinding, PreflightKind, count, preflight, texts
from innaudit.config.choices import GRADIENT_LOSSES, check_choice
from innaudit.config.settings import Threshold
from innaudit.core.metrics import neither, percent, rate, worse
from innaudit.core.stats import column_nan_max, nan_max, significant, summarize
from innaudit.data import Dataset
from innaudit.data.dataset import Role
from innaudit.loading.adapters.memcnn import memcnn_wrappers, wrappers_disabled
from innaudit.model.contract import InvertibleModel

__all__ = ["LOSSES", "Gradient", "preflight"]

LOSSES = GRADIENT_LOSSES

PARAMETER_VJP = 1.6
"""A backward pass to the parameters and the input, in VJPs to the input alone (what the planner
times): a linear layer's weight gradient is one more matrix product beside its input gradient's,
so more than half a VJP more (measured on the CIFAR-size coupling flow of ``benchmarks/scale.py``
in batches of 64, one thread)."""

CHECK_PASSES = 7
"""Forward passes of one sample per set outside the batches: the skip check (1), the choice of
loss on two samples (2) and the composition check on two (the model and the chain, 4)."""


@register
class Gradient(Audit):
    r"""Memory-saving gradients (inputs reconstructed by the inverse) against the true gradients.

    Property: invertible networks can be trained without storing activations, by reconstructing
    each block's input from its output with the inverse. When the inverse is unstable the
    reconstructed activations, and so the gradients, are wrong while the loss looks fine: the
    third failure of exploding inverses (Behrmann et al., AISTATS 2021, section 5,
    https://arxiv.org/abs/2006.09347; their ``compute_gradient_angles.py``).

    Per batch of in-distribution data (``batches`` batches of ``batch`` samples), over every
    trainable parameter of ``blocks()``, in eval mode:

    - true gradient ``g``: ordinary autograd through the chain of blocks, activations stored;
    - memory-saving gradient ``g'``: forward under ``no_grad`` to ``z``; ``dL/dz``; then for each
      block ``f_k`` from last to first: ``h = f_k^-1(y)`` under ``no_grad``, re-run ``f_k(h)``
      with autograd and back-propagate ``dL/dy`` (and ``dL/dlog_det``) to ``dL/dh`` and the
      block's parameter gradients;
    - the loss (option ``loss``, CLI ``--gradient-loss``): ``nll`` ``mean_i(0.5 ||z_i||^2 -
      log|det J|)`` (standard normal prior); ``projection`` ``mean_i <z_i, v>`` with a seeded
      unit direction ``v``; ``model``: the model's own ``gradient_loss(z, log_det, x)``
      attribute (a factory supplies it); ``auto``: ``model`` when there is one, else ``nll``
      when every block reports a log-det, else ``projection``.

    Metrics per set: ``rel_error_l2`` ``||g' - g|| / ||g||``, ``error_l2`` ``||g' - g||`` and
    ``angle`` ``arccos(cos(g', g))`` in radians (cosine clipped to ``+-(1 - 1e-9)`` as in the
    paper's code, so the smallest angle reported is ``sqrt(2e-9) ~ 4.5e-5``), each
    summarized over batches (``median``, ``p99``, ``max``, ``mean`` of the finite ones);
    ``nonfinite_fraction``: share of the ``n`` batches whose memory-saving gradient has a NaN or
    Inf (their angle is NaN); ``true_nonfinite_fraction`` likewise for the true gradient. Per
    block (``series.blocks``, largest over batches): ``reconstruction_error``, the relative
    error of the block's input as the backward walk rebuilds it, and ``gradient_error``, the
    relative error of the block's parameter gradients. ``culprit`` names the first block of the
    backward walk whose reconstructed input is off by more than ``rounding`` machine epsilons
    of the model's dtype (``rounding_level``): the block whose inverse lets the error in.
    ``stateful_layers`` counts blocks holding BatchNorm, InstanceNorm or Dropout, whose state
    changes on the re-run in training mode; an iterative inverse is named with its tolerance in
    the message. Models built from ``memcnn.InvertibleModuleWrapper`` are measured with the
    wrappers disabled (plain autograd through ``_fn``), and memcnn's own reconstruction is
    compared too (``library_rel_error``, ``library_angle``; ``loss.backward()``, as memcnn needs).

    Reading a failure: a relative error near 1 or a large angle means training with memory
    saving follows a different gradient than the loss defines; look at the culprit block (an
    affine coupling whose scale nearly vanishes) and its reconstruction error. Gate defaults:
    a non-finite memory-saving gradient fails; ``rel_error_l2.max`` above 1e-3 warns, above 1e-2
    fails; a stateful layer in a block warns.

    References:
        Behrmann, Vicol, Wang, Grosse, Jacobsen, "Understanding and Mitigating Exploding
        Inverses in Invertible Neural Networks", AISTATS 2021 (PMLR 130),
        https://arxiv.org/abs/2006.09347
    """

    id = "gradient"
    title = "Memory-saving gradients against true gradients"
    thresholds = {
        "nonfinite_fraction": Threshold(warn=None, fail=0.0),
        "rel_error_l2.max": Threshold(warn=1e-3, fail=1e-2),
        "stateful_layers": Threshold(warn=0.0, fail=None),
    }
    options = {"loss": "auto", "batches": 8, "batch": 64, "rounding": 1000.0}
    metrics = (
        neither("n", doc="batches"),
        neither("samples", doc="samples over all batches"),
        neither("blocks", doc="blocks walked"),
        neither("parameters", doc="trainable parameters compared"),
        worse("rel_error_l2", doc="||g_mem - g_true|| / ||g_true||"),
        worse("error_l2", doc="||g_mem - g_true||"),
        worse("angle", "rad", "angle between the gradients"),
        rate("nonfinite_fraction", "batches with a non-finite memory-saving gradient"),
        rate("true_nonfinite_fraction", "batches with a non-finite true gradient"),
        worse("block_recon_error", doc="largest relative error of a reconstructed block input"),
        worse("block_grad_error", doc="largest relative error of a block's parameter gradients"),
        neither("culprit_index", doc="first block of the backward walk off rounding (-1: none)"),
        neither("culprit", doc="name of the block at culprit_index ('': none)"),
        neither("loss", doc="the loss the gradients are of (nll, projection, model)"),
        neither("rounding_level", doc="reconstruction error counted as rounding"),
        worse("stateful_layers", doc="blocks with BatchNorm/Dropout"),
        worse("library_rel_error", doc="memcnn's own memory-saving gradient, relative error"),
        worse("library_angle", "rad", "memcnn's own memory-saving gradient, angle"),
    )

    @classmethod
    def costs(cls, dim: int, options: Mapping[str, Any]) -> Mapping[str, AuditCost]:
        """Per sample: the true gradient (a forward with autograd and a backward to the
        parameters: one VJP to the parameters) and the memory-saving one (the inverse of every
        block, then each block re-run with autograd and back-propagated: another), each
        :data:`PARAMETER_VJP` VJPs; the walk starts from the true pass's ``z``, so there is no
        forward of its own. Per set: :data:`CHECK_PASSES` forwards."""
        del dim  # every pass is one of the model's
        per_sample = Cost(inverse=1, vjp=2 * PARAMETER_VJP)
        return {"": AuditCost(per_sample, Cost(forward=CHECK_PASSES))}

    @classmethod
    def capacities(cls, datasets: Sequence[Dataset], options: Mapping[str, Any], samples: int) -> list[int]:
        """The in-distribution sets only, ``batches * batch`` samples of each at most."""
        cap = int(options["batches"]) * int(options["batch"])
        return [min(d.size, samples, cap) for d in datasets if d.role is Role.IN_DISTRIBUTION]

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """``loss`` is one of :data:`innaudit.config.choices.GRADIENT_LOSSES`."""
        check_choice("gradient.loss", options["loss"], GRADIENT_LOSSES)

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped without ``blocks()``, trainable block parameters, in-distribution data, or when
        the blocks pass something other than one tensor (a multi-scale latent)."""
        if not ctx.model.blocks():
            return "the model exposes no blocks() to reconstruct activations through"
        if not block_params(ctx.model.blocks())[0]:
            return "the blocks have no trainable parameters"
        data = [d for d in ctx.datasets if d.role is Role.IN_DISTRIBUTION]
        if not data:
            return "no in-distribution data set (memory-saving gradients are a training matter)"
        latent = ctx.model.latent
        if latent is not None and not latent.single:
            return "a multi-scale latent: the memory-saving reconstruction through split blocks is not implemented yet"
        try:
            chain_log_det(ctx.model.blocks(), data[0].first(1).to(ctx.device, ctx.model.dtype))
        except TypeError as exc:  # a block passes a structured (multi-scale) latent
            return f"the blocks do not pass plain tensors from one to the next ({exc})"
        return None

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement per in-distribution set; its batches are the work units of a sharded
        run (the checks of the chain and the choice of loss are made alike on every rank)."""
        wrappers = memcnn_wrappers(ctx.model.module)
        for ds in ctx.datasets:
            if ds.role is not Role.IN_DISTRIBUTION:
                continue
            with wrappers_disabled(wrappers, True):
                blocks = ctx.model.blocks()
                names = block_names(blocks)
                found = preflight(ctx.model, blocks, names)
                first = ds.first(2).to(ctx.device, ctx.model.dtype)
                own = getattr(ctx.model.module, "gradient_loss", None)
                loss, loss_name, note = choose_loss(
                    str(ctx.option("loss")), own, blocks, first, lambda: ctx.generator("projection")
                )
                found += composition(ctx.model, blocks, first)
                results, library, samples = self._compare(ctx, ds, blocks, loss, wrappers)
            yield self._measure(ctx, ds.name, names, results, samples, loss_name, note, found, library)

    @staticmethod
    def _compare(
        ctx: AuditContext, ds: Dataset, blocks: Sequence[InvertibleModel], loss: LossFn, wrappers: Sequence[nn.Module]
    ) -> tuple[list[BatchComparison], tuple[np.ndarray, np.ndarray] | None, int]:
        """True against memory-saving gradients on the first ``batches * batch`` samples of ``ds``
        (capped by ``--samples``), batch by batch, and memcnn's own gradient when it wraps the
        blocks: the comparisons, memcnn's (rel, angle) per batch, the number of samples."""
        step = int(ctx.option("batch"))
        total = min(int(ctx.option("batches")) * step, ctx.samples, ds.size)

        def work(unit: tuple[int, int, int]) -> tuple[BatchComparison, tuple[float, float] | None]:
            x = ds.make(unit[1], unit[2]).to(device=ctx.device, dtype=ctx.model.dtype)
            compared = compare_gradients(blocks, x, loss)
            return compared, library_comparison(ctx.model, wrappers, blocks, x, loss) if wrappers else None

        (parts,) = map_batches(ctx, [total], work, step, set_progress(ctx, [ds.name], [total]))
        results = [compared for compared, _ in parts]
        library = [own for _, own in parts if own is not None]
        if not wrappers:
            return results, None, total
        return results, (np.array([rel for rel, _ in library]), np.array([angle for _, angle in library])), total

    @staticmethod
    def _measure(
        ctx: AuditContext,
        name: str,
        names: list[str],
        results: list[BatchComparison],
        samples: int,
        loss_name: str,
        note: str,
        found: list[PreflightFinding],
        library: tuple[np.ndarray, np.ndarray] | None,
    ) -> Measurement:
        level = float(ctx.option("rounding")) * torch.finfo(ctx.model.dtype).eps
        recon = np.max([r.recon_error for r in results], axis=0)
        block_grad = column_nan_max([r.block_error for r in results])
        where = culprit(recon, level)
        rel = np.array([r.rel_error for r in results])
        metrics: dict[str, object] = {
            "n": len(results),
            "samples": samples,
            "blocks": len(names),
            "parameters": sum(p.numel() for p in block_params(ctx.model.blocks())[0]),
            "loss": loss_name,
            "rel_error_l2": summarize(rel),
            "error_l2": summarize(np.array([r.error_l2 for r in results])),
            "angle": summarize(np.array([r.angle for r in results])),
            "nonfinite_fraction": float(np.mean([r.nonfinite for r in results])),
            "true_nonfinite_fraction": float(np.mean([r.true_nonfinite for r in results])),
            "block_recon_error": {"max": nan_max(recon)},
            "block_grad_error": {"max": nan_max(block_grad)},
            "culprit": names[where] if where >= 0 else "",
            "culprit_index": where,
            "rounding_level": level,
            "stateful_layers": count(found, PreflightKind.STATEFUL_LAYERS),
            "preflight": texts(found),
        }
        if library is not None:
            metrics["library_rel_error"] = summarize(library[0])
            metrics["library_angle"] = summarize(library[1])
        series = {
            "blocks": {
                "name": names,
                "reconstruction_error": significant(recon),
                "gradient_error": significant(block_grad),
            }
        }
        return Measurement(name, metrics, _message(metrics, names, where, note, found), series)


def _message(metrics: dict[str, object], names: list[str], where: int, note: str, found: list[PreflightFinding]) -> str:
    rel, angle = metrics["rel_error_l2"], metrics["angle"]
    assert isinstance(rel, dict) and isinstance(angle, dict)
    parts = [
        f"{metrics['loss']} loss: relative gradient error up to {rel['max']:.3g} "
        f"(angle up to {angle['max']:.3g} rad) over {metrics['n']} batch(es)"
    ]
    nonfinite = metrics["nonfinite_fraction"]
    if isinstance(nonfinite, (int, float)) and nonfinite:
        parts.append(f"memory-saving gradient non-finite in {percent(float(nonfinite))} of batches")
    if where >= 0:
        parts.append(
            f"reconstruction error leaves rounding (> {metrics['rounding_level']:.2g}) first "
            f"at block {names[where]}, walking back from the output"
        )
    lib = metrics.get("library_rel_error")
    if isinstance(lib, dict):
        parts.append(f"memcnn's own reconstruction: relative error up to {lib['max']:.3g}")
    return "; ".join(parts + ([note] if note else []) + texts(found))
