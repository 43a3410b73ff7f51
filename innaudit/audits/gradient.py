"""The ``gradient`` audit: memory-saving gradients against the true ones."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import batch_units, progress_counter
from innaudit.config.choices import GRADIENT_LOSSES, check_choice
from innaudit.config.settings import Threshold
from innaudit.core.metrics import neither, rate, worse
from innaudit.core.stats import per_sample_norm, summarize
from innaudit.data import Dataset
from innaudit.data.dataset import Role
from innaudit.model.contract import InverseKind, InvertibleModel

__all__ = [
    "LOSSES",
    "BatchComparison",
    "Gradient",
    "LossFn",
    "compare_gradients",
    "culprit",
    "memcnn_wrappers",
    "nll_loss",
    "preflight",
    "projection_loss",
]

LossFn = Callable[[Tensor, Tensor | None, Tensor], Tensor]
"""``loss(z, log_det, x) -> scalar``; ``log_det`` is None when the blocks report none."""

LOSSES = GRADIENT_LOSSES


def nll_loss(z: Tensor, log_det: Tensor | None, x: Tensor) -> Tensor:
    """``mean_i (0.5 ||z_i||^2 - log|det J_F(x_i)|)``: the standard normal NLL up to a constant."""
    if log_det is None:
        raise ValueError("the nll loss needs a log-det; the blocks report none (use projection)")
    return (0.5 * z.flatten(1).pow(2).sum(1) - log_det).mean()


def projection_loss(direction: Tensor) -> LossFn:
    """``mean_i <z_i, v>`` for a fixed unit direction ``v`` of the latent's shape."""

    def loss(z: Tensor, log_det: Tensor | None, x: Tensor) -> Tensor:
        return (z.flatten(1) * direction.reshape(1, -1).to(z)).sum(1).mean()

    return loss


@dataclass(frozen=True)
class BatchComparison:
    """True against memory-saving gradients of one batch (over the trainable block parameters).

    ``recon_error[k]``: largest per-sample ``||h_k' - h_k|| / ||h_k||`` of block ``k``'s input
    reconstructed by the memory-saving walk (inf when non-finite); ``block_error[k]``:
    ``||g'_k - g_k|| / ||g_k||`` over block ``k``'s parameters (NaN without parameters).
    """

    rel_error: float
    error_l2: float
    angle: float
    nonfinite: bool
    true_nonfinite: bool
    recon_error: np.ndarray
    block_error: np.ndarray


def _params(blocks: Sequence[InvertibleModel]) -> tuple[list[nn.Parameter], list[list[int]]]:
    """The unique trainable parameters of the blocks, and each block's indices into them."""
    params: list[nn.Parameter] = []
    where: dict[int, int] = {}
    owned: list[list[int]] = []
    for block in blocks:
        mine = []
        for p in block.module.parameters():
            if p.requires_grad and p.is_floating_point():
                if id(p) not in where:
                    where[id(p)] = len(params)
                    params.append(p)
                mine.append(where[id(p)])
        owned.append(mine)
    return params, owned


def _grads(outputs: list[Tensor], inputs: list[Tensor], grad_outputs: list[Tensor]) -> list[Tensor]:
    """``autograd.grad`` with zeros for inputs the outputs do not reach."""
    keep = [i for i, t in enumerate(outputs) if t.requires_grad]
    if not keep:
        return [torch.zeros_like(t) for t in inputs]
    got = torch.autograd.grad([outputs[i] for i in keep], inputs, [grad_outputs[i] for i in keep], allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(got, inputs, strict=True)]


def _total(parts: list[Tensor | None]) -> Tensor | None:
    if any(p is None for p in parts):
        return None
    return torch.stack([p.reshape(-1) for p in parts if p is not None]).sum(0)


def _true_pass(
    blocks: Sequence[InvertibleModel], x: Tensor, loss: LossFn, params: list[nn.Parameter]
) -> tuple[list[Tensor], list[Tensor]]:
    """Ordinary autograd through the stored activations: ``(inputs of each block, grads)``."""
    h, inputs, lds = x, [], []
    for block in blocks:
        inputs.append(h.detach())
        h, ld = block.forward_and_log_det(h, grad=True)
        lds.append(ld)
    value = loss(h, _total(lds), x)
    return inputs, _grads([value], list(params), [torch.ones_like(value)])


