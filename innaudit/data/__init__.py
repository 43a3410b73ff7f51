"""Data SPECs: ``--data SPEC`` and ``--ood [NAME=]SPEC``.

A SPEC is a file (``x.npy``, ``x.npz[:key]``, ``x.pt[:key]``) or a built-in name with an
optional argument (``uniform``, ``gaussian``, ``rademacher``, ``constant:V``, ``digits:test``);
see :mod:`innaudit.data.builtin`. Every set is shaped like the model's input and checked against
it before any audit starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError, did_you_mean
from innaudit.core.seeding import stable_seed
from innaudit.data.builtin import BUILTINS, DEFAULT_OOD
from innaudit.data.dataset import Dataset, Role
from innaudit.data.infer import infer_domain
from innaudit.safeio.arrays import read_array, split_file_spec

__all__ = [
    "BUILTINS",
    "DEFAULT_OOD",
    "Dataset",
    "Role",
    "array_dataset",
    "default_data",
    "domain_from_file",
    "inferred_array_domain",
    "inferred_domain",
    "resolve_dataset",
    "split_name",
]

_NAME = re.compile(r"^([A-Za-z0-9_.\-]+)=(.+)$")


def split_name(text: str) -> tuple[str | None, str]:
    """``"far=y.npy"`` -> ``("far", "y.npy")``; a SPEC without ``NAME=`` -> ``(None, spec)``."""
    match = _NAME.match(text)
    return (match.group(1), match.group(2)) if match else (None, text)


def resolve_dataset(text: str, role: Role, domain: DataDomain, samples: int, seed: int) -> Dataset:
    """Build the data set a ``[NAME=]SPEC`` names, shaped like ``domain``.

    Args:
        text: the SPEC, optionally prefixed by ``NAME=``.
        role: in-distribution (``--data``) or OOD (``--ood``).
        domain: the model's data domain (shape and range).
        samples: at most this many samples (``--samples``).
        seed: the run seed; random sets are drawn from generators seeded by (seed, name).
    """
    name, spec = split_name(text.strip())
    if not spec:
        raise DataError(f"data SPEC {text!r} is empty; expected a file or a built-in name")
    file_spec = split_file_spec(spec)
    if file_spec is not None:
        path, key = file_spec
        return _file_dataset(name or path.stem, spec, role, path, key, domain, samples)
    return _builtin_dataset(name, spec, role, domain, samples, seed)


def _builtin_dataset(name: str | None, spec: str, role: Role, domain: DataDomain, samples: int, seed: int) -> Dataset:
    base, _, arg = spec.partition(":")
    builtin = BUILTINS.get(base)
    if builtin is None:
        raise DataError(
            f"data SPEC {spec!r} is neither a file that exists nor a built-in set{did_you_mean(base, BUILTINS)}"
        )
    label = name or spec
    size = samples if builtin.random else min(samples, builtin.fixed_size(arg))  # type: ignore[misc]

    def make(start: int, stop: int) -> torch.Tensor:
        if builtin.random:
            gen = torch.Generator().manual_seed(stable_seed(seed, "data", label, start))
            return builtin.make(domain, stop - start, gen, arg)
        return builtin.make(domain, stop, torch.Generator(), arg)[start:stop]

    make(0, min(size, 1))  # fail on a bad argument now, before any audit starts
    return Dataset(label, spec, role, size, make, builtin.summary)


def _file_dataset(
    name: str, spec: str, role: Role, path: Path, key: str | None, domain: DataDomain, samples: int
) -> Dataset:
    return array_dataset(name, read_array(path, key, samples), role, domain, samples, spec=spec, source=str(path))


def array_dataset(
    name: str,
    array: np.ndarray | torch.Tensor,
    role: Role,
    domain: DataDomain,
    samples: int,
    *,
    spec: str | None = None,
    source: str | None = None,
) -> Dataset:
    """A data set over an array already in memory (or memory-mapped), batch-first.

    Args:
        name: how the report names the set.
        array: samples along the first axis, each with ``domain.numel`` values.
        role: in-distribution or OOD.
        domain: the model's data domain (the shape samples are reshaped to).
        samples: at most this many samples.
        spec: the SPEC it came from (default: a description of the array).
        source: how errors name it (default: ``data set NAME``).
    """
    source = source or f"data set {name!r}"
    array = _numeric(array, source)
    if array.ndim < 1 or int(array.shape[0]) == 0:
        raise DataError(
            f"{source} holds no samples (shape {tuple(array.shape)}); expected a "
            "batch-first array with at least one sample"
        )
    size = min(int(array.shape[0]), samples)
    per_sample = tuple(int(s) for s in array.shape[1:])
    if int(np.prod(per_sample)) != domain.numel:
        raise DataError(
            f"{source} has samples of shape {per_sample}, but the model takes "
            f"{tuple(domain.shape)}; expected {domain.numel} values per sample"
        )
    note = "" if per_sample == tuple(domain.shape) else f"reshaped from {per_sample}"

    def make(start: int, stop: int) -> torch.Tensor:
        chunk = torch.from_numpy(np.array(array[start:stop])) if isinstance(array, np.ndarray) else array[start:stop]
        return chunk.to(torch.float32).reshape(stop - start, *domain.shape)

    for s in range(0, size, 4096):
        _finite(array[s : min(s + 4096, size)], make(s, min(s + 4096, size)), source, size)
    described = spec or f"<{type(array).__name__} {tuple(array.shape)}>"
    return Dataset(name, described, role, size, make, note)


def _finite(raw: Any, chunk: torch.Tensor, source: str, size: int) -> None:
    """Refuse NaN/Inf in a chunk, telling a stored NaN/Inf from a finite value too big for float32."""
    if bool(torch.isfinite(chunk).all()):
        return
    stored = torch.from_numpy(np.array(raw)) if isinstance(raw, np.ndarray) else raw
    if bool(torch.isfinite(stored).all()):
        big = float(stored.abs().max())
        raise DataError(
            f"{source} holds values up to {big:.3g} in its first {size} samples, beyond "
            "float32's 3.4e38; rescale the data so a float32 model can take it"
        )
    bad = int((~torch.isfinite(stored)).sum())
    raise DataError(
        f"{source} holds {bad} NaN/Inf values in its first {size} samples; the inputs of a round trip must be finite"
    )


def _numeric(array: object, source: str) -> np.ndarray | torch.Tensor:
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


def domain_from_file(text: str) -> DataDomain:
    """A domain for a model that declares none: the shape of a data file, its range snapped to a
    standard one and its quantization levels (see :func:`inferred_domain`)."""
    return inferred_domain(text)[0]


def inferred_domain(text: str) -> tuple[DataDomain, str]:
    """The domain of the data file a ``[NAME=]SPEC`` names, and a sentence saying how it was
    inferred (:mod:`innaudit.data.infer`), for the report."""
    _, spec = split_name(text)
    file_spec = split_file_spec(spec)
    if file_spec is None:
        raise DataError(
            f"--data {spec!r} is not a file, so it cannot tell the model's input shape; "
            "give a .npy/.npz/.pt file or set input_shape on the module"
        )
    return inferred_array_domain(read_array(*file_spec, 4096), Path(file_spec[0]).stem, str(file_spec[0]))


def inferred_array_domain(
    array: np.ndarray | torch.Tensor, name: str, source: str | None = None
) -> tuple[DataDomain, str]:
    """The domain of data in memory (shape, range snapped to a standard one, levels) and how it
    was inferred."""
    array = _numeric(array, f"data set {name!r}")
    head = array[: min(len(array), 4096)]
    values = head.double().numpy() if isinstance(head, torch.Tensor) else np.array(head, dtype=np.float64)
    found = infer_domain(values, source or f"data set {name!r}")
    domain = DataDomain(
        shape=tuple(int(s) for s in array.shape[1:]), low=found.low, high=found.high, levels=found.levels, name=name
    )
    return domain, found.note


def default_data(domain: DataDomain) -> str | None:
    """The in-distribution SPEC for a model whose domain names a built-in set (``digits:test``)."""
    return f"{domain.name}:test" if domain.name in BUILTINS else None
