"""memcnn (``memcnn.InvertibleModuleWrapper``): its wrappers found by class name, switched off, and
their own memory-saving gradient.

memcnn rebuilds a wrapped block's input from its output inside ``backward`` (the memory-saving
walk of :mod:`innaudit.model.memory_saving`, done by the library). The ``gradient`` audit
measures the blocks with the wrappers disabled (``disable = True``: plain autograd through
``_fn``) and compares memcnn's own gradient (read from ``.grad`` after ``loss.backward()``, as
memcnn requires) with the true one. memcnn is never imported: the wrappers are recognised by
class name and attributes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from innaudit.model.contract import InvertibleModel
from innaudit.model.memory_saving import flat

__all__ = ["LIBRARY", "library_gradient", "memcnn_wrappers", "wrappers_disabled"]

LIBRARY = "memcnn"

_DISABLE = "disable"  # memcnn's switch: True runs ``_fn`` under plain autograd


def memcnn_wrappers(module: nn.Module) -> list[nn.Module]:
    """Every ``memcnn.InvertibleModuleWrapper`` inside ``module`` (recognised by class, no import)."""
    return [
        m
        for m in module.modules()
        if type(m).__name__ == "InvertibleModuleWrapper" and hasattr(m, "_fn") and hasattr(m, _DISABLE)
    ]


@contextlib.contextmanager
def wrappers_disabled(wrappers: Sequence[nn.Module], disable: bool) -> Iterator[None]:
    """Set ``disable`` on memcnn wrappers (plain autograd through ``_fn`` when True), then restore."""
    before = [bool(w.disable) for w in wrappers]
    try:
        for w in wrappers:
            setattr(w, _DISABLE, disable)
        yield
    finally:
        for w, was in zip(wrappers, before, strict=True):
            setattr(w, _DISABLE, was)


def library_gradient(
    model: InvertibleModel,
    params: list[nn.Parameter],
    x: Tensor,
    loss: Callable[[Tensor, Tensor | None, Tensor], Tensor],
) -> Tensor:
    """The gradient memcnn's own wrappers compute (they reconstruct inputs in ``backward``), read
    from ``.grad`` after ``loss(z, log_det, x).backward()`` as memcnn requires, as one float64
    vector over ``params``; ``.grad`` is restored after."""
    saved = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        with torch.enable_grad():
            z, ld = model.forward_and_log_det(x, grad=True)
            loss(z, ld, x).backward()
        return flat([torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params])
    finally:
        for p, g in zip(params, saved, strict=True):
            p.grad = g
