"""The repair's data: the training set it fine-tunes on, and the held-out split it prices on.

The held-out split is data the fine-tune never sees: ``--test SPEC`` when given; else the
model's own test split when its domain names a built-in set (``digits:test`` for a model trained
on ``digits:train``); else a seeded 20 % of the training data, taken out of what the fine-tune
draws from. The audits use the same held-out set as their in-distribution set, so the repair's
proof and its price are measured on the same samples.

A validation split, a seeded 10 % of what remains of the training data, is kept out of the
fine-tune's minibatches too: the fine-tune keeps the weights with the best objective on it
(:mod:`innaudit.remedies.finetune`), so the price split is never used to choose anything.

Labels (for supervised INNs): the built-in digits carry theirs; a file needs ``--labels`` (and
``--test-labels`` for a separate test file): integer class indices, one per sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError, UsageError, clean_text
from innaudit.core.seeding import stable_seed
from innaudit.data import Dataset, Role, array_dataset, default_data, resolve_dataset, split_name

__all__ = ["HELDOUT", "HOLDOUT_FRACTION", "MAX_TRAIN", "RepairData", "prepare_data"]

HOLDOUT_FRACTION = 0.2
"""Share of the training data held out for the price when no test split is known."""
VALIDATION_FRACTION = 0.1
"""Share of the (remaining) training data kept for choosing the fine-tune's weights."""
MAX_TRAIN = 200_000
"""Most training samples read (the fine-tune draws minibatches from them)."""
HELDOUT = "heldout"
"""The name of the held-out split cut from the training data, in the reports."""


@dataclass(frozen=True)
class RepairData:
    """Training and held-out samples (with labels when known) and how the audits name them."""

    train: Tensor
    train_labels: Tensor | None
    valid: Tensor
    valid_labels: Tensor | None
    heldout: Tensor
    heldout_labels: Tensor | None
    train_name: str
    heldout_name: str
    audit_data: str | None
    """The audits' ``data`` SPEC (None: the model's own test split)."""
    arrays: dict[str, Tensor] = field(default_factory=dict)
    """In-memory sets the audits' SPECs name (the held-out split cut from the training data)."""


def _dataset(value: Any, name: str, role: Role, domain: DataDomain, seed: int) -> Dataset:
    if isinstance(value, str):
        return resolve_dataset(value, role, domain, MAX_TRAIN, seed)
    return array_dataset(name, value, role, domain, MAX_TRAIN)


def _builtin_labels(spec: str, count: int) -> Tensor | None:
    """The labels of a built-in labelled set (``digits[:split]``), first ``count``."""
    base, _, split = split_name(spec)[1].partition(":")
    if base != "digits":
        return None
    from innaudit.data.digits import load_digits

    return torch.from_numpy(load_digits(split or "test")[1][:count]).long()


def _labels(value: Any, spec: Any, count: int, what: str) -> Tensor | None:
    """Labels given (array, tensor or file), else those of a built-in set, else None."""
    if value is None:
        return _builtin_labels(spec, count) if isinstance(spec, str) else None
    if isinstance(value, (str, os.PathLike)):
        from innaudit.safeio.arrays import read_array, split_file_spec

        named = split_file_spec(os.fspath(value))
        path, key = named if named is not None else (Path(value), None)
        value = read_array(path, key, count)
    array = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
    if array.ndim != 1 or len(array) < count or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"{what} has shape {tuple(array.shape)} and dtype {array.dtype}; expected {count} integer "
            "class indices, one per sample"
        )
    return torch.from_numpy(np.ascontiguousarray(array[:count])).long()


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and split_name(a)[1].strip() == split_name(b)[1].strip()


def prepare_data(
    domain: DataDomain,
    data: Any,
    test: Any = None,
    labels: Any = None,
    test_labels: Any = None,
    seed: int = 0,
) -> RepairData:
    """Read the training data and choose the held-out split (see the module docstring).

    Raises:
        UsageError: the test set is the training set.
        DataError: a set or its labels cannot be read or do not fit the model.
    """
    if data is None:
        raise UsageError("repair needs the training data: --data SPEC (the set the model was trained on)")
    train_set = _dataset(data, "train", Role.IN_DISTRIBUTION, domain, seed)
    train = train_set.make(0, train_set.size)
    train_labels = _labels(labels, data, len(train), "--labels")
    default = default_data(domain)
    if test is None and (default is None or _same(default, data)):
        (train, train_labels), (heldout, heldout_labels) = _split(
            train, train_labels, HOLDOUT_FRACTION, seed, "holdout"
        )
        count = len(heldout)
        heldout_name, audit_data = f"{HELDOUT} ({count} of {train_set.name}, never fine-tuned on)", HELDOUT
        arrays = {HELDOUT: heldout}
    else:
        chosen = test if test is not None else default
        if _same(chosen, data):
            raise UsageError(
                f"--test {clean_text(chosen, 80)!r} is the training data; the price must be measured on data the "
                "fine-tune never saw"
            )
        held = _dataset(chosen, "test", Role.IN_DISTRIBUTION, domain, seed)
        heldout = held.make(0, held.size)
        heldout_labels = _labels(test_labels, chosen, len(heldout), "--test-labels")
        heldout_name = held.name
        audit_data = chosen if isinstance(chosen, str) else HELDOUT
        arrays = {} if isinstance(chosen, str) else {HELDOUT: heldout}
    (train, train_labels), (valid, valid_labels) = _split(train, train_labels, VALIDATION_FRACTION, seed, "validation")
    return RepairData(
        train,
        train_labels,
        valid,
        valid_labels,
        heldout,
        heldout_labels,
        train_set.name,
        heldout_name,
        audit_data,
        arrays,
    )


Split = tuple[tuple[Tensor, Tensor | None], tuple[Tensor, Tensor | None]]


def _split(x: Tensor, labels: Tensor | None, fraction: float, seed: int, purpose: str) -> Split:
    """``(kept, taken)``: a seeded ``fraction`` of the samples taken out, the rest kept."""
    if len(x) < 10:
        raise DataError(f"the training data has {len(x)} samples; expected at least 10")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(stable_seed(seed, "repair", purpose)))
    count = max(1, round(fraction * len(x)))
    taken, kept = order[:count], order[count:]
    pick = (lambda index: labels[index]) if labels is not None else (lambda index: None)
    return (x[kept], pick(kept)), (x[taken], pick(taken))
