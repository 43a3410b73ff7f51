"""True against memory-saving gradients of a chain of blocks, batch by batch: what the
``gradient`` audit measures (:mod:`innaudit.audits.gradient`).

The true gradient ``g`` is ordinary autograd through the stored activations; the memory-saving
gradient ``g'`` comes from the backward walk of :mod:`innaudit.model.memory_saving`, the one
training with memory saving uses. Compared over every trainable block parameter: ``||g' - g||
/ ||g||``, the angle between them, each block's rebuilt input and parameter gradients
(Behrmann et al., AISTATS 2021, section 5, https://arxiv.org/abs/2006.09347).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from innaudit.audits.preflight import PreflightFinding, PreflightKind
from innaudit.config.choices import GRADIENT_LOSSES
from innaudit.core.stats import relative_error, where_error_enters
from innaudit.loading.adapters.memcnn import library_gradient, wrappers_disabled
from innaudit.model.contract import InvertibleModel
from innaudit.model.memory_saving import Step, flat, forward_chain, gradients, walk_back

__all__ = [
    "BatchComparison",
    "LossFn",
    "angle",
    "block_params",
    "chain_log_det",
    "choose_loss",
    "compare_gradients",
    "composition",
    "culprit",
    "library_comparison",
    "memory_saving_gradient",
    "nll_loss",
    "projection_loss",
    "recon_error",
    "relative",
    "true_gradient",
    "unit_direction",
]

LossFn = Callable[[Tensor, Tensor | None, Tensor], Tensor]
"""``loss(z, log_det, x) -> scalar``; ``log_det`` is None when the blocks report none."""


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


def block_params(blocks: Sequence[InvertibleModel]) -> tuple[list[nn.Parameter], list[list[int]]]:
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


def _total(parts: list[Tensor | None]) -> Tensor | None:
    if any(p is None for p in parts):
        return None
    return torch.stack([p.reshape(-1) for p in parts if p is not None]).sum(0)


def true_gradient(
    blocks: Sequence[InvertibleModel], x: Tensor, loss: LossFn, params: list[nn.Parameter]
) -> tuple[list[Tensor], list[Tensor]]:
    """Ordinary autograd through the stored activations: ``(inputs of each block, grads)``."""
    inputs, grads, _, _ = _true_pass(blocks, x, loss, params)
    return inputs, grads


def _true_pass(
    blocks: Sequence[InvertibleModel], x: Tensor, loss: LossFn, params: list[nn.Parameter]
) -> tuple[list[Tensor], list[Tensor], Tensor, list[Tensor | None]]:
    """:func:`true_gradient`, with the chain's output ``z`` and each block's log-det (detached):
    the values the memory-saving pass without autograd computes too."""
    h, inputs, lds = x, [], []
    for block in blocks:
        inputs.append(h.detach())
        h, ld = block.forward_and_log_det(h, grad=True)
        lds.append(ld)
    value = loss(h, _total(lds), x)
    grads = _grads([value], list(params), [torch.ones_like(value)])
    return inputs, grads, h.detach(), [None if ld is None else ld.detach() for ld in lds]


def memory_saving_gradient(
    blocks: Sequence[InvertibleModel],
    x: Tensor,
    loss: LossFn,
    params: list[nn.Parameter],
    owned: list[list[int]],
    chain: tuple[Tensor, list[Tensor | None]] | None = None,
) -> tuple[list[Tensor], list[Tensor]]:
    """The memory-saving gradient: forward without storing, then the backward walk
    (:func:`innaudit.model.memory_saving.walk_back`). Returns the reconstructed inputs (first
    block first) and the gradients. ``chain``: the forward pass's ``(z, per-block log-dets)``
    when already computed on ``x`` (the true gradient's pass gives the same values)."""
    steps = [_step(block, [params[i] for i in mine]) for block, mine in zip(blocks, owned, strict=True)]
    h, lds = chain if chain is not None else forward_chain(steps, x)
    z = h.detach().requires_grad_()
    total = _total(lds)
    ld_leaf = None if total is None else total.detach().requires_grad_()
    value = loss(z, ld_leaf, x)
    seeds = _grads([value], [z] if ld_leaf is None else [z, ld_leaf], [torch.ones_like(value)])
    walk = walk_back(steps, z, seeds[0], seeds[1] if len(seeds) > 1 else None)
    grads: list[Tensor | None] = [None] * len(params)
    for mine, got in zip(reversed(owned), reversed(walk.grads), strict=True):
        for i, g in zip(mine, got, strict=True):
            if g is not None:
                seen = grads[i]
                grads[i] = g if seen is None else seen + g
    return walk.rebuilt, [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


def _step(block: InvertibleModel, params: list[nn.Parameter]) -> Step:
    """``block`` as a step of the walk: its forward with autograd as the caller's mode."""
    return Step(lambda h: block.forward_and_log_det(h, grad=torch.is_grad_enabled()), block.inverse, tuple(params))


def _grads(outputs: list[Tensor], inputs: list[Tensor], grad_outputs: list[Tensor]) -> list[Tensor]:
    """``autograd.grad`` with zeros for inputs the outputs do not reach."""
    got = gradients(outputs, inputs, grad_outputs)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(got, inputs, strict=True)]


def relative(diff: Tensor, ref: Tensor) -> float:
    """``||diff|| / ||ref||`` (0 when both vanish, inf when only ``ref`` does)."""
    d, r = float(torch.linalg.vector_norm(diff)), float(torch.linalg.vector_norm(ref))
    if r == 0.0:
        return 0.0 if d == 0.0 else math.inf
    return d / r


def angle(a: Tensor, b: Tensor) -> float:
    """``arccos`` of the cosine similarity clipped to ``+-(1 - 1e-9)``, in radians."""
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if float(na) == 0.0 or float(nb) == 0.0:
        return 0.0 if float(na) == float(nb) else math.pi / 2
    cos = float((a @ b) / (na * nb))
    return math.acos(min(max(cos, -1 + 1e-9), 1 - 1e-9))


def recon_error(rebuilt: Tensor, true: Tensor) -> float:
    """Largest per-sample relative error of ``rebuilt`` against ``true`` (inf when non-finite)."""
    floor = 1e-6 * math.sqrt(true[0].numel())
    err = relative_error(rebuilt, true, floor)
    if not bool(torch.isfinite(rebuilt).all()):
        return math.inf
    return float(err.max())


def compare_gradients(blocks: Sequence[InvertibleModel], x: Tensor, loss: LossFn) -> BatchComparison:
    """True and memory-saving gradients of ``loss`` on one batch ``x``, compared.

    Both are taken over every trainable parameter of ``blocks`` (in forward order); the
    blocks run in eval mode (:class:`InvertibleModel`). The memory-saving walk starts from the
    true pass's ``z`` and log-dets (what its own pass without autograd gives), and the norms,
    the angle and the per-block errors are sums over the parameters in float64 (no
    concatenated copy of the gradients).
    """
    params, owned = block_params(blocks)
    with torch.enable_grad():
        inputs, g_true, z, lds = _true_pass(blocks, x, loss, params)
        recon, g_mem = memory_saving_gradient(blocks, x, loss, params, owned, (z, lds))
    sums = _sums(g_mem, g_true)
    whole = _total_sums(sums)
    true_bad = not _all_finite(whole[1], g_true)
    mem_bad = not _all_finite(whole[2], g_mem)
    bad = true_bad or mem_bad
    block_error = np.array([_relative_of(_total_sums([sums[i] for i in m])) if m else math.nan for m in owned])
    return BatchComparison(
        rel_error=math.nan if bad else _relative_of(whole),
        error_l2=math.nan if bad else math.sqrt(whole[0]),
        angle=math.nan if bad else _angle_of(whole),
        nonfinite=mem_bad,
        true_nonfinite=true_bad,
        recon_error=np.array([recon_error(r, h) for r, h in zip(recon, inputs, strict=True)]),
        block_error=block_error,
    )


_Sums = tuple[float, float, float]
"""``(||a - b||^2, ||b||^2, ||a||^2)`` of a memory-saving gradient ``a`` and a true one ``b``
(their inner product is ``(||a||^2 + ||b||^2 - ||a - b||^2) / 2``)."""

CHUNK = 1 << 18
"""Elements of a gradient taken to float64 at a time: a chunk's float64 copies stay in the
processor's cache, where a whole parameter's would go through memory (several times slower on a
model of millions of parameters)."""


def _sums(mem: Sequence[Tensor], true: Sequence[Tensor]) -> list[_Sums]:
    """:data:`_Sums` of each parameter's two gradients, in float64 chunk by chunk, copied to the
    host at once."""
    if not mem:
        return []
    rows = []
    for a, b in zip(mem, true, strict=True):
        fa, fb = a.reshape(-1), b.reshape(-1)
        row = torch.zeros(3, dtype=torch.float64, device=a.device)
        for i in range(0, len(fa), CHUNK):
            a64, b64 = fa[i : i + CHUNK].double(), fb[i : i + CHUNK].double()
            d = a64 - b64
            row += torch.stack([d @ d, b64 @ b64, a64 @ a64])
        rows.append(row)
    return [(r[0], r[1], r[2]) for r in torch.stack(rows).tolist()]


def _total_sums(parts: Sequence[_Sums]) -> _Sums:
    return (math.fsum(p[0] for p in parts), math.fsum(p[1] for p in parts), math.fsum(p[2] for p in parts))


def _all_finite(square_sum: float, grads: Sequence[Tensor]) -> bool:
    """Whether every gradient element is finite: a finite sum of squares says so at once (a NaN
    or Inf element makes it non-finite); otherwise the elements are checked (an overflowing sum
    of finite float64 values)."""
    return math.isfinite(square_sum) or all(bool(torch.isfinite(g).all()) for g in grads)


def _relative_of(sums: _Sums) -> float:
    """``||a - b|| / ||b||`` (0 when both vanish, inf when only ``b`` does), as :func:`relative`."""
    d, r = math.sqrt(sums[0]), math.sqrt(sums[1])
    if r == 0.0:
        return 0.0 if d == 0.0 else math.inf
    return d / r


def _angle_of(sums: _Sums) -> float:
    """The angle between ``a`` and ``b`` from their sums, as :func:`angle`: ``cos = (||a||^2 +
    ||b||^2 - ||a - b||^2) / (2 ||a|| ||b||)``, clipped to ``+-(1 - 1e-9)``."""
    nb, na = math.sqrt(sums[1]), math.sqrt(sums[2])
    if na == 0.0 or nb == 0.0:
        return 0.0 if na == nb else math.pi / 2
    cos = (sums[2] + sums[1] - sums[0]) / (2 * na * nb)
    return math.acos(min(max(cos, -1 + 1e-9), 1 - 1e-9))


def culprit(recon_error: np.ndarray, level: float) -> int:
    """The first block of the backward walk (last block first) whose reconstructed input is off
    by more than ``level``: where the reconstruction error enters. -1 when none is."""
    return where_error_enters(list(recon_error), level)


def chain_log_det(blocks: Sequence[InvertibleModel], x: Tensor) -> tuple[Tensor, Tensor | None]:
    """``z`` of the chain of blocks under ``no_grad`` and its summed log-det (None when a block
    reports none)."""
    h, lds = forward_chain([_step(block, []) for block in blocks], x)
    return h, _total(lds)


def unit_direction(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    v = torch.randn(shape, generator=generator, dtype=torch.float64)
    return v / torch.linalg.vector_norm(v)


def choose_loss(
    choice: str,
    own: object,
    blocks: Sequence[InvertibleModel],
    x: Tensor,
    generator: Callable[[], torch.Generator],
) -> tuple[LossFn, str, str]:
    """The loss ``choice`` (``auto``, ``nll``, ``projection``, ``model``) asks for, its name, and a
    note on the choice: ``own`` is the model's ``gradient_loss`` attribute (None without one),
    ``x`` a small batch that tells whether every block reports a log-det, ``generator`` the
    seeded source of the projection's direction (drawn only for a projection)."""
    if choice not in GRADIENT_LOSSES:
        raise ValueError(f"gradient loss {choice!r} is unknown; expected one of {', '.join(GRADIENT_LOSSES)}")
    if choice == "model" or (choice == "auto" and callable(own)):
        if not callable(own):
            raise ValueError(
                "gradient loss 'model' was asked for, but the model has no callable "
                "gradient_loss(z, log_det, x) attribute; set one in the factory or use nll"
            )
        return cast(LossFn, own), "model", ""
    z, ld = chain_log_det(blocks, x)
    if choice == "nll" or (choice == "auto" and ld is not None):
        if ld is None:
            raise ValueError(
                "gradient loss 'nll' needs a log-det from every block, and some block "
                "reports none; use --gradient-loss projection"
            )
        return nll_loss, "nll", ""
    note = "" if choice == "projection" else "no per-block log-dets, so a projection loss"
    return projection_loss(unit_direction(tuple(z.shape[1:]), generator())), "projection", note


def composition(model: InvertibleModel, blocks: Sequence[InvertibleModel], x: Tensor) -> list[PreflightFinding]:
    """A finding when the chain of blocks does not give the model's own ``z``."""
    with torch.no_grad():
        z = model.forward(x)
    chained, _ = chain_log_det(blocks, x)
    if chained.shape != z.shape:
        text = (
            f"the blocks compose to shape {tuple(chained.shape[1:])}, the model gives "
            f"{tuple(z.shape[1:])}: gradients are those of the chain of blocks"
        )
        return [PreflightFinding(PreflightKind.COMPOSITION, text)]
    both = torch.isfinite(chained.flatten(1)).all(1) & torch.isfinite(z.flatten(1)).all(1)
    same = bool((torch.isfinite(chained.flatten(1)).all(1) == torch.isfinite(z.flatten(1)).all(1)).all())
    err = recon_error(chained[both], z[both]) if bool(both.any()) else 0.0
    if not same or not err <= 1e-4:
        text = (
            f"the blocks compose to a z off the model's by {err:.3g} (relative): gradients "
            "are those of the chain of blocks"
        )
        return [PreflightFinding(PreflightKind.COMPOSITION, text)]
    return []


def library_comparison(
    model: InvertibleModel, wrappers: Sequence[nn.Module], blocks: Sequence[InvertibleModel], x: Tensor, loss: LossFn
) -> tuple[float, float]:
    """memcnn's own memory-saving gradient against the true one on the batch ``x``: (rel, angle)."""
    params, _ = block_params(blocks)
    with wrappers_disabled(wrappers, True), torch.enable_grad():
        _, true_grads = true_gradient(blocks, x, loss, params)
    true = flat(true_grads)
    with wrappers_disabled(wrappers, False):
        mem = library_gradient(model, params, x, loss)
    finite = bool(torch.isfinite(mem).all() and torch.isfinite(true).all())
    return (relative(mem - true, true) if finite else math.nan, angle(mem, true) if finite else math.nan)
