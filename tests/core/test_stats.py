"""The one home of the audits' numerics (core.stats, audits.common): known answers."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import torch

from innaudit.audits.base import AuditContext
from innaudit.audits.common import block_name, map_batches, set_progress
from innaudit.core.stats import (
    column_nan_max,
    min_median_max,
    nan_max,
    nan_min,
    relative_error,
    round_significant,
    significant,
    where_error_enters,
)


def test_relative_error_is_per_sample_and_floored() -> None:
    want = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    got = torch.tensor([[3.0, 4.5], [0.0, 1e-3]])
    rel = relative_error(got, want, floor=1e-2)
    assert rel.dtype == torch.float64 and rel.shape == (2,)
    assert rel[0].item() == pytest.approx(0.5 / 5.0)
    assert rel[1].item() == pytest.approx(1e-3 / 1e-2)  # ||want|| = 0: the floor divides


def test_where_the_error_enters_walks_back_from_the_output() -> None:
    assert where_error_enters([1e-9, 1e-3, 1e-9, 1e-9], 1e-6) == 1
    assert where_error_enters([1e-3, 1e-3, 1e-9], 1e-6) == 1  # the last block first
    assert where_error_enters([1e-9, math.nan, 1e-9], 1e-6) == 1  # NaN is off
    assert where_error_enters([1e-9, math.inf], 1e-6) == 1
    assert where_error_enters([1e-9, 1e-9], 1e-6) == -1
    per_sample = [np.array([1e-9, 1e-2]), None, np.empty(0), np.array([1e-9, 1e-9])]
    assert where_error_enters(per_sample, 1e-6) == 0  # None and empty are passed over


def test_summaries_count_inf_and_ignore_nan_as_documented() -> None:
    values = np.array([2.0, math.nan, math.inf, -1.0, 5.0])
    assert nan_max(values) == math.inf and nan_min(values) == -1.0
    assert math.isnan(nan_max(np.array([math.nan])))
    assert min_median_max(values) == {"min": -1.0, "median": 2.0, "max": 5.0}
    assert min_median_max(values, inf_counts=True) == {"min": -1.0, "median": 3.5, "max": math.inf}
    empty = min_median_max(np.array([math.nan]))
    assert all(math.isnan(v) for v in empty.values())


def test_column_max_ignores_nan_without_a_warning() -> None:
    rows = [np.array([1.0, math.nan, 3.0]), np.array([2.0, math.nan, math.inf])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = column_nan_max(rows)
    assert out[0] == 2.0 and math.isnan(out[1]) and out[2] == math.inf


def test_significant_digits_keep_nan_and_inf() -> None:
    assert significant([1.23456789, 98765.4321, math.inf], 5) == [1.2346, 98765.0, math.inf]
    assert significant(np.array([1.23456789]), 4) == [1.235]
    assert math.isnan(round_significant(math.nan))


def _context(batch_size: int) -> AuditContext:
    seen: list[Any] = []

    def one_process(units: list[Any], work: Any, paced: bool = False) -> list[Any]:
        seen.extend(units)
        return [work(u) for u in units]

    return cast(AuditContext, SimpleNamespace(batch_size=batch_size, map=one_process, progress=None, seen=seen))


def test_map_batches_cuts_runs_and_groups_every_set_and_reports_each_batch() -> None:
    ctx = _context(3)
    reported: list[tuple[int, int]] = []
    grouped = map_batches(ctx, [7, 0, 4], lambda unit: unit, progress=lambda i, n: reported.append((i, n)))
    assert grouped == [[(0, 0, 3), (0, 3, 6), (0, 6, 7)], [], [(2, 0, 3), (2, 3, 4)]]
    assert reported == [(0, 3), (0, 3), (0, 1), (2, 3), (2, 1)]
    assert map_batches(ctx, [5], lambda unit: unit[2] - unit[1], batch_size=2) == [[2, 2, 1]]


def test_set_progress_reports_running_totals_per_set() -> None:
    calls: list[tuple[str, int, int]] = []
    ctx = cast(AuditContext, SimpleNamespace(progress=lambda name, done, total: calls.append((name, done, total))))
    step = set_progress(ctx, ["a", "b"], [5, 2])
    step(0, 3), step(1, 2), step(0, 2)
    assert calls == [("a", 3, 5), ("b", 2, 2), ("a", 5, 5)]


def test_block_names_carry_index_and_architecture() -> None:
    block = SimpleNamespace(info=SimpleNamespace(architecture=None), module=torch.nn.Linear(2, 2))
    named = SimpleNamespace(info=SimpleNamespace(architecture="AffineCoupling"), module=torch.nn.Linear(2, 2))
    assert block_name(0, cast(Any, block)) == "0:Linear" and block_name(3, cast(Any, named)) == "3:AffineCoupling"