def _memory_saving_pass(
    blocks: Sequence[InvertibleModel],
    x: Tensor,
    loss: LossFn,
    params: list[nn.Parameter],
    owned: list[list[int]],
) -> tuple[list[Tensor], list[Tensor]]:
    """The memory-saving gradient: forward without storing, then walk the blocks backwards.

    At block ``k`` (last to first): reconstruct its input ``h = f_k^-1(y)`` without autograd,
    re-run ``f_k(h)`` with autograd, and back-propagate ``dL/dy`` (and ``dL/dlog_det``) to get
    ``dL/dh`` and the block's parameter gradients. Returns the reconstructed inputs (first
    block first) and the gradients.
    """
    with torch.no_grad():
        h, lds = x, []
        for block in blocks:
            h, ld = block.forward_and_log_det(h)
            lds.append(ld)
    z = h.detach().requires_grad_()
    total = _total(lds)
    ld_leaf = None if total is None else total.detach().requires_grad_()
    value = loss(z, ld_leaf, x)
    seeds = _grads([value], [z] if ld_leaf is None else [z, ld_leaf], [torch.ones_like(value)])
    g_y, g_ld = seeds[0], (seeds[1] if len(seeds) > 1 else None)
    grads = [torch.zeros_like(p) for p in params]
    y, recon = z.detach(), []
    for block, mine in zip(reversed(blocks), reversed(owned), strict=True):
        with torch.no_grad():
            h = block.inverse(y)
        recon.append(h)
        h_leaf = h.detach().requires_grad_()
        out, ld = block.forward_and_log_det(h_leaf, grad=True)
        outputs, seeds = [out], [g_y]
        if ld is not None and g_ld is not None:
            outputs.append(ld.reshape(-1))
            seeds.append(g_ld)
        got = _grads(outputs, [h_leaf, *(params[i] for i in mine)], seeds)
        g_y = got[0]
        for i, g in zip(mine, got[1:], strict=True):
            grads[i] = grads[i] + g
        y = h.detach()
    return recon[::-1], grads


def _flat(grads: Sequence[Tensor]) -> Tensor:
    return torch.cat([g.reshape(-1).double() for g in grads]) if grads else torch.zeros(0, dtype=torch.float64)


def _relative(diff: Tensor, ref: Tensor) -> float:
    """``||diff|| / ||ref||`` (0 when both vanish, inf when only ``ref`` does)."""
    d, r = float(torch.linalg.vector_norm(diff)), float(torch.linalg.vector_norm(ref))
    if r == 0.0:
        return 0.0 if d == 0.0 else math.inf
    return d / r


def _angle(a: Tensor, b: Tensor) -> float:
    """``arccos`` of the cosine similarity clipped to ``+-(1 - 1e-9)``, in radians."""
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if float(na) == 0.0 or float(nb) == 0.0:
        return 0.0 if float(na) == float(nb) else math.pi / 2
    cos = float((a @ b) / (na * nb))
    return math.acos(min(max(cos, -1 + 1e-9), 1 - 1e-9))


def _recon_error(rebuilt: Tensor, true: Tensor) -> float:
    floor = 1e-6 * math.sqrt(true[0].numel())
    err = per_sample_norm(rebuilt - true) / per_sample_norm(true).clamp_min(floor)
    if not bool(torch.isfinite(rebuilt).all()):
        return math.inf
    return float(err.max())


def compare_gradients(blocks: Sequence[InvertibleModel], x: Tensor, loss: LossFn) -> BatchComparison:
    """True and memory-saving gradients of ``loss`` on one batch ``x``, compared.

    Both are taken over every trainable parameter of ``blocks`` (in forward order); the
    blocks run in eval mode (:class:`InvertibleModel`).
    """
    params, owned = _params(blocks)
    with torch.enable_grad():
        inputs, g_true = _true_pass(blocks, x, loss, params)
        recon, g_mem = _memory_saving_pass(blocks, x, loss, params, owned)
    true, mem = _flat(g_true), _flat(g_mem)
    true_bad, mem_bad = not bool(torch.isfinite(true).all()), not bool(torch.isfinite(mem).all())
    bad = true_bad or mem_bad
    block_error = np.array(
        [
            _relative(_flat([g_mem[i] for i in m]) - _flat([g_true[i] for i in m]), _flat([g_true[i] for i in m]))
            if m
            else math.nan
            for m in owned
        ]
    )
    return BatchComparison(
        rel_error=math.nan if bad else _relative(mem - true, true),
        error_l2=math.nan if bad else float(torch.linalg.vector_norm(mem - true)),
        angle=math.nan if bad else _angle(mem, true),
        nonfinite=mem_bad,
        true_nonfinite=true_bad,
        recon_error=np.array([_recon_error(r, h) for r, h in zip(recon, inputs, strict=True)]),
        block_error=block_error,
    )


