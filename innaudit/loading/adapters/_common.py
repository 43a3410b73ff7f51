"""What every library adapter shares: the condition, the result type, small call helpers.

A library adapter maps its library's objects onto :class:`~innaudit.model.contract.InvertibleModel`
(forward = data -> latent). Direction conventions differ: FrEIA, nflows and zuko go data -> latent in ``forward``; normflows and
``torch.distributions`` / pyro go latent -> data, so their adapters swap the two maps.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError, LoadError, clean_text
from innaudit.model.contract import Fn, InvertibleModel, ModelInfo

__all__ = [
    "Adapted",
    "Condition",
    "LibraryFlow",
    "TransformHolder",
    "block_models",
    "from_library",
    "leaf_name",
    "library_error",
    "resolve_condition",
    "sum_per_sample",
]


class LibraryFlow(Protocol):
    """A library's flow layer or transform, as the adapters call it: one direction through
    ``__call__``, the other through ``inverse`` (arguments and results as the library defines)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def inverse(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Adapted:
    """An adapter's result: the model and what the report should warn about."""

    model: InvertibleModel
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Condition:
    """The condition (context) of a conditional model, from ``--condition SPEC``.

    ``rows`` holds ``N`` condition rows. Row ``j`` of every batch takes row ``j mod N``: one row
    (``constant:...`` or a one-row file) conditions every sample alike; a file of ``N`` rows pairs
    row ``j`` with sample ``j`` of each batch, which is sample ``j`` of the data set when the set
    fits in one batch (``--batch-size`` at least ``--samples``).
    """

    rows: Tensor
    spec: str

    def for_batch(self, x: Tensor) -> Tensor:
        """The condition rows for batch ``x``, on its device and in its dtype."""
        index = torch.arange(x.shape[0]) % self.rows.shape[0]
        return self.rows[index].to(device=x.device, dtype=x.dtype)

    def describe(self) -> dict[str, Any]:
        """Plain data for the report's ``target`` block."""
        return {"spec": self.spec, "rows": int(self.rows.shape[0]), "shape": [int(s) for s in self.rows.shape[1:]]}


def resolve_condition(spec: str, rows_used: int | None = None) -> Condition:
    """``--condition SPEC``: a data file (``.npy``, ``.npz[:key]``, ``.pt[:key]``, first axis =
    rows) or ``constant:V1,V2,...`` (one row used for every sample).

    A file is read as ``--data`` is: only its first ``rows_used`` rows (``--samples``: no batch
    holds more samples, so no later row is ever paired with one), at most the data-file byte
    cap, and only those rows become float64.

    Raises:
        DataError: the SPEC is neither, or holds NaN/Inf.
    """
    from innaudit.safeio.arrays import read_array, split_file_spec

    text = spec.strip()
    if text.startswith("constant:"):
        try:
            values = [float(v) for v in text[len("constant:") :].split(",")]
        except ValueError:
            raise DataError(f"--condition {spec!r}: expected constant:V1,V2,... with numbers") from None
        rows = torch.tensor([values], dtype=torch.float64)
    else:
        file_spec = split_file_spec(text)
        if file_spec is None:
            raise DataError(
                f"--condition {spec!r} is neither a data file (.npy, .npz[:key], .pt[:key]) nor constant:V1,V2,..."
            )
        array = read_array(*file_spec, rows_used)
        rows = torch.as_tensor(np.array(array, dtype=np.float64))
        if rows.ndim == 1:
            rows = rows[:, None]
        if rows.shape[0] == 0:
            raise DataError(f"--condition {spec!r} holds no rows")
    if not bool(torch.isfinite(rows).all()):
        raise DataError(f"--condition {spec!r} holds NaN/Inf values; a condition must be finite")
    return Condition(rows, text if not Path(text).is_file() else str(Path(text)))


def from_library(obj: Any, *packages: str) -> bool:
    """True when ``obj``'s class or one of its bases comes from one of ``packages``.

    Reads only ``__module__`` strings, so asking never imports the library.
    """
    for cls in type(obj).__mro__:
        top = (getattr(cls, "__module__", "") or "").split(".")[0]
        if top in packages:
            return True
    return False


def leaf_name(obj: Any, index: int) -> str:
    """How a block is named in the report: ``ClassName[i]``."""
    return f"{type(obj).__name__}[{index}]"


def block_models(
    layers: Sequence[nn.Module], maps: tuple[Fn, Fn], domain: DataDomain, kinds: Callable[[nn.Module], dict[str, Any]]
) -> list[InvertibleModel]:
    """One model per block, in data -> latent order, each named ``ClassName[i]``.

    ``maps`` is the ``(forward, inverse)`` pair every block is called with (the same calls as
    the whole model, applied to one layer); ``kinds(layer)`` gives its inverse / log-det kinds.
    """
    forward, inverse = maps
    return [
        InvertibleModel(
            layer, forward, inverse, ModelInfo(domain=domain, architecture=leaf_name(layer, i), **kinds(layer))
        )
        for i, layer in enumerate(layers)
    ]


def sum_per_sample(ld: Any, x: Tensor) -> Tensor:
    """A log-det as one number per sample: element-wise log-dets are summed over the event.

    Libraries return ``(B,)`` (vector transforms) or ``(B, D...)`` (element-wise transforms, as
    ``torch.distributions`` does); a scalar (a fixed, input-independent map) is broadcast.
    """
    if not isinstance(ld, Tensor):
        return torch.full((x.shape[0],), float(ld), dtype=x.dtype, device=x.device)
    if ld.dim() == 0:
        return ld.expand(x.shape[0]).to(x.dtype)
    return ld.reshape(ld.shape[0], -1).sum(dim=1) if ld.dim() > 1 else ld


def library_error(library: str, exc: BaseException, what: str) -> LoadError:
    """A LoadError that names the library call that failed."""
    return LoadError(f"{library}: {what} failed with {clean_text(f'{type(exc).__name__}: {exc}', 300)}")


_NOT_STATE = (type, types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.ModuleType)


class TransformHolder(nn.Module):
    """An ``nn.Module`` around an object that is not one (a ``torch.distributions.Transform``).

    InvertibleModel manages modules (eval mode, dtype copies); a plain transform keeps its
    tensors as attributes, which ``_apply`` casts too, so ``copy_as(float64)`` really widens it.
    """

    def __init__(self, inner: Any, modules: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.inner = inner
        self.held = nn.ModuleList(modules)  # modules inside the transform: their parameters count

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> TransformHolder:
        super()._apply(fn, recurse)
        _cast_tensors(self.inner, fn, set())
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TransformHolder:
        inner = copy.deepcopy(self.inner, memo)
        return TransformHolder(inner, [copy.deepcopy(m, memo) for m in self.held])


def _cast_tensors(obj: Any, fn: Callable[[Tensor], Tensor], seen: set[int]) -> None:
    if id(obj) in seen or isinstance(obj, nn.Module):
        return  # modules are cast by nn.Module._apply itself
    seen.add(id(obj))
    state = getattr(obj, "__dict__", None)
    if state is None:
        return
    for key, value in list(state.items()):
        if isinstance(value, Tensor) and value.is_floating_point():
            state[key] = fn(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                _cast_tensors(item, fn, seen)
        elif hasattr(value, "__dict__") and not isinstance(value, _NOT_STATE):
            _cast_tensors(value, fn, seen)
