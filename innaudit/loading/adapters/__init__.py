"""Adapters: the objects other libraries build, as :class:`~innaudit.model.contract.InvertibleModel`.

One module per library. Each has ``LIBRARY`` (what it adapts, for messages), ``matches(obj)``
(looks only at class names and modules, so it never imports the library) and
``adapt(obj, domain, source, condition) -> Adapted``, which imports the library lazily. The
first adapter whose ``matches`` is true wins; a plain ``nn.Module`` with ``inverse`` /
``reverse`` is the fallback (:func:`innaudit.loading.adapt.adapt_module`).

=============  ======================================  ==========================================
library        objects                                 data -> latent is
=============  ======================================  ==========================================
FrEIA          SequenceINN, GraphINN, any block        ``m(x, c, jac=True)``; inverse ``rev=True``
nflows         Flow, Transform                         ``t(x, context)``; inverse ``t.inverse``
normflows      NormalizingFlow, single flow layers     ``inverse`` (normflows' forward samples)
normflows      MultiscaleFlow (list of latents)        ``inverse_and_log_det``
zuko           Flow (LazyDistribution), LazyTransform  ``flow(c).transform``; inverse ``.inv``
torch / pyro   Transform, TransformModule, Conditional ``t.inv`` (their forward samples)
TorchScript    ScriptModule exporting ``inverse``      ``forward``; only with --trust-checkpoint
rosinality     ``reverse(z_list, reconstruct=...)``    ``forward`` -> ``(log_p, logdet, z_outs)``
ml-tarflow     ``reverse(z, guidance=...)``, ``var``   ``forward`` -> ``(z, outputs, logdets)``
=============  ======================================  ==========================================
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.loading.adapters import (  # noqa: F401  (register library solvers and bounds)
    coupling_bounds,
    distributions,
    freia,
    lipschitz,
    nflows,
    normflows,
    rosinality,
    solvers,
    tarflow,
    torchscript,
    zuko,
)
from innaudit.loading.adapters._common import Adapted, Condition, resolve_condition

__all__ = ["ADAPTERS", "Adapted", "Condition", "adapt_object", "find_adapter", "resolve_condition"]

ADAPTERS: tuple[ModuleType, ...] = (freia, nflows, normflows, zuko, distributions, torchscript, rosinality, tarflow)
"""Tried in order; the fallback for anything else is the plain-module adapter."""


def find_adapter(obj: Any) -> ModuleType | None:
    """The adapter module for ``obj``, or None when it is none of the known libraries'."""
    for adapter in ADAPTERS:
        if adapter.matches(obj):
            return adapter
    return None


def adapt_object(obj: Any, domain: DataDomain, source: dict[str, str], condition: Condition | None = None) -> Adapted:
    """Wrap whatever a factory or a trusted checkpoint gave as an InvertibleModel.

    Raises:
        LoadError: no adapter fits, the object has no inverse, or a condition is missing /
            given to an unconditional model.
    """
    from innaudit.loading.adapt import adapt_module

    adapter = find_adapter(obj)
    if adapter is not None:
        return adapter.adapt(obj, domain, source, condition)
    if condition is not None:
        raise LoadError(
            f"--condition was given, but {type(obj).__name__} is a plain module, "
            "which takes no condition; drop --condition"
        )
    return Adapted(adapt_module(obj, domain, source))
