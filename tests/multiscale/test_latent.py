"""The latent-structure seam: flatten/unflatten, output parsing, wildcard metric declarations,
and a list-latent linear map whose singular values are known."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import innaudit
from innaudit.audits import metric_table
from innaudit.core.domain import DataDomain
from innaudit.core.metrics import covers, declared
from innaudit.loading.adapt import adapt_module
from innaudit.model.latent import LatentStructure, LevelStats, split_output
from tests.audits.linear_models import Linear, log_spaced


def test_flatten_unflatten_is_exact_on_a_nested_structure() -> None:
    z = [torch.randn(3, 2, 2), {"a": torch.randn(3, 5), "b": (torch.randn(3, 1, 3),)}]
    structure = LatentStructure.of(z)
    assert structure.paths == ("0", "1.a", "1.b.0") and structure.dim == 4 + 5 + 3
    flat = structure.flatten(z)
    assert flat.shape == (3, 12)
    back = structure.unflatten(flat)
    assert torch.equal(back[0], z[0]) and torch.equal(back[1]["a"], z[1]["a"])
    assert isinstance(back[1]["b"], tuple) and torch.equal(back[1]["b"][0], z[1]["b"][0])
    assert torch.equal(structure.leaf(flat, 2), z[1]["b"][0])
    with pytest.raises(ValueError, match=r"\(batch, 12\)"):
        structure.unflatten(torch.zeros(3, 11))


def test_split_output_tells_log_det_from_levels() -> None:
    z, ld = torch.randn(4, 3), torch.randn(4)
    assert split_output((z, ld))[1] is ld
    levels = [torch.randn(4, 2, 2), torch.randn(4, 8)]
    assert split_output(levels) == (levels, None)
    structured, total = split_output((levels, ld))
    assert structured is levels and total is ld
    assert split_output(([torch.randn(4, 3)], 0))[1] == 0  # a constant log-det (a split)
    with pytest.raises(TypeError, match="expected a tensor"):
        split_output("z")


def test_level_stats_count_nonfinite_per_level() -> None:
    structure = LatentStructure.of([torch.zeros(4, 2), torch.zeros(4, 3)])
    flat = torch.ones(4, 5)
    flat[1, 0] = float("inf")
    flat[2, 4] = float("nan")
    flat[3, 3] = float("nan")
    stats = LevelStats(structure)
    stats.add(flat)
    m = stats.metrics()
    assert m["0"]["nonfinite_fraction"] == 0.25 and m["1"]["nonfinite_fraction"] == 0.5
    assert m["1"]["norm"]["max"] == pytest.approx(3**0.5)


def test_wildcard_declarations_cover_level_indices() -> None:
    assert covers("levels.*.nonfinite_fraction", "levels.3.nonfinite_fraction")
    assert covers("levels.*.norm", "levels.0.norm.max")
    assert not covers("levels.*.norm", "levels.0.1.norm")
    metric = declared(metric_table(), "roundtrip", "levels.2.nonfinite_fraction")
    assert metric is not None and metric.rate


class ListLinear(nn.Module):
    """``z = A x`` returned as two levels: ``z[:, :4]`` as 2x2 and the rest as a vector."""

    log_det_kind = "exact"

    def __init__(self, singular_values: Tensor) -> None:
        super().__init__()
        self.inner = Linear(singular_values)
        self.input_shape = self.inner.input_shape

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        z, ld = self.inner(x)
        return [z[:, :4].reshape(-1, 2, 2), z[:, 4:]], ld

    def inverse(self, z: list[Tensor]) -> Tensor:
        return self.inner.inverse(torch.cat([z[0].reshape(len(z[0]), -1), z[1]], 1))


def test_list_latent_linear_map_gives_back_its_singular_values() -> None:
    values = log_spaced(12, low=1e-2, high=1e1)
    model = adapt_module(ListLinear(values), DataDomain(shape=(12,)), {"test": "list-linear"})
    cfg = {
        "audits": ["roundtrip", "spectrum"],
        "samples": 8,
        "ood": ["gaussian"],
        "spectrum": {"samples": 8, "method": "exact"},
    }
    report = innaudit.audit(model, data="uniform", config=cfg)
    assert model.latent is not None and model.latent.shapes == ((2, 2), (8,))
    spectrum = next(a for a in report.audits if a.id == "spectrum").results[0].metrics
    assert spectrum["forward"]["sv_max"]["max"] == pytest.approx(1e1, rel=1e-2)
    assert spectrum["forward"]["sv_min"]["min"] == pytest.approx(1e-2, rel=1e-2)
    roundtrip = next(a for a in report.audits if a.id == "roundtrip").results[0].metrics
    assert set(roundtrip["levels"]) == {"0", "1"}
    assert roundtrip["levels"]["1"]["nonfinite_fraction"] == 0.0
    assert report.target["latent_levels"] == [{"path": "0", "shape": [2, 2]}, {"path": "1", "shape": [8]}]
