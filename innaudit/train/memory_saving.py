"""Memory-saving backpropagation for training a chain of invertible blocks.

Invertible networks can be trained without storing activations: the forward pass keeps only the
output, and the backward pass rebuilds each block's input from its output with the block's
inverse before back-propagating through it (Gomez et al., 2017, "The Reversible Residual
Network"; memcnn). Behrmann et al. (AISTATS 2021, section 5, https://arxiv.org/abs/2006.09347)
trained INN classifiers this way and found that once the inverse becomes unstable the rebuilt
activations, and so the gradients the optimizer follows, are wrong. :func:`memory_saving_backward`
is that training step for the zoo's :class:`~innaudit.zoo.flow.SequentialFlow` models. The walk
itself is :func:`innaudit.model.memory_saving.walk_back`, the one the ``gradient`` audit
(:mod:`innaudit.audits.gradient`) measures after training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from innaudit.model.memory_saving import Step, forward_chain, walk_back
from innaudit.zoo.flow import Invertible

__all__ = ["ChainLoss", "memory_saving_backward", "steps_of"]

ChainLoss = Callable[[Tensor, Tensor], Tensor]
"""``loss(z, log_det) -> scalar`` on the chain's output and summed log-det."""


def steps_of(blocks: Sequence[nn.Module]) -> list[Step]:
    """The zoo blocks (``block(h) -> (y, log_det)``, ``block.inverse(y)``) as steps of the walk,
    each with its trainable parameters."""
    return [
        Step(block, cast(Invertible, block).inverse, tuple(p for p in block.parameters() if p.requires_grad))
        for block in blocks
    ]


def memory_saving_backward(blocks: Sequence[nn.Module], x: Tensor, loss: ChainLoss) -> Tensor:
    """Accumulate into ``.grad`` the memory-saving gradient of ``loss(F(x))``; returns the loss.

    Forward under ``no_grad`` to ``z`` (only ``z`` and the log-det are kept); ``loss`` runs with
    autograd on ``z`` and ``log_det`` as leaves, so parameters it uses directly (a classifier
    head) get their gradients there; then the backward walk
    (:func:`~innaudit.model.memory_saving.walk_back`) gives the blocks' parameter gradients,
    added to their ``.grad`` (a parameter the walk does not reach keeps its ``.grad``).
    """
    steps = steps_of(blocks)
    z, lds = forward_chain(steps, x)
    log_det = x.new_zeros(x.shape[0])
    for ld in lds:
        log_det = log_det + cast(Tensor, ld)
    z = z.detach().requires_grad_()
    ld_leaf = log_det.detach().requires_grad_()
    value = loss(z, ld_leaf)
    value.backward()
    g_z = z.grad if z.grad is not None else torch.zeros_like(z)
    walk = walk_back(steps, z, g_z, ld_leaf.grad)
    for step, grads in reversed(list(zip(steps, walk.grads, strict=True))):  # the walk's order
        for p, g in zip(step.params, grads, strict=True):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
    return value.detach()
