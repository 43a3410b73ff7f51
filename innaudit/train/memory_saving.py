"""Memory-saving backpropagation for training a chain of invertible blocks.

Invertible networks can be trained without storing activations: the forward pass keeps only the
output, and the backward pass rebuilds each block's input from its output with the block's
inverse before back-propagating through it (Gomez et al., 2017, "The Reversible Residual
Network"; memcnn). Behrmann et al. (AISTATS 2021, section 5, https://arxiv.org/abs/2006.09347)
trained INN classifiers this way and found that once the inverse becomes unstable the rebuilt
activations, and so the gradients the optimizer follows, are wrong. :func:`memory_saving_backward`
is that training step for the zoo's :class:`~innaudit.zoo.flow.SequentialFlow` models; the
``gradient`` audit (:mod:`innaudit.audits.gradient`) measures the same gradient after training.

The rebuilt input of block ``k`` is the inverse of the *rebuilt* output (not of the stored one,
which does not exist), so reconstruction errors accumulate from the last block to the first, as
in real memory-saving training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from innaudit.zoo.flow import Invertible

__all__ = ["ChainLoss", "memory_saving_backward"]

ChainLoss = Callable[[Tensor, Tensor], Tensor]
"""``loss(z, log_det) -> scalar`` on the chain's output and summed log-det."""


def memory_saving_backward(blocks: Sequence[nn.Module], x: Tensor, loss: ChainLoss) -> Tensor:
    """Accumulate into ``.grad`` the memory-saving gradient of ``loss(F(x))``; returns the loss.

    Forward under ``no_grad`` to ``z`` (only ``z`` and the log-det are kept); ``loss`` runs with
    autograd on ``z`` and ``log_det`` as leaves, so parameters it uses directly (a classifier
    head) get their gradients there; then for each block ``f_k`` from last to first: ``h =
    f_k^-1(y)`` under ``no_grad``, re-run ``f_k(h)`` with autograd and back-propagate ``dL/dy``
    and ``dL/dlog_det`` into the block's parameters and ``dL/dh``; ``y = h`` for the next block.
    """
    with torch.no_grad():
        h, log_det = x, x.new_zeros(x.shape[0])
        for block in blocks:
            h, ld = block(h)
            log_det = log_det + ld
    z = h.detach().requires_grad_()
    ld_leaf = log_det.detach().requires_grad_()
    value = loss(z, ld_leaf)
    value.backward()
    g_y = z.grad if z.grad is not None else torch.zeros_like(z)
    g_ld = ld_leaf.grad
    y = z.detach()
    for block in reversed(blocks):
        with torch.no_grad():
            rebuilt = cast(Invertible, block).inverse(y)
        leaf = rebuilt.detach().requires_grad_()
        out, ld = block(leaf)
        outputs, seeds = [out], [g_y]
        if g_ld is not None and ld.requires_grad:
            outputs.append(ld)
            seeds.append(g_ld)
        if any(t.requires_grad for t in outputs):
            torch.autograd.backward(outputs, seeds)
        g_y = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        y = rebuilt
    return value.detach()
