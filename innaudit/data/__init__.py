"""Data SPECs: ``--data SPEC`` and ``--ood [NAME=]SPEC``.

A SPEC is an array file (``x.npy``, ``x.npz[:key]``, ``x.pt[:key]``, ``x.t7``), a data set in the
format its users hold it (an image folder, CIFAR python batches, SVHN ``.mat``, Parquet or tar
shards: :mod:`innaudit.data.formats`), a natural-image set that ships offline
(:mod:`innaudit.data.natural`), or a built-in name with an optional argument (``uniform``,
``gaussian``, ``rademacher``, ``constant:V``, ``digits:test``; :mod:`innaudit.data.builtin`).
Every set is converted to the model's input by the rules of :mod:`innaudit.data.convert`, or
refused, before any audit starts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError, clean_text, did_you_mean
from innaudit.core.seeding import stable_seed
from innaudit.data.arrayset import array_dataset, numeric
from innaudit.data.builtin import BUILTINS, DEFAULT_OOD
from innaudit.data.dataset import Dataset, Role
from innaudit.data.formats import Reader, match_format
from innaudit.data.infer import infer_domain
from innaudit.data.natural import NATURAL, natural_battery, natural_dataset
from innaudit.safeio.arrays import read_array, split_file_spec

__all__ = [
    "BUILTINS",
    "DEFAULT_OOD",
    "NATURAL",
    "Dataset",
    "Role",
    "array_dataset",
    "conversion_warnings",
    "data_catalogue",
    "default_data",
    "domain_from_file",
    "inferred_array_domain",
    "inferred_domain",
    "natural_battery",
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
    base = spec.partition(":")[0]
    if base in NATURAL:
        return natural_dataset(name or spec, spec, role, domain, samples)
    if base not in BUILTINS:
        found = match_format(spec)
        if found is not None:
            reader, path, key = found
            return _format_dataset(name or _stem(path), spec, role, reader, path, key, domain, samples)
    file_spec = split_file_spec(spec)
    if file_spec is not None:
        path, key = file_spec
        return _file_dataset(name or path.stem, spec, role, path, key, domain, samples)
    return _builtin_dataset(name, spec, role, domain, samples, seed)


def _stem(path: Path) -> str:
    """A set's default name: the file or folder name without its suffixes."""
    return path.name.split(".")[0] or path.name


def _format_dataset(
    name: str,
    spec: str,
    role: Role,
    reader: Reader,
    path: Path,
    key: str | None,
    domain: DataDomain,
    samples: int,
) -> Dataset:
    read = reader(path, key, samples, domain, spec)
    return array_dataset(
        name,
        read.array,
        role,
        domain,
        samples,
        spec=spec,
        source=str(path),
        origin=read.origin,
        layout=read.layout,
        transform=read.transform,
    )


def _builtin_dataset(name: str | None, spec: str, role: Role, domain: DataDomain, samples: int, seed: int) -> Dataset:
    base, _, arg = spec.partition(":")
    builtin = BUILTINS.get(base)
    if builtin is None:
        raise DataError(
            f"data SPEC {spec!r} is neither a file or folder that exists nor a built-in set"
            f"{did_you_mean(base, [*BUILTINS, *NATURAL])}"
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
    array = read_array(path, key, samples)
    origin = {"format": path.suffix.lstrip(".") or "array", "path": str(path), "shape": list(array.shape)}
    if key:
        origin["key"] = key
    return array_dataset(name, array, role, domain, samples, spec=spec, source=str(path), origin=origin)


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
    array = numeric(array, f"data set {name!r}")
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


def conversion_warnings(datasets: Sequence[Dataset]) -> tuple[str, ...]:
    """One line per user-given set that was converted to the model's domain (layout, channels,
    size or values): the console shows it, so a converted set is never a silent one."""
    return tuple(
        f"data set {clean_text(d.name, 80)!r} was converted: {clean_text('; '.join(d.transform), 600)}"
        for d in datasets
        if d.transform and d.origin.get("format") not in ("builtin", "natural")
    )


def data_catalogue() -> list[tuple[str, str, str]]:
    """``(name, summary, provenance)`` of every built-in and shipped natural-image set, for
    ``innaudit list``; the provenance of the natural sets says which package files they are."""
    rows = [(b.name, b.summary, "") for b in BUILTINS.values()]
    rows += [(n.name, f"{n.summary} (default OOD set of RGB models)", n.provenance) for n in NATURAL.values()]
    return rows
