"""innaudit: audit trained invertible neural networks for numerical invertibility.

The public API is imported lazily, so ``innaudit --help`` does not import torch::

    report = innaudit.audit(model, data=x_test, ood={"noise": torch.rand(500, 3, 32, 32)})
    innaudit.assert_invertible(model, data=x_test)   # in a pytest suite
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = [
    "ConfigError",
    "DataError",
    "ExitCode",
    "InnauditError",
    "InvertibleModel",
    "LoadError",
    "Report",
    "Status",
    "UsageError",
    "__version__",
    "assert_invertible",
    "audit",
    "load_model",
    "save_checkpoint",
]

_LAZY = {
    "ConfigError": "innaudit.errors",
    "DataError": "innaudit.errors",
    "ExitCode": "innaudit.results",
    "InnauditError": "innaudit.errors",
    "InvertibleModel": "innaudit.model",
    "LoadError": "innaudit.errors",
    "Report": "innaudit.report",
    "Status": "innaudit.results",
    "UsageError": "innaudit.errors",
    "assert_invertible": "innaudit.api",
    "audit": "innaudit.api",
    "load_model": "innaudit.loading",
    "save_checkpoint": "innaudit.loading.native",
}

if TYPE_CHECKING:
    from .api import assert_invertible, audit
    from .errors import ConfigError, DataError, InnauditError, LoadError, UsageError
    from .loading import load_model
    from .loading.native import save_checkpoint
    from .model import InvertibleModel
    from .report import Report
    from .results import ExitCode, Status


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'innaudit' has no attribute {name!r}")
