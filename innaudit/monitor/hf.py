"""``InvertibilityTrainerCallback``: the monitor in a Hugging Face ``transformers.Trainer``.

After each optimizer step (``on_step_end`` at ``state.global_step``) the callback runs
:meth:`InvertibilityMonitor.step`; the check's figures are appended to ``state.log_history`` (so
they land in ``trainer_state.json``), and a failed check with ``on_fail="stop"`` sets
``control.should_training_stop``. Needs ``transformers``: ``pip install 'innaudit[monitor]'``.

Example::

    callback = InvertibilityTrainerCallback(data=x_val[:64], every=200, on_fail="stop", flow=lambda m: m.flow)
    Trainer(model=wrapper, args=args, train_dataset=ds, callbacks=[callback]).train()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from innaudit.monitor.callbacks import LazyMonitor, missing_extra
from innaudit.monitor.core import InvertibilityMonitor, MonitorResult

try:
    from transformers import TrainerCallback
except ImportError:
    raise missing_extra("Hugging Face transformers", "transformers") from None

__all__ = ["InvertibilityTrainerCallback"]


class InvertibilityTrainerCallback(TrainerCallback):
    """Periodic invertibility checks of the model a ``transformers.Trainer`` trains.

    Args:
        monitor: a ready :class:`InvertibilityMonitor`; or leave it out and pass its options.
        flow: ``flow(model) -> nn.Module`` with ``forward`` and ``inverse`` (default: the model).
        **options: :class:`InvertibilityMonitor` keyword arguments; the monitor is made at the
            first step, from the ``model`` the Trainer passes to its callbacks.
    """

    def __init__(
        self,
        monitor: InvertibilityMonitor | None = None,
        *,
        flow: Callable[[Any], nn.Module] | None = None,
        **options: Any,
    ) -> None:
        self.lazy = LazyMonitor(monitor, flow, options)
        self.results: list[MonitorResult] = []

    @property
    def monitor(self) -> InvertibilityMonitor | None:
        """The monitor (None until the first step when it was given by its options)."""
        return self.lazy.monitor

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        """Check at ``state.global_step``; log into ``state.log_history``; stop on a failure."""
        result = self.lazy.step(model, int(state.global_step))
        if result is None:
            return control
        self.results.append(result)
        state.log_history.append({**result.scalars(), "step": result.step})
        if result.stop:
            control.should_training_stop = True
        return control
