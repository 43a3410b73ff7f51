"""Does a map's output depend on its input *through autograd*? Checked before any Jacobian.

A map that runs under ``torch.no_grad()`` (a sampler's inverse often does), detaches, or goes
through numpy returns an output without a graph back to the input; ``torch.func`` and
``torch.autograd`` then give a Jacobian of zeros, and a spectrum of zeros reads as a perfect
pass. :func:`autograd_blind_reason` runs the map once with ``requires_grad`` on the input and
one vector-Jacobian product ``J^T v`` with a fixed random ``v``: no ``grad_fn`` on the output,
or ``J^T v`` identically zero (probability 0 for a nonzero ``J``), means autograd cannot see the
map's dependence on its input, and nothing measured through it may be reported.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["NotMeasuredError", "autograd_blind_reason"]


class NotMeasuredError(RuntimeError):
    """An audit cannot measure what it is about; the message says why. Reported as ``error``."""


def autograd_blind_reason(fn: Callable[[Tensor], Tensor], x: Tensor) -> str | None:
    """Why autograd cannot differentiate ``fn`` at ``x`` (a batch), or None when it can.

    A map autograd fails on outright (``RuntimeError``) returns None here: the Jacobian code
    reports that failure itself.
    """
    xg = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            out = fn(xg)
            if not isinstance(out, Tensor) or out.grad_fn is None or not out.requires_grad:
                return (
                    "its output carries no autograd graph back to its input (it runs under "
                    "torch.no_grad(), detaches, or leaves torch)"
                )
            v = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype).to(out.device)
            (g,) = torch.autograd.grad(out, xg, v, allow_unused=True)
    except RuntimeError:
        return None
    if g is None or not bool((g != 0).any()):
        return (
            "its vector-Jacobian product with the input is identically zero (the output does "
            "not depend on the input through autograd)"
        )
    return None
