"""What the Lightning and Hugging Face callbacks share: a monitor made when the model is known."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from innaudit.monitor.core import InvertibilityMonitor, MonitorResult

__all__ = ["LazyMonitor", "missing_extra"]


def missing_extra(library: str, package: str) -> ImportError:
    """The error for a callback whose library is not installed, naming the extra to install."""
    return ImportError(
        f"{library} is not installed, so its innaudit callback cannot be used; install it "
        f"with `pip install 'innaudit[monitor]'` (or `pip install {package}`)"
    )


class LazyMonitor:
    """Holds a ready :class:`InvertibilityMonitor`, or makes one from the trained model on first use.

    Args:
        monitor: a monitor already made (then ``flow`` and ``options`` must be empty).
        flow: ``flow(model) -> nn.Module``, the invertible part of what the trainer trains
            (default: the trained model itself).
        options: keyword arguments of :class:`InvertibilityMonitor` (``data``, ``ood``, ``every``...).
    """

    def __init__(
        self, monitor: InvertibilityMonitor | None, flow: Callable[[Any], nn.Module] | None, options: dict[str, Any]
    ) -> None:
        if monitor is not None and (flow is not None or options):
            raise TypeError("pass either a ready InvertibilityMonitor or the monitor's options, not both")
        self.monitor = monitor
        self.flow = flow
        self.options = options
        self.last_step: int | None = None

    def get(self, model: Any) -> InvertibilityMonitor:
        """The monitor, made from ``model`` the first time."""
        if self.monitor is None:
            self.monitor = InvertibilityMonitor(self.flow(model) if self.flow else model, **self.options)
        return self.monitor

    def step(self, model: Any, step: int) -> MonitorResult | None:
        """One ``monitor.step(step)``, once per optimizer step (gradient accumulation repeats steps)."""
        if step == self.last_step:
            return None
        self.last_step = step
        return self.get(model).step(step)
