"""The monitor inside the built-in recipes (``innaudit train RECIPE --monitor-every N``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from torch import nn

from innaudit.core.domain import DataDomain
from innaudit.data import DEFAULT_OOD, default_data
from innaudit.monitor.core import InvertibilityMonitor, MonitorWarning

__all__ = ["RecipeMonitor"]


class RecipeMonitor:
    """A :data:`innaudit.train.hooks.StepHook` that makes a monitor on the recipe's first call.

    The in-distribution set is the domain's built-in test split (``digits:test``,
    ``checkerboard:test``) where there is one; the OOD sets are the paper's noise battery. Failures
    never stop the recipe (``on_fail="warn"``, the warnings kept in :attr:`warnings`), so the
    checkpoint is the same as without the monitor.
    """

    def __init__(self, every: int, log: str | Path | None = None, **options: Any) -> None:
        self.every, self.log, self.options = every, log, options
        self.monitor: InvertibilityMonitor | None = None
        self.warnings: list[str] = []

    def __call__(self, model: nn.Module, domain: DataDomain, steps_done: int) -> None:
        """Check after ``steps_done`` steps when due."""
        if self.monitor is None:
            self.monitor = InvertibilityMonitor(
                model,
                data=default_data(domain),
                ood=DEFAULT_OOD,
                domain=domain,
                every=self.every,
                on_fail="warn",
                log=self.log,
                **self.options,
            )
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", MonitorWarning)
            self.monitor.step(steps_done)
        self.warnings += [str(w.message) for w in seen if issubclass(w.category, MonitorWarning)]

    def provenance(self) -> dict[str, Any]:
        """The timeline for the checkpoint's provenance (no wall times: a rebuild hashes the same)."""
        return self.monitor.summary() if self.monitor is not None else {"every": self.every, "timeline": []}
