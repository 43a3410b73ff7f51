"""``InvertibilityCallback``: the monitor in a PyTorch Lightning ``Trainer``.

After each optimizer step (``on_train_batch_end`` at ``trainer.global_step``) the callback runs
:meth:`InvertibilityMonitor.step`; the check's figures go to the trainer's logger
(``innaudit/SET/FIGURE``), and a failed check with ``on_fail="stop"`` sets ``trainer.should_stop``.
Needs ``lightning`` (or ``pytorch-lightning``): ``pip install 'innaudit[monitor]'``.

Example::

    callback = InvertibilityCallback(data=x_val[:64], every=200, on_fail="stop", flow=lambda m: m.flow)
    Trainer(callbacks=[callback]).fit(module, loader)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from innaudit.monitor.callbacks import LazyMonitor, missing_extra
from innaudit.monitor.core import InvertibilityMonitor, MonitorResult

try:
    from lightning.pytorch import Callback
except ImportError:  # the older package name
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise missing_extra("PyTorch Lightning", "lightning") from None

__all__ = ["InvertibilityCallback"]


class InvertibilityCallback(Callback):
    """Periodic invertibility checks of the model a Lightning ``Trainer`` fits.

    Args:
        monitor: a ready :class:`InvertibilityMonitor`; or leave it out and pass its options.
        flow: ``flow(lightning_module) -> nn.Module`` with ``forward`` and ``inverse`` (default:
            the LightningModule itself).
        **options: :class:`InvertibilityMonitor` keyword arguments (``data``, ``ood``, ``every``,
            ``on_fail``, ``log``...); the monitor is made when training starts.
    """

    def __init__(
        self,
        monitor: InvertibilityMonitor | None = None,
        *,
        flow: Callable[[Any], nn.Module] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.lazy = LazyMonitor(monitor, flow, options)
        self.results: list[MonitorResult] = []

    @property
    def monitor(self) -> InvertibilityMonitor | None:
        """The monitor (None until training starts when it was given by its options)."""
        return self.lazy.monitor

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Check at ``trainer.global_step``, log the figures, stop the trainer on a failure."""
        result = self.lazy.step(pl_module, int(trainer.global_step))
        if result is None:
            return
        self.results.append(result)
        if trainer.logger is not None:
            trainer.logger.log_metrics(result.scalars(), step=result.step)
        if result.stop:
            trainer.should_stop = True
