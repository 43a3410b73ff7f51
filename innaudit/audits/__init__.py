"""The audits, one per module, registered under stable ids in :data:`REGISTRY` (run order)."""

from __future__ import annotations

from . import roundtrip, sampling  # noqa: F401  (registration order is run order)
from . import attack  # noqa: F401  (issue 4)
from . import spectrum, bounds, layers, logdet, grid  # noqa: F401  (after attack; issue 5)
from .base import REGISTRY, Audit, AuditContext, Measurement, register, specs

__all__ = ["REGISTRY", "Audit", "AuditContext", "Measurement", "register", "specs"]
