"""The audits, one per module, registered under stable ids in :data:`REGISTRY`.

Importing a module registers its audit; :data:`RUN_ORDER` then fixes the order audits run and are
reported in (cheap round trips first, the expensive searches and Jacobians after). A new audit
adds its module to the import below and its id to ``RUN_ORDER``.
"""

from __future__ import annotations

from innaudit.audits import (  # noqa: F401  (registers)
    attack,
    bounds,
    convergence,
    gradient,
    grid,
    layers,
    logdet,
    precision,
    roundtrip,
    sampling,
    spectrum,
    tokens,
)
from innaudit.audits.base import REGISTRY, Audit, AuditContext, Measurement, metric_table, register, specs
from innaudit.config.settings import Config

__all__ = [
    "REGISTRY",
    "RUN_ORDER",
    "Audit",
    "AuditContext",
    "Measurement",
    "metric_table",
    "register",
    "selected_audits",
    "specs",
]

RUN_ORDER = (
    "roundtrip",
    "convergence",
    "sampling",
    "precision",
    "attack",
    "spectrum",
    "bounds",
    "layers",
    "tokens",
    "logdet",
    "grid",
    "gradient",
)
"""Every registered id, in run order."""

if set(RUN_ORDER) != set(REGISTRY) or len(RUN_ORDER) != len(REGISTRY):
    raise RuntimeError(f"RUN_ORDER {RUN_ORDER} does not list the registered audits {tuple(REGISTRY)}")
_ordered = {aid: REGISTRY[aid] for aid in RUN_ORDER}
REGISTRY.clear()
REGISTRY.update(_ordered)


def selected_audits(config: Config) -> list[str]:
    """The ids to run, in run order: ``audits`` (all when empty); ``skip`` is applied by the runner."""
    chosen = config.audits or tuple(REGISTRY)
    return [aid for aid in REGISTRY if aid in chosen]
