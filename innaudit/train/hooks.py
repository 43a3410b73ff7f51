"""A hook the training loops call after every optimizer step (``innaudit train --monitor-every``).

The recipes' loops call :func:`after_step` with the model, its data domain and the number of
steps done (0 once before the first step). Outside :func:`step_hook` it does nothing, so a recipe
trains the same with and without a hook; the monitor puts back every state it touches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from torch import nn

from innaudit.core.domain import DataDomain

__all__ = ["StepHook", "after_step", "step_hook"]

StepHook = Callable[[nn.Module, DataDomain, int], None]
"""``hook(model, domain, steps_done)``."""

_HOOK: ContextVar[StepHook | None] = ContextVar("innaudit_train_step_hook", default=None)


@contextlib.contextmanager
def step_hook(hook: StepHook) -> Iterator[None]:
    """Call ``hook`` after every step of the recipes trained inside this block."""
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)


def after_step(model: nn.Module, domain: DataDomain, steps_done: int) -> None:
    """Called by the training loops; runs the active hook, if any."""
    hook = _HOOK.get()
    if hook is not None:
        hook(model, domain, steps_done)
