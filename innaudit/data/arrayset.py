"""Data sets over arrays: samples already in memory, converted to the model's domain.

Every reader ends here: the samples' dtype and extremes are scanned once (NaN/Inf refused), the
conversion is planned by :mod:`innaudit.data.convert`, and each batch is converted as it is
made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError
from innaudit.data.convert import ValueScan, plan_conversion
from innaudit.data.dataset import Dataset, Role

__all__ = ["array_dataset", "numeric"]


def array_dataset(
    name: str,
    array: np.ndarray | torch.Tensor,
    role: Role,
    domain: DataDomain,
    samples: int,
    *,
    spec: str | None = None,
    source: str | None = None,
    origin: Mapping[str, object] | None = None,
    layout: str | None = None,
    transform: tuple[str, ...] = (),
) -> Dataset:
    """A data set over an array already in memory, batch-first, converted to ``domain`` by the
    rules of :mod:`innaudit.data.convert` (or refused with one line).

    Args:
        name: how the report names the set.
        array: samples along the first axis.
        role: in-distribution or OOD.
        domain: the model's data domain (the shape and range samples are converted to).
        samples: at most this many samples.
        spec: the SPEC it came from (default: a description of the array).
        source: how errors name it (default: ``data set NAME``).
        origin: where it came from, for the report (default: an in-memory array).
        layout: ``"chw"`` / ``"hwc"`` when the file format fixes the image layout.
        transform: steps already applied by the reader (decoding, resizing), for the report.
    """
    source = source or f"data set {name!r}"
    array = numeric(array, source)
    if array.ndim < 1 or int(array.shape[0]) == 0:
        raise DataError(
            f"{source} holds no samples (shape {tuple(array.shape)}); expected a "
            "batch-first array with at least one sample"
        )
    size = min(int(array.shape[0]), samples)
    per_sample = tuple(int(s) for s in array.shape[1:])
    scan = _scan(array, size, source)
    plan = plan_conversion(per_sample, scan, domain, source, ood=role is Role.OOD, layout=layout)

    def make(start: int, stop: int) -> torch.Tensor:
        return plan.apply(_as_numpy(array[start:stop]))

    described = spec or f"<{type(array).__name__} {tuple(array.shape)}>"
    where = dict(origin) if origin is not None else {"format": "array", "shape": list(array.shape)}
    return Dataset(name, described, role, size, make, plan.remark, where, (*transform, *plan.notes))


def _as_numpy(chunk: np.ndarray | torch.Tensor) -> np.ndarray:
    """A chunk as a numpy array (torch dtypes numpy lacks, bfloat16 and float8, via float32)."""
    if isinstance(chunk, torch.Tensor):
        if chunk.is_floating_point() and chunk.dtype not in (torch.float16, torch.float32, torch.float64):
            chunk = chunk.to(torch.float32)
        return chunk.numpy()
    return np.asarray(chunk)


def _scan(array: np.ndarray | torch.Tensor, size: int, source: str) -> ValueScan:
    """Dtype and extremes of the first ``size`` samples, refusing NaN/Inf and values float32
    cannot hold."""
    low, high, integral = math.inf, -math.inf, True
    for s in range(0, size, 4096):
        raw = _as_numpy(array[s : min(s + 4096, size)])
        _finite(raw, source, size)
        if raw.size:
            low, high = min(low, float(raw.min())), max(high, float(raw.max()))
            integral = integral and (raw.dtype.kind in "uib" or bool(np.all(raw == np.floor(raw))))
    kind = array.dtype.kind if isinstance(array, np.ndarray) else _as_numpy(array[:1]).dtype.kind
    itemsize = array.dtype.itemsize
    return ValueScan(kind, int(itemsize), low, high, integral)


def _finite(raw: np.ndarray, source: str, size: int) -> None:
    """Refuse NaN/Inf in a chunk, telling a stored NaN/Inf from a finite value too big for float32."""
    if raw.dtype.kind != "f":
        return
    finite = np.isfinite(raw)
    if bool(finite.all()):
        big = float(np.abs(raw).max()) if raw.size else 0.0
        if big > float(np.finfo(np.float32).max):
            raise DataError(
                f"{source} holds values up to {big:.3g} in its first {size} samples, beyond "
                "float32's 3.4e38; rescale the data so a float32 model can take it"
            )
        return
    bad = int((~finite).sum())
    raise DataError(
        f"{source} holds {bad} NaN/Inf values in its first {size} samples; the inputs of a round trip must be finite"
    )


def numeric(array: object, source: str) -> np.ndarray | torch.Tensor:
    """``array`` if it is a real-valued numpy array or tensor; a clear DataError otherwise."""
    if isinstance(array, torch.Tensor):
        if array.is_complex() or array.dtype == torch.bool:
            raise DataError(f"{source} is a {array.dtype} tensor; expected real numbers")
        return array.detach().cpu()
    if isinstance(array, np.ndarray):
        if array.dtype.kind not in "fiu":
            raise DataError(f"{source} is a numpy array of dtype {array.dtype}; expected real numbers")
        return array
    raise DataError(
        f"{source} is a {type(array).__name__}; expected a torch.Tensor, a numpy array or a data SPEC string"
    )
