"""The memory-saving backward walk through a chain of invertible blocks: one algorithm, two users.

Invertible networks can be trained without storing activations: the forward pass keeps only the
output, and the backward pass rebuilds each block's input from its output with the block's
inverse before back-propagating through it (Gomez et al., 2017, "The Reversible Residual
Network", https://arxiv.org/abs/1707.04585; memcnn). Behrmann et al. (AISTATS 2021, section 5,
https://arxiv.org/abs/2006.09347) showed that once the inverse is unstable the rebuilt
activations, and so the gradients, are wrong while the loss looks fine.

:func:`forward_chain` is the forward pass that stores nothing; :func:`walk_back` the backward
walk: at block ``f_k``, last to first, ``h = f_k^-1(y)`` under ``no_grad``, re-run ``f_k(h)``
with autograd, back-propagate ``dL/dy`` (and ``dL/dlog_det``) to ``dL/dh`` and the block's
parameter gradients, then ``y = h``. The rebuilt input of a block is the inverse of the
*rebuilt* output, so reconstruction errors accumulate from the last block to the first, as in
real memory-saving training. The training step (:mod:`innaudit.train.memory_saving`) and the
``gradient`` audit (:mod:`innaudit.audits.gradient`) both take their gradients from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Step", "Walk", "flat", "forward_chain", "gradients", "walk_back"]


@dataclass(frozen=True)
class Step:
    """One block of the chain as the walk sees it.

    Attributes:
        forward: ``h -> (f(h), log|det J_f(h)| or None)``, with autograd as the caller's mode.
        inverse: ``y -> f^-1(y)`` (called under ``no_grad``).
        params: the block's parameters whose gradients the walk returns.
    """

    forward: Callable[[Tensor], tuple[Tensor, Tensor | None]]
    inverse: Callable[[Tensor], Tensor]
    params: tuple[Tensor, ...] = ()


@dataclass(frozen=True)
class Walk:
    """What the backward walk gives, first block first.

    Attributes:
        rebuilt: each block's input as rebuilt by the inverses.
        grads: per block, the gradient of each of its ``params`` (None where the block's outputs
            do not reach the parameter).
        input_grad: ``dL/dx`` at the chain's input, through the rebuilt activations.
    """

    rebuilt: list[Tensor]
    grads: list[list[Tensor | None]]
    input_grad: Tensor


def flat(grads: Sequence[Tensor]) -> Tensor:
    """The gradients as one float64 vector, in order (empty for none)."""
    return torch.cat([g.reshape(-1).double() for g in grads]) if grads else torch.zeros(0, dtype=torch.float64)


def gradients(outputs: Sequence[Tensor], inputs: Sequence[Tensor], seeds: Sequence[Tensor]) -> list[Tensor | None]:
    """``autograd.grad`` of ``outputs`` (seeded by ``seeds``) for ``inputs``; None for an input the
    outputs do not reach, and for every input when no output needs a gradient."""
    keep = [i for i, t in enumerate(outputs) if t.requires_grad]
    if not keep:
        return [None] * len(inputs)
    got = torch.autograd.grad([outputs[i] for i in keep], list(inputs), [seeds[i] for i in keep], allow_unused=True)
    return list(got)


def forward_chain(steps: Sequence[Step], x: Tensor) -> tuple[Tensor, list[Tensor | None]]:
    """``z = f_n(...f_1(x))`` under ``no_grad`` (no activation kept) and each block's log-det."""
    with torch.no_grad():
        h, lds = x, []
        for step in steps:
            h, ld = step.forward(h)
            lds.append(ld)
    return h, lds


def walk_back(steps: Sequence[Step], z: Tensor, g_z: Tensor, g_log_det: Tensor | None) -> Walk:
    """The memory-saving backward walk from the output ``z`` with ``dL/dz`` and ``dL/dlog_det``.

    ``g_log_det`` (per sample, the gradient of the loss for the summed log-det) is None when the
    loss does not use the log-det; a block's log-det is back-propagated only when both it and
    the seed exist.
    """
    g_y, y = g_z, z.detach()
    rebuilt: list[Tensor] = []
    grads: list[list[Tensor | None]] = []
    for step in reversed(steps):
        with torch.no_grad():
            h = step.inverse(y)
        rebuilt.append(h)
        leaf = h.detach().requires_grad_()
        with torch.enable_grad():
            out, ld = step.forward(leaf)
        outputs, seeds = [out], [g_y]
        if ld is not None and g_log_det is not None:
            outputs.append(ld.reshape(-1))
            seeds.append(g_log_det)
        got = gradients(outputs, [leaf, *step.params], seeds)
        g_y = torch.zeros_like(leaf) if got[0] is None else got[0]
        grads.append(got[1:])
        y = h.detach()
    return Walk(rebuilt[::-1], grads[::-1], g_y)
