"""Invertibility checks during training: :class:`InvertibilityMonitor` for a plain loop, with
callbacks for PyTorch Lightning (:mod:`innaudit.monitor.lightning`) and the Hugging Face Trainer
(:mod:`innaudit.monitor.hf`), trend rules (:mod:`innaudit.monitor.rules`) and a JSONL log
(:mod:`innaudit.monitor.log`).

The callbacks import their library only when used; without it they say which extra to install.
"""

from __future__ import annotations

from innaudit.monitor.core import DEFAULT_EVERY, InvertibilityMonitor, MonitorFailure, MonitorResult, MonitorWarning
from innaudit.monitor.log import read_log
from innaudit.monitor.rules import Finding, TrendRules

__all__ = [
    "DEFAULT_EVERY",
    "Finding",
    "InvertibilityMonitor",
    "MonitorFailure",
    "MonitorResult",
    "MonitorWarning",
    "TrendRules",
    "read_log",
]