def culprit(recon_error: np.ndarray, level: float) -> int:
    """The first block of the backward walk (last block first) whose reconstructed input is off
    by more than ``level``: where the reconstruction error enters. -1 when none is."""
    for k in range(len(recon_error) - 1, -1, -1):
        if not recon_error[k] <= level:  # NaN and inf count as off
            return k
    return -1


_STATEFUL = ("BatchNorm", "Dropout", "InstanceNorm")


def _stateful(module: nn.Module) -> list[str]:
    """Names of the layers inside ``module`` whose training-mode state changes on a re-run
    (dropout with ``p = 0`` is left out: it changes nothing)."""
    return sorted(
        {
            type(m).__name__
            for m in module.modules()
            if any(s in type(m).__name__ for s in _STATEFUL) and getattr(m, "p", 1.0) != 0
        }
    )


def preflight(model: InvertibleModel, blocks: Sequence[InvertibleModel], names: Sequence[str]) -> list[str]:
    """Findings before measuring: layers whose state changes on the re-run, iterative inverses."""
    found = []
    for block, name in zip(blocks, names, strict=True):
        layers = _stateful(block.module)
        if layers:
            found.append(
                f"block {name} holds {', '.join(layers)}: in training mode the re-run differs "
                "from the forward pass (batch statistics updated twice, a new dropout mask), "
                "so memory-saving gradients differ from these eval-mode numbers"
            )
    tol = model.info.inverse_tolerance
    iterative = [
        n
        for b, n in zip(blocks, names, strict=True)
        if b.info.inverse_kind is InverseKind.ITERATIVE or getattr(b.module, "inverse_tolerance", None) is not None
    ]
    if model.info.inverse_kind is InverseKind.ITERATIVE or iterative:
        where = f" (blocks {', '.join(iterative)})" if iterative else ""
        tol_text = f"tolerance {tol:g}" if tol is not None else "tolerance not declared"
        found.append(f"iterative inverse{where}, {tol_text}: reconstructions are only as exact as the solver")
    return found


def memcnn_wrappers(module: nn.Module) -> list[nn.Module]:
    """Every ``memcnn.InvertibleModuleWrapper`` inside ``module`` (recognised by class, no import)."""
    return [
        m
        for m in module.modules()
        if type(m).__name__ == "InvertibleModuleWrapper" and hasattr(m, "_fn") and hasattr(m, "disable")
    ]


_DISABLE = "disable"  # memcnn's switch: True runs ``_fn`` under plain autograd


@contextlib.contextmanager
def _wrappers_disabled(wrappers: Sequence[nn.Module], disable: bool) -> Iterator[None]:
    """Set ``disable`` on memcnn wrappers (plain autograd through ``_fn`` when True), then restore."""
    before = [bool(w.disable) for w in wrappers]
    try:
        for w in wrappers:
            setattr(w, _DISABLE, disable)
        yield
    finally:
        for w, was in zip(wrappers, before, strict=True):
            setattr(w, _DISABLE, was)


def library_gradient(model: InvertibleModel, params: list[nn.Parameter], x: Tensor, loss: LossFn) -> Tensor:
    """The gradient memcnn's own wrappers compute (they reconstruct inputs in ``backward``), read
    from ``.grad`` after ``loss.backward()`` as memcnn requires; ``.grad`` is restored after."""
    saved = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        with torch.enable_grad():
            z, ld = model.forward_and_log_det(x, grad=True)
            loss(z, ld, x).backward()
        return _flat([torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params])
    finally:
        for p, g in zip(params, saved, strict=True):
            p.grad = g


def _block_names(blocks: Sequence[InvertibleModel]) -> list[str]:
    return [f"{i}:{b.info.architecture or type(b.module).__name__}" for i, b in enumerate(blocks)]


def _chain_log_det(blocks: Sequence[InvertibleModel], x: Tensor) -> tuple[Tensor, Tensor | None]:
    with torch.no_grad():
        h, lds = x, []
        for block in blocks:
            h, ld = block.forward_and_log_det(h)
            lds.append(ld)
    return h, _total(lds)


