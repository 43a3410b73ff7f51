"""innaudit: audit trained invertible neural networks for numerical invertibility.

The public API is imported lazily, so ``innaudit --help`` does not import torch::

    report = innaudit.audit(model, data=x_test, ood={"noise": torch.rand(500, 3, 32, 32)})
    innaudit.assert_invertible(model, data=x_test)   # in a pytest suite
    result = innaudit.repair("flow.pt", data="digits:train", output="fixed.pt")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from innaudit._version import __version__
from innaudit.core.lazy import lazy_getattr

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
    "repair",
    "save_checkpoint",
]

_LAZY = {
    "ConfigError": "innaudit.core.errors",
    "DataError": "innaudit.core.errors",
    "ExitCode": "innaudit.core.results",
    "InnauditError": "innaudit.core.errors",
    "InvertibleModel": "innaudit.model.contract",
    "LoadError": "innaudit.core.errors",
    "Report": "innaudit.report",
    "Status": "innaudit.core.results",
    "UsageError": "innaudit.core.errors",
    "assert_invertible": "innaudit.api",
    "audit": "innaudit.api",
    "load_model": "innaudit.loading",
    "repair": "innaudit.remedies.session",
    "save_checkpoint": "innaudit.loading.native",
}

if TYPE_CHECKING:
    from innaudit.api import assert_invertible, audit
    from innaudit.core.errors import ConfigError, DataError, InnauditError, LoadError, UsageError
    from innaudit.core.results import ExitCode, Status
    from innaudit.loading import load_model
    from innaudit.loading.native import save_checkpoint
    from innaudit.model.contract import InvertibleModel
    from innaudit.remedies.session import repair
    from innaudit.report import Report


__getattr__ = lazy_getattr(globals(), _LAZY, __name__)
