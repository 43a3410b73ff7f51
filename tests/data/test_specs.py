"""Data SPECs: built-ins follow the paper's conventions; files are checked before any audit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError
from innaudit.data import Role, domain_from_file, resolve_dataset, split_name
from innaudit.data.digits import DIGITS_DOMAIN, load_digits

UNIT = DataDomain(shape=(1, 8, 8), low=0.0, high=1.0, levels=17, name="digits")
GLOW = DataDomain(shape=(3, 4, 4), low=-0.5, high=0.5)


def _all(spec: str, domain: DataDomain = UNIT, n: int = 2000, seed: int = 0) -> torch.Tensor:
    ds = resolve_dataset(spec, Role.OOD, domain, n, seed)
    return torch.cat(list(ds.batches(333)))


def test_noise_sets_follow_the_paper_clipping_in_both_ranges() -> None:
    for domain, lo, hi in ((UNIT, 0.01, 0.99), (GLOW, -0.49, 0.49)):
        u, g = _all("uniform", domain), _all("gaussian", domain)
        assert u.shape == (2000, *domain.shape)
        assert float(u.min()) >= lo - 1e-7 and float(u.max()) <= hi + 1e-7
        assert float(g.min()) == pytest.approx(lo) and float(g.max()) == pytest.approx(hi)
        # N(0, 1) over a width-1 range clips about 62% of the values at the bounds
        clipped = float(((g <= lo + 1e-7) | (g >= hi - 1e-7)).double().mean())
        assert 0.55 < clipped < 0.68
        r = _all("rademacher", domain)
        assert set(torch.unique(r).tolist()) == {domain.low, domain.high}


def test_random_sets_are_reproducible_and_independent_of_batch_size() -> None:
    ds = resolve_dataset("gaussian", Role.OOD, UNIT, 1000, 7)
    assert torch.equal(torch.cat(list(ds.batches(100))), torch.cat(list(ds.batches(100))))
    assert not torch.equal(_all("gaussian", seed=7), _all("gaussian", seed=8))


def test_digits_are_the_shipped_17_level_images() -> None:
    x, y = load_digits("test")
    assert x.shape == (360, 1, 8, 8) and len(load_digits("train")[0]) == 1437
    assert set(np.unique(np.round(x * 17)).astype(int)) <= set(range(17))
    assert sorted(set(y.tolist())) == list(range(10))
    ds = resolve_dataset("digits:test", Role.IN_DISTRIBUTION, DIGITS_DOMAIN, 10000, 0)
    assert ds.size == 360
    flat = resolve_dataset("digits", Role.IN_DISTRIBUTION, DataDomain(shape=(64,)), 50, 0)
    assert flat.first(50).shape == (50, 64)


def test_constant_and_names() -> None:
    assert split_name("far=y.npy") == ("far", "y.npy")
    assert split_name("uniform") == (None, "uniform")
    ds = resolve_dataset("c=constant:0.25", Role.OOD, UNIT, 100, 0)
    assert ds.name == "c" and torch.all(ds.first(1) == 0.25)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("unifrom", "did you mean 'uniform'"),
        ("constant:abc", "is not a number"),
        ("digits:valid", "is not a split"),
        ("nothere.npy", "does not exist"),
    ],
)
def test_bad_specs_are_one_clear_error(spec: str, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        resolve_dataset(spec, Role.OOD, UNIT, 10, 0)


def test_files_are_shape_checked_and_may_be_flat(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.random.default_rng(0).random((20, 64), dtype=np.float32))
    np.save(tmp_path / "bad.npy", np.zeros((20, 65), dtype=np.float32))
    np.savez(tmp_path / "two.npz", a=np.zeros((5, 64)), b=np.ones((5, 64)))
    torch.save({"images": torch.zeros(4, 1, 8, 8)}, tmp_path / "t.pt")
    ds = resolve_dataset(str(tmp_path / "flat.npy"), Role.IN_DISTRIBUTION, UNIT, 10, 0)
    assert ds.size == 10 and ds.first(3).shape == (3, 1, 8, 8)
    assert ds.transform == ("unflattened row-major: (64,) -> (1, 8, 8) (one channel)",)
    with pytest.raises(DataError, match="65"):
        resolve_dataset(str(tmp_path / "bad.npy"), Role.OOD, UNIT, 10, 0)
    with pytest.raises(DataError, match="holds several arrays"):
        resolve_dataset(str(tmp_path / "two.npz"), Role.OOD, UNIT, 10, 0)
    assert torch.all(resolve_dataset(f"{tmp_path / 'two.npz'}:b", Role.OOD, UNIT, 10, 0).first(5) == 1)
    assert resolve_dataset(str(tmp_path / "t.pt"), Role.OOD, UNIT, 10, 0).size == 4


def test_non_finite_inputs_and_pickled_arrays_are_refused(tmp_path: Path) -> None:
    bad = np.zeros((4, 64), dtype=np.float32)
    bad[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match="NaN/Inf"):
        resolve_dataset(str(tmp_path / "nan.npy"), Role.OOD, UNIT, 10, 0)
    np.save(tmp_path / "obj.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot be read"):
        resolve_dataset(str(tmp_path / "obj.npy"), Role.OOD, UNIT, 10, 0)


def test_domain_from_a_file(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.linspace(-2, 3, 40, dtype=np.float32).reshape(10, 4))
    domain = domain_from_file(f"in={tmp_path / 'x.npy'}")
    assert domain.shape == (4,) and domain.low == -2 and domain.high == 3