def _unit(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    v = torch.randn(shape, generator=generator, dtype=torch.float64)
    return v / torch.linalg.vector_norm(v)


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
        neither("rounding_level", doc="reconstruction error counted as rounding"),
        worse("stateful_layers", doc="blocks with BatchNorm/Dropout"),
        worse("library_rel_error", doc="memcnn's own memory-saving gradient, relative error"),
        worse("library_angle", "rad", "memcnn's own memory-saving gradient, angle"),
    )

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """``loss`` is one of :data:`innaudit.config.choices.GRADIENT_LOSSES`."""
        check_choice("gradient.loss", options["loss"], GRADIENT_LOSSES)

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped without ``blocks()``, trainable block parameters, in-distribution data, or when
        the blocks pass something other than one tensor (a multi-scale latent)."""
        if not ctx.model.blocks():
            return "the model exposes no blocks() to reconstruct activations through"
        if not _params(ctx.model.blocks())[0]:
            return "the blocks have no trainable parameters"
        data = [d for d in ctx.datasets if d.role is Role.IN_DISTRIBUTION]
        if not data:
            return "no in-distribution data set (memory-saving gradients are a training matter)"
        latent = ctx.model.latent
        if latent is not None and not latent.single:
            return "a multi-scale latent: the memory-saving reconstruction through split blocks is not implemented yet"
        try:
            _chain_log_det(ctx.model.blocks(), data[0].first(1).to(ctx.device, ctx.model.dtype))
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
            with _wrappers_disabled(wrappers, True):
                blocks = ctx.model.blocks()
                names = _block_names(blocks)
                found = preflight(ctx.model, blocks, names)
                loss, loss_name, note = self._loss(ctx, blocks, ds)
                found += self._composition(ctx.model, blocks, ds.first(2).to(ctx.device, ctx.model.dtype))
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
        units = batch_units([total], step)
        count = progress_counter(ctx.progress, ds.name, total)

        def work(unit: tuple[int, int, int]) -> tuple[BatchComparison, tuple[float, float] | None]:
            _, start, stop = unit
            x = ds.make(start, stop).to(device=ctx.device, dtype=ctx.model.dtype)
            compared = compare_gradients(blocks, x, loss)
            count(len(x))
            return compared, Gradient._library(ctx, wrappers, blocks, x, loss) if wrappers else None

        parts = ctx.map(units, work)
        results = [compared for compared, _ in parts]
        library = [own for _, own in parts if own is not None]
        if not wrappers:
            return results, None, total
        return results, (np.array([rel for rel, _ in library]), np.array([angle for _, angle in library])), total

    @staticmethod
    def _loss(ctx: AuditContext, blocks: Sequence[InvertibleModel], ds: Dataset) -> tuple[LossFn, str, str]:
        """The loss the option asks for, its name, and a note on the choice."""
        choice = str(ctx.option("loss"))
        if choice not in LOSSES:
            raise ValueError(f"gradient loss {choice!r} is unknown; expected one of {', '.join(LOSSES)}")
        own = getattr(ctx.model.module, "gradient_loss", None)
        if choice == "model" or (choice == "auto" and callable(own)):
            if not callable(own):
                raise ValueError(
                    "gradient loss 'model' was asked for, but the model has no callable "
                    "gradient_loss(z, log_det, x) attribute; set one in the factory or use nll"
                )
            return own, "model", ""
        z, ld = _chain_log_det(blocks, ds.first(2).to(ctx.device, ctx.model.dtype))
        if choice == "nll" or (choice == "auto" and ld is not None):
            if ld is None:
                raise ValueError(
                    "gradient loss 'nll' needs a log-det from every block, and some block "
                    "reports none; use --gradient-loss projection"
                )
            return nll_loss, "nll", ""
        note = "" if choice == "projection" else "no per-block log-dets, so a projection loss"
        return projection_loss(_unit(tuple(z.shape[1:]), ctx.generator("projection"))), "projection", note

    @staticmethod
    def _composition(model: InvertibleModel, blocks: Sequence[InvertibleModel], x: Tensor) -> list[str]:
        """A finding when the chain of blocks does not give the model's own ``z``."""
        with torch.no_grad():
            z = model.forward(x)
        chained, _ = _chain_log_det(blocks, x)
        if chained.shape != z.shape:
            return [
                f"the blocks compose to shape {tuple(chained.shape[1:])}, the model gives "
                f"{tuple(z.shape[1:])}: gradients are those of the chain of blocks"
            ]
        both = torch.isfinite(chained.flatten(1)).all(1) & torch.isfinite(z.flatten(1)).all(1)
        same = bool((torch.isfinite(chained.flatten(1)).all(1) == torch.isfinite(z.flatten(1)).all(1)).all())
        err = _recon_error(chained[both], z[both]) if bool(both.any()) else 0.0
        if not same or not err <= 1e-4:
            return [
                f"the blocks compose to a z off the model's by {err:.3g} (relative): gradients "
                "are those of the chain of blocks"
            ]
        return []

    @staticmethod
    def _library(
        ctx: AuditContext, wrappers: Sequence[nn.Module], blocks: Sequence[InvertibleModel], x: Tensor, loss: LossFn
    ) -> tuple[float, float]:
        """memcnn's own memory-saving gradient against the true one on the batch ``x``: (rel, angle)."""
        params, _ = _params(blocks)
        with _wrappers_disabled(wrappers, True), torch.enable_grad():
            _, true_grads = _true_pass(blocks, x, loss, params)
        true = _flat(true_grads)
        with _wrappers_disabled(wrappers, False):
            mem = library_gradient(ctx.model, params, x, loss)
        finite = bool(torch.isfinite(mem).all() and torch.isfinite(true).all())
        return (_relative(mem - true, true) if finite else math.nan, _angle(mem, true) if finite else math.nan)

    @staticmethod
    def _measure(
        ctx: AuditContext,
        name: str,
        names: list[str],
        results: list[BatchComparison],
        samples: int,
        loss_name: str,
        note: str,
        found: list[str],
        library: tuple[np.ndarray, np.ndarray] | None,
    ) -> Measurement:
        level = float(ctx.option("rounding")) * torch.finfo(ctx.model.dtype).eps
        recon = np.max([r.recon_error for r in results], axis=0)
        with np.errstate(invalid="ignore"), _nan_ok():
            block_grad = np.nanmax([r.block_error for r in results], axis=0)
        where = culprit(recon, level)
        rel = np.array([r.rel_error for r in results])
        metrics: dict[str, object] = {
            "n": len(results),
            "samples": samples,
            "blocks": len(names),
            "parameters": sum(p.numel() for p in _params(ctx.model.blocks())[0]),
            "loss": loss_name,
            "rel_error_l2": summarize(rel),
            "error_l2": summarize(np.array([r.error_l2 for r in results])),
            "angle": summarize(np.array([r.angle for r in results])),
            "nonfinite_fraction": float(np.mean([r.nonfinite for r in results])),
            "true_nonfinite_fraction": float(np.mean([r.true_nonfinite for r in results])),
            "block_recon_error": {"max": _fmax(recon)},
            "block_grad_error": {"max": _fmax(block_grad)},
            "culprit": names[where] if where >= 0 else "",
            "culprit_index": where,
            "rounding_level": level,
            "stateful_layers": sum(1 for f in found if " holds " in f),
            "preflight": list(found),
        }
        if library is not None:
            metrics["library_rel_error"] = summarize(library[0])
            metrics["library_angle"] = summarize(library[1])
        series = {
            "blocks": {"name": names, "reconstruction_error": _short(recon), "gradient_error": _short(block_grad)}
        }
        return Measurement(name, metrics, _message(metrics, names, where, note, found), series)


