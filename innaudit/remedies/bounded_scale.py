"""Remedy *bounded scale*: soft-clamp the scale of affine couplings whose scale is unbounded.

An affine coupling ``y2 = (x2 + t(x1)) g(h(x1))`` is inverted by dividing by ``g``. With
``g = exp`` or ``g = sigmoid`` nothing keeps ``g`` away from 0 (nor ``exp`` from overflowing), so
``F^-1`` has no global Lipschitz bound and inputs off the data explode (Behrmann et al., AISTATS
2021, https://arxiv.org/abs/2006.09347, Section 3). The remedy replaces the scale input ``h`` by
``c tanh(h / c)`` (STARFlow's ``soft_clip``, https://arxiv.org/abs/2506.06276): ``h`` then stays
in ``(-c, c)``, so ``exp(-c) < g < exp(c)`` for ``exp`` and ``g > sigmoid(2 - c)`` for Glow's
``sigmoid(h + 2)``.

``c`` is chosen per coupling from the range of ``h`` measured on the training data:
``c = margin * max |h|`` (``margin`` 1.2 by default). Where the scale has collapsed on the data
itself (the memory-saving gradient, which rebuilds each block's input with ``F^-1``, is wrong), a
bound that preserves the data's range preserves the collapse too; then ``c`` is also capped by
:func:`floor_bound`, the ``c`` at which the least ``g`` the clamp allows is :data:`SCALE_FLOOR`,
so ``1 / g <= 1 / SCALE_FLOOR`` in every coupling, on the data and off it. Where ``|h|`` stays well inside ``c`` the
map is nearly unchanged (``c tanh(h / c) = h - h^3 / (3 c^2) + ...``: at the largest measured
``|h|`` and margin 1.2 the clamp gives ``0.82 h``); a short fine-tune then recovers the
likelihood.

Couplings it can bound: the zoo's :class:`~innaudit.zoo.layers.Coupling` (``clamp`` attribute,
stored in a native checkpoint as ``scale_clamp``) and normflows' ``AffineCoupling`` (a forward
hook on its ``param_map`` that clamps the scale half of the output). :func:`bound_scales` is the
public function a user's factory calls to apply the clamps a repair chose::

    from innaudit.remedies import bound_scales

    def flow():
        model = build_my_flow()
        bound_scales(model, {"flows.0.flows.1": 2.31, "flows.2.flows.1": 1.87})  # from the repair report
        return model
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from innaudit.core.errors import UsageError
from innaudit.model.contract import InvertibleModel

__all__ = [
    "DEFAULT_MARGIN",
    "FLOOR",
    "SCALE_FLOOR",
    "ScaleTarget",
    "bound_scales",
    "choose_clamps",
    "floor_bound",
    "measure_ranges",
    "scale_targets",
    "soft_clamp",
]

DEFAULT_MARGIN = 1.2
"""``c = margin * max |h|`` over the training data."""
FLOOR = 0.5
"""The least ``max |h|`` a bound is made from, so a coupling whose scale net outputs almost
nothing on the data (an untrained one) still gets room: ``c >= margin * FLOOR``."""
SCALE_FLOOR = 0.01
"""The least scale ``g`` a floored bound allows (:func:`floor_bound`): each coupling's inverse
then multiplies by at most ``1 / SCALE_FLOOR = 100``."""
HOOK_ATTRIBUTE = "_innaudit_scale_clamp"


@dataclass(frozen=True)
class ScaleTarget:
    """One coupling whose scale can be bounded: its module path, library and scale function."""

    path: str
    library: str  # "zoo" or "normflows"
    scale: str  # exp, sigmoid, sigmoid_inv


def soft_clamp(h: Tensor, c: float) -> Tensor:
    """``c tanh(h / c)``: smooth, odd, slope 1 at 0, values in ``(-c, c)``."""
    return c * torch.tanh(h / c)


def _is_zoo_coupling(module: nn.Module) -> bool:
    from innaudit.zoo.layers import Coupling

    return isinstance(module, Coupling) and module.coupling == "affine" and module.scale in ("exp", "sigmoid")


def _is_normflows_coupling(module: nn.Module) -> bool:
    cls = type(module)
    return (
        cls.__name__ == "AffineCoupling"
        and cls.__module__.startswith("normflows")
        and bool(getattr(module, "scale", False))
        and getattr(module, "scale_map", None) in ("exp", "sigmoid", "sigmoid_inv")
        and isinstance(getattr(module, "param_map", None), nn.Module)
    )


def scale_targets(module: nn.Module) -> list[ScaleTarget]:
    """Every affine coupling of ``module`` with an unbounded scale that is not bounded yet."""
    found: list[ScaleTarget] = []
    for path, sub in module.named_modules():
        if _is_zoo_coupling(sub) and getattr(sub, "clamp", None) is None:
            found.append(ScaleTarget(path, "zoo", str(getattr(sub, "scale", ""))))
        elif _is_normflows_coupling(sub) and not hasattr(sub.param_map, HOOK_ATTRIBUTE):
            found.append(ScaleTarget(path, "normflows", str(sub.scale_map)))
    return found


def _scale_part(library: str, out: Tensor) -> Tensor:
    """The scale input ``h`` inside a coupling net's output."""
    if library == "zoo":
        return out[:, out.shape[1] // 2 :]
    return out[:, 1::2]


def _net(module: nn.Module, target: ScaleTarget) -> nn.Module:
    sub = module.get_submodule(target.path)
    return sub.net if target.library == "zoo" else sub.param_map  # type: ignore[return-value]


@torch.no_grad()
def measure_ranges(
    model: InvertibleModel, targets: list[ScaleTarget], x: Tensor, batch_size: int = 512
) -> dict[str, float]:
    """``max |h|`` of each target's scale input over ``x`` (the data -> latent direction)."""
    seen = {t.path: 0.0 for t in targets}
    handles = []
    for target in targets:

        def record(mod: nn.Module, args: Any, out: Tensor, target: ScaleTarget = target) -> None:
            h = _scale_part(target.library, out).abs()
            finite = h[torch.isfinite(h)]
            if finite.numel():
                seen[target.path] = max(seen[target.path], float(finite.max()))

        handles.append(_net(model.module, target).register_forward_hook(record))
    try:
        for start in range(0, len(x), batch_size):
            model.forward(x[start : start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    return seen


def floor_bound(scale: str, floor: float = SCALE_FLOOR) -> float:
    """The ``c`` at which the clamped scale's least value is ``floor``: with ``h`` in ``(-c, c)``,
    ``g = exp(h) > exp(-c)``, so ``c = ln(1 / floor)``; ``g = sigmoid(h + 2) > sigmoid(2 - c)``
    (Glow's scale, also normflows' ``sigmoid_inv``), so ``c = 2 + ln(1 / floor - 1)``."""
    if not 0 < floor < 1:
        raise ValueError(f"scale floor {floor!r}; expected a number in (0, 1)")
    if scale == "exp":
        return math.log(1 / floor)
    if scale in ("sigmoid", "sigmoid_inv"):
        return 2 + math.log(1 / floor - 1)
    raise ValueError(f"no scale floor for scale {scale!r}; expected exp, sigmoid or sigmoid_inv")


def choose_clamps(
    ranges: Mapping[str, float], margin: float = DEFAULT_MARGIN, caps: Mapping[str, float] | None = None
) -> dict[str, float]:
    """``c = margin * max(range, FLOOR)`` per coupling, at most ``caps[path]`` where given (a
    :func:`floor_bound`), rounded to 4 significant digits (the bound is stored as plain data, so
    it is the same number wherever it is read back)."""
    if not (margin > 1 and math.isfinite(margin)):
        raise UsageError(f"bounded scale margin {margin!r}; expected a finite number above 1 (e.g. 1.2)")
    limits = caps or {}
    return {
        path: float(f"{min(margin * max(value, FLOOR), limits.get(path, math.inf)):.4g}")
        for path, value in ranges.items()
    }


def _normflows_hook(c: float) -> Any:
    def hook(mod: nn.Module, args: Any, out: Tensor) -> Tensor:
        bounded = out.clone()
        bounded[:, 1::2] = soft_clamp(out[:, 1::2], c)
        return bounded

    return hook


def _check(clamps: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    from innaudit.zoo.repaired import MAX_CLAMP

    for path, value in clamps.items():
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < float(value) <= MAX_CLAMP
        if not ok:
            raise UsageError(f"bound for {path!r} is {value!r}; expected a number in (0, {MAX_CLAMP:g}]")
        yield str(path), float(value)


def bound_scales(module: nn.Module, clamps: Mapping[str, float]) -> nn.Module:
    """Bound the scale of each named coupling: ``h -> c tanh(h / c)``; returns ``module``.

    Args:
        module: the model (a zoo flow, a normflows flow, or a module holding them).
        clamps: module path (as in ``module.named_modules()``) -> ``c``, as a repair reports them.

    Zoo couplings get ``clamp = c``; normflows ``AffineCoupling`` layers a forward hook on
    their ``param_map`` (calling it again replaces the bound). The state dict does not change,
    so weights load before or after this call. Raises UsageError for a path that is not a
    coupling innaudit can bound.
    """
    for path, c in _check(clamps):
        try:
            sub = module.get_submodule(path)
        except AttributeError:
            raise UsageError(f"bound_scales: the model has no module {path!r}") from None
        from innaudit.zoo.layers import Coupling

        if isinstance(sub, Coupling) and sub.coupling == "affine":
            sub.clamp = c
        elif _is_normflows_coupling(sub):
            net = cast(nn.Module, sub.param_map)
            previous = getattr(net, HOOK_ATTRIBUTE, None)
            if previous is not None:
                previous[1].remove()
            handle = net.register_forward_hook(_normflows_hook(c))
            object.__setattr__(net, HOOK_ATTRIBUTE, (c, handle))
        else:
            raise UsageError(
                f"bound_scales: {path!r} is a {type(sub).__name__}; expected an affine zoo Coupling or a "
                "normflows AffineCoupling"
            )
    return module
