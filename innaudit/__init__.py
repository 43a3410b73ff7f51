"""innaudit: audit trained invertible neural networks for numerical invertibility.

The public API is imported lazily, so ``innaudit --help`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "InvertibleModel",
    "Report",
    "Status",
    "__version__",
    "audit",
    "load_model",
    "save_checkpoint",
]

_LAZY = {
    "InvertibleModel": ("innaudit.model", "InvertibleModel"),
    "Report": ("innaudit.results", "Report"),
    "Status": ("innaudit.results", "Status"),
    "audit": ("innaudit.api", "audit"),
    "load_model": ("innaudit.loading", "load_model"),
    "save_checkpoint": ("innaudit.loading.native", "save_checkpoint"),
}

if TYPE_CHECKING:
    from .api import audit
    from .loading import load_model
    from .loading.native import save_checkpoint
    from .model import InvertibleModel
    from .results import Report, Status


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'innaudit' has no attribute {name!r}")
