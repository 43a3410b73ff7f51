"""Leaving a training run as it was: modes, random number generators and gradients.

A monitor check runs between two optimizer steps. Whatever it does must not change what the next
step computes, so :func:`preserved` saves and restores everything a check could touch: each
sub-module's train/eval flag, the torch (CPU and every initialized CUDA device), numpy and Python
random states, and each parameter's ``.grad``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

__all__ = ["preserved"]


@contextlib.contextmanager
def preserved(module: nn.Module) -> Iterator[None]:
    """Run the body under ``torch.no_grad()`` and put back modes, RNG states and gradients."""
    modes = [(m, m.training) for m in module.modules()]
    params = list(module.parameters())
    grads = [p.grad for p in params]
    cpu_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
