"""FrEIA: ``SequenceINN``, ``GraphINN`` and single ``InvertibleModule`` blocks.

FrEIA's call is ``m(x, c=[conds], rev=False, jac=True) -> (out, log_jac_det)``: forward is
data -> latent, ``rev=True`` runs the inverse. Single blocks take and return tuples of tensors.
Blocks: the ``module_list`` of a SequenceINN, the nodes of a GraphINN when they form a chain.
A GraphINN with several output nodes (``Split`` without ``Concat``, multi-scale) maps data to
the list of its outputs, one latent level per output node, and its inverse takes that list.
``IResNetLayer`` has a fixed-point inverse (``fixed_point_iterations``, no convergence check)
and a stochastic log-det, so a model holding one is recorded as iterative / estimated. Its
log-det estimate needs autograd and draws Rademacher probes from the global RNG on every call
(also in eval, and also for ``rev=True``): calls into a model holding one run with autograd on
and the global RNG forked and seeded with 0, so the estimate is a deterministic function of the
input and the caller's RNG is left alone; the outputs are detached unless the caller asked for
gradients. Its inverse is measured per block by :mod:`.solvers`.

"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.loading.adapters._common import Adapted, Condition, from_library, leaf_name, sum_per_sample
from innaudit.model.contract import InverseKind, InvertibleModel, LogDetKind, ModelInfo

__all__ = ["LIBRARY", "adapt", "matches"]

LIBRARY = "FrEIA"

Call = Callable[[nn.Module, Tensor, "list[Tensor]", bool], Any]


def matches(obj: Any) -> bool:
    """A FrEIA module (``FrEIA.framework`` or ``FrEIA.modules``)."""
    return isinstance(obj, nn.Module) and from_library(obj, "FrEIA")


def _tensor(out: Any) -> Tensor:
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


def _call_network(module: nn.Module, x: Any, c: list[Tensor], rev: bool) -> tuple[Any, Any]:
    """A GraphINN with several output nodes (a ``Split`` without ``Concat``) maps data to a
    list of latents, one per output node in ``out_nodes`` order; its inverse takes that list."""
    out, ld = module(list(x) if isinstance(x, (list, tuple)) else x, c=c or None, rev=rev, jac=True)
    if not rev and isinstance(out, (tuple, list)) and len(out) > 1:
        return list(out), ld
    return _tensor(out), ld


def _call_block(module: nn.Module, x: Tensor, c: list[Tensor], rev: bool) -> tuple[Tensor, Any]:
    # blocks without a condition (permutations...) take no ``c`` argument at all
    out, ld = module([x], c=c, rev=rev, jac=True) if c else module([x], rev=rev, jac=True)
    return _tensor(out), ld


def _is_network(obj: nn.Module) -> bool:
    return (
        type(obj).__name__ in ("SequenceINN", "GraphINN", "ReversibleGraphNet", "ReversibleSequential")
        or hasattr(obj, "module_list")
        or hasattr(obj, "node_list")
    )


def _takes_condition(obj: nn.Module) -> bool:
    conditions = getattr(obj, "conditions", None)
    if isinstance(conditions, list) and any(c is not None for c in conditions):
        return True
    if getattr(obj, "condition_nodes", None):
        return True
    return bool(getattr(obj, "dims_c", None))


def _maps(call: Call, condition: Condition | None, wants: bool):
    def conds(x: Any) -> list[Tensor]:
        first = x[0] if isinstance(x, (list, tuple)) else x
        return [condition.for_batch(first)] if (condition is not None and wants) else []

    def forward(module: nn.Module, x: Tensor) -> tuple[Any, Tensor]:
        grad = torch.is_grad_enabled()
        with _estimating(module):
            z, ld = call(module, x, conds(x), False)
            ld = sum_per_sample(ld, x)
        return (z, ld) if grad else (_detached(z), _detached(ld))

    def inverse(module: nn.Module, z: Any) -> Tensor:
        grad = torch.is_grad_enabled()
        with _estimating(module):
            x = call(module, z, conds(z), True)[0]
        return x if grad else _detached(x)

    return forward, inverse


def _stochastic(module: nn.Module) -> bool:
    return any(type(m).__name__ == "IResNetLayer" for m in module.modules())


@contextlib.contextmanager
def _estimating(module: nn.Module) -> Iterator[None]:
    """For a module holding an ``IResNetLayer``: autograd on and the global RNG forked and
    seeded (its log-det estimate's probes), see the module docstring."""
    if not _stochastic(module):
        yield
        return
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        torch.manual_seed(0)
        yield


def _detached(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.detach()
    if isinstance(out, (list, tuple)):
        return type(out)(_detached(o) for o in out)
    return out


def _kinds(obj: nn.Module) -> dict[str, Any]:
    iterative = [m for m in obj.modules() if type(m).__name__ == "IResNetLayer"]
    if not iterative:
        return {"inverse_kind": InverseKind.ANALYTIC, "log_det_kind": LogDetKind.EXACT}
    iters = getattr(iterative[0], "fixed_point_iterations", None)
    return {
        "inverse_kind": InverseKind.ITERATIVE,
        "log_det_kind": LogDetKind.ESTIMATED,
        "inverse_max_iter": int(iters) if iters is not None else None,
    }


def _chain(obj: nn.Module) -> list[tuple[nn.Module, bool]] | None:
    """The (block, takes condition) chain of a SequenceINN or a chain-shaped GraphINN."""
    if hasattr(obj, "module_list"):
        module_list = cast(nn.ModuleList, obj.module_list)
        conditions = list(getattr(obj, "conditions", [None] * len(module_list)))
        return [(m, c is not None) for m, c in zip(module_list, conditions, strict=False)]
    nodes = [
        n for n in getattr(obj, "node_list", []) if type(n).__name__ not in ("InputNode", "OutputNode", "ConditionNode")
    ]
    previous: Any = None
    chain: list[tuple[nn.Module, bool]] = []
    for node in nodes:
        inputs = getattr(node, "inputs", [])
        if len(inputs) != 1 or len(getattr(node, "output_dims", [None])) != 1:
            return None
        if previous is not None and inputs[0][0] is not previous:
            return None
        chain.append((node.module, bool(getattr(node, "conditions", []))))
        previous = node
    return chain or None


def _blocks_fn(domain: DataDomain, condition: Condition | None):
    def blocks(module: nn.Module) -> list[InvertibleModel]:
        found = []
        for i, (block, wants) in enumerate(_chain(module) or []):
            forward, inverse = _maps(_call_block, condition, wants)
            info = ModelInfo(domain=domain, architecture=leaf_name(block, i), **_kinds(block))
            found.append(InvertibleModel(block, forward, inverse, info))
        return found

    return blocks


def _init_warnings(obj: nn.Module) -> list[str]:
    names = []
    for name, m in obj.named_modules():
        fresh = getattr(m, "init_on_next_batch", False) is True
        flag = getattr(m, "is_initialized", None)
        if fresh or (isinstance(flag, Tensor) and flag.numel() == 1 and not bool(flag)):
            names.append(name or type(m).__name__)
    if not names:
        return []
    return [
        f"FrEIA ActNorm {', '.join(names[:4])} is not initialized: it sets itself from the first "
        "batch it sees, so the audit measures a model that was never trained that way; load "
        "the trained weights (--weights) or initialize it in the factory"
    ]


def adapt(obj: Any, domain: DataDomain, source: dict[str, str], condition: Condition | None) -> Adapted:
    """Wrap a FrEIA network or block."""
    network = _is_network(obj)
    wants = _takes_condition(obj)
    if wants and condition is None:
        raise LoadError(
            f"FrEIA {type(obj).__name__} takes a condition; pass --condition SPEC "
            "(a .npy file of condition rows or constant:V1,V2,...)"
        )
    if condition is not None and not wants:
        raise LoadError(f"--condition was given, but FrEIA {type(obj).__name__} takes none")
    if network and len(getattr(obj, "dims_c", []) or []) > 1:
        raise LoadError(
            "FrEIA networks with several condition inputs are not supported; innaudit passes one condition tensor"
        )
    forward, inverse = _maps(_call_network if network else _call_block, condition, wants)
    info = ModelInfo(
        domain=domain, source={**source, "library": LIBRARY}, architecture=f"FrEIA.{type(obj).__name__}", **_kinds(obj)
    )
    blocks = _blocks_fn(domain, condition) if network and _chain(obj) else None
    model = InvertibleModel(obj, forward, inverse, info, blocks_fn=blocks)
    return Adapted(model, tuple(_init_warnings(obj)))