@contextlib.contextmanager
def _nan_ok() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: a block without parameters
        yield


def _fmax(values: np.ndarray) -> float:
    """Largest value, ``inf`` counted, NaN ignored (NaN when there is nothing)."""
    kept = values[~np.isnan(values)]
    return float(kept.max()) if kept.size else math.nan


def _short(values: np.ndarray) -> list[float]:
    return [float(f"{v:.5g}") if math.isfinite(v) else float(v) for v in values]


def _message(metrics: dict[str, object], names: list[str], where: int, note: str, found: list[str]) -> str:
    rel, angle = metrics["rel_error_l2"], metrics["angle"]
    assert isinstance(rel, dict) and isinstance(angle, dict)
    parts = [
        f"{metrics['loss']} loss: relative gradient error up to {rel['max']:.3g} "
        f"(angle up to {angle['max']:.3g} rad) over {metrics['n']} batch(es)"
    ]
    if metrics["nonfinite_fraction"]:
        parts.append(f"memory-saving gradient non-finite in {metrics['nonfinite_fraction']:.0%} of batches")
    if where >= 0:
        parts.append(
            f"reconstruction error leaves rounding (> {metrics['rounding_level']:.2g}) first "
            f"at block {names[where]}, walking back from the output"
        )
    lib = metrics.get("library_rel_error")
    if isinstance(lib, dict):
        parts.append(f"memcnn's own reconstruction: relative error up to {lib['max']:.3g}")
    return "; ".join(parts + ([note] if note else []) + found)
