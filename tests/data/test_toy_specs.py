"""2-D toy SPECs: the checkerboard's support, the grid's layout, regression targets, errors."""

from __future__ import annotations

import pytest
import torch

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError
from innaudit.data import Role, resolve_dataset
from innaudit.data.builtin import grid_axis, regression_targets
from innaudit.data.digits import DIGITS_DOMAIN

PLANE = DataDomain(shape=(2,), low=-4.0, high=4.0, name="checkerboard")


def test_checkerboard_lies_on_alternating_squares_of_side_2_in_the_box() -> None:
    x = resolve_dataset("checkerboard:test", Role.IN_DISTRIBUTION, PLANE, 5000, 0).first(5000)
    assert x.shape == (5000, 2) and float(x.abs().max()) <= 4.0
    parity = (torch.floor(x[:, 0] / 2) + torch.floor(x[:, 1] / 2)).remainder(2)
    assert torch.all(parity == 0), "every point sits on a 'black' square"
    counts = torch.histc(x[:, 0], bins=4, min=-4, max=4)
    assert float(counts.min()) > 1000, "x1 is uniform over the four columns"
    train = resolve_dataset("checkerboard:train", Role.IN_DISTRIBUTION, PLANE, 10, 0).first(10)
    assert not torch.equal(train, x[:10]), "train and test draws differ"


@pytest.mark.parametrize("spec,radius", [("two-moons", 4.5), ("rings", 3.6), ("regression2d", 6.5)])
def test_other_toys_are_planar_and_bounded(spec: str, radius: float) -> None:
    x = resolve_dataset(spec, Role.OOD, PLANE, 2000, 1).first(2000)
    assert x.shape == (2000, 2) and float(x.norm(dim=1).max()) < radius
    if spec == "rings":
        r = x.norm(dim=1)
        assert float(((r - r.round()).abs() < 0.4).double().mean()) > 0.99


def test_grid_is_row_major_over_x2_with_left_edges() -> None:
    ds = resolve_dataset("grid:-8,8,320", Role.OOD, PLANE, 200000, 0)
    assert ds.size == 320 * 320
    x = ds.first(640)
    axis = grid_axis(-8, 8, 320)
    assert float(axis[1] - axis[0]) == pytest.approx(0.05) and float(axis[-1]) == pytest.approx(7.95)
    assert torch.allclose(x[:320, 0], axis.float()) and torch.all(x[:320, 1] == -8)
    assert torch.allclose(x[320:640, 1], torch.full((320,), -7.95))


@pytest.mark.parametrize("spec", ["grid:1,0,3", "grid:0,1", "grid:a,b,c", "checkerboard:val"])
def test_bad_toy_arguments_are_one_line_errors(spec: str) -> None:
    with pytest.raises(DataError, match="expected"):
        resolve_dataset(spec, Role.OOD, PLANE, 10, 0)


def test_planar_sets_refuse_a_model_of_another_shape() -> None:
    with pytest.raises(DataError, match="2-D data set"):
        resolve_dataset("checkerboard", Role.OOD, DIGITS_DOMAIN, 10, 0)


def test_regression_targets_collapse_the_first_coordinate() -> None:
    x = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    assert torch.equal(regression_targets(x), torch.tensor([[0.0, 2.0], [0.0, 0.5]]))
