"""Multi-scale models of the libraries, audited with no glue: normflows' Glow example
(``MultiscaleFlow``) and a Glow in the rosinality glow-pytorch convention.

Each round trip is recomputed with the model's own API on the very inputs the audit read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import innaudit
from innaudit.core.results import Status
from innaudit.core.stats import per_sample_norm
from innaudit.loading import load_model
from tests.multiscale import normflows_glow, rosinality_glow

pytest.importorskip("normflows")

HERE = Path(__file__).resolve().parent
N = 48


def _inputs(folder: Path, seed: int = 0) -> tuple[Path, torch.Tensor]:
    x = np.random.default_rng(seed).uniform(0, 1, (N, *normflows_glow.SHAPE)).astype(np.float32)
    path = folder / "x.npy"
    np.save(path, x)
    return path, torch.from_numpy(x)


def _metrics(report: innaudit.Report, audit: str, dataset: str = "x") -> dict[str, Any]:
    entry = next(a for a in report.audits if a.id == audit)
    return dict(next(r for r in entry.results if r.dataset == dataset).metrics)


def _roundtrip(model: str, data: Path, **cfg: Any) -> innaudit.Report:
    config = {"audits": ["roundtrip"], "samples": N, "batch_size": N, "ood": ["gaussian"], **cfg}
    return innaudit.audit(model, data=str(data), config=config)


def _assert_same_errors(metrics: dict[str, Any], errors: torch.Tensor) -> None:
    finite = errors[torch.isfinite(errors)].numpy()
    for key, value in (("max", finite.max()), ("median", np.median(finite))):
        assert float(metrics["error_l2"][key]) == pytest.approx(float(value), rel=1e-6, abs=1e-12)


def test_normflows_glow_round_trip_equals_normflows_own(tmp_path: Path) -> None:
    data, x = _inputs(tmp_path)
    report = _roundtrip(f"{HERE / 'normflows_glow.py'}:build", data)
    metrics = _metrics(report, "roundtrip")
    flow = normflows_glow.build()
    with torch.no_grad():
        back, _ = flow.forward_and_log_det(flow.inverse_and_log_det(x.clone())[0])
    _assert_same_errors(metrics, per_sample_norm(back - x))
    assert metrics["nonfinite_fraction"] == 0.0 and set(metrics["levels"]) == {"0", "1"}
    assert report.target["latent_levels"][0] == {"path": "0", "shape": [24, 2, 2]}


def test_blown_up_glow_fails_with_normflows_own_nonfinite_share(tmp_path: Path) -> None:
    data, x = _inputs(tmp_path, seed=1)
    report = _roundtrip(f"{HERE / 'normflows_glow.py'}:build_unstable", data)
    metrics = _metrics(report, "roundtrip")
    flow = normflows_glow.build_unstable()
    with torch.no_grad():
        z, _ = flow.inverse_and_log_det(x.clone())
        back, _ = flow.forward_and_log_det(z)
    bad = ~torch.isfinite(back.flatten(1)).all(1)
    for level in z:
        bad |= ~torch.isfinite(level.flatten(1)).all(1)
    assert 0 < float(bad.double().mean()) == metrics["nonfinite_fraction"]
    assert report.exit_code == 1
    per_level = [float((~torch.isfinite(level.flatten(1)).all(1)).double().mean()) for level in z]
    assert [metrics["levels"][str(i)]["nonfinite_fraction"] for i in range(2)] == per_level


def test_normflows_glow_blocks_walk_levels_in_data_to_latent_order() -> None:
    model = load_model(f"{HERE / 'normflows_glow.py'}:build").model
    x = torch.rand(5, *normflows_glow.SHAPE)
    whole = model.forward(x)
    names = [b.info.architecture for b in model.blocks()]
    assert names[0] == "level 1 / block 0: Squeeze" and names[-1] == "level 0 / block 2: GlowBlock"
    assert "level 1 / block 3: Merge" in names
    h, factored = x, {}
    for block in model.blocks():
        y = block.forward(h)
        if block.latent is not None and not block.latent.single:
            factored[int(block.info.architecture.split()[1])] = block.latent.leaf(y, 1)
        h = block.carry(y)
    factored[0] = h
    torch.testing.assert_close(model.latent.unflatten(whole)[1], factored[1])
    torch.testing.assert_close(model.latent.unflatten(whole)[0], factored[0])


def test_normflows_priors_sample_at_the_temperature_without_touching_global_rng() -> None:
    model = load_model(f"{HERE / 'normflows_glow.py'}:build").model
    model.forward(torch.rand(1, *normflows_glow.SHAPE))
    eps = torch.zeros(400, model.latent.dim)
    state = torch.get_rng_state()
    cold = model.sample_prior(eps, 0.5, torch.Generator().manual_seed(3))
    again = model.sample_prior(eps, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(cold, again)
    hot = model.sample_prior(eps, 1.0, torch.Generator().manual_seed(3))
    assert float(cold.std()) == pytest.approx(0.5 * float(hot.std()), rel=1e-4)  # zero-mean priors


def test_normflows_glow_runs_every_default_audit_without_error(tmp_path: Path) -> None:
    data, _ = _inputs(tmp_path)
    report = innaudit.audit(
        f"{HERE / 'normflows_glow.py'}:build",
        data=str(data),
        config={
            "samples": 6,
            "batch_size": 6,
            "ood": ["gaussian"],
            "attack": {"samples": 1},
            "layers": {"samples": 6, "worst": 1},
        },
    )
    assert not report.errors
    statuses = {a.id: a.status for a in report.audits}
    assert Status.ERROR not in statuses.values(), statuses
    assert statuses["roundtrip"] is Status.PASS and statuses["layers"] is Status.PASS
    series = next(a for a in report.audits if a.id == "layers").results[0].series["blocks"]
    assert series["name"][0].startswith("0:level 1 / block 0")


def test_rosinality_convention_round_trips_with_no_glue_and_no_warning(tmp_path: Path) -> None:
    data, x = _inputs(tmp_path, seed=2)
    report = _roundtrip(f"{HERE / 'rosinality_glow.py'}:build", data)
    assert report.warnings == () and report.exit_code == 0
    glow = rosinality_glow.build()
    with torch.no_grad():
        back = glow.reverse(glow(x.clone())[2], reconstruct=True)
    _assert_same_errors(_metrics(report, "roundtrip"), per_sample_norm(back - x))
    model = load_model(f"{HERE / 'rosinality_glow.py'}:build").model
    assert model.info.source["library"] == "rosinality"
    assert [b.info.architecture for b in model.blocks()] == ["level 0 / block 0: Block", "level 1 / block 0: Block"]


def test_freia_graph_with_two_output_nodes_round_trips_as_freia_does(tmp_path: Path) -> None:
    from tests.multiscale import freia_multiscale

    data, x = _inputs(tmp_path, seed=3)
    report = _roundtrip(f"{HERE / 'freia_multiscale.py'}:build", data)
    inn = freia_multiscale.build()
    with torch.no_grad():
        z, _ = inn(x.clone())
        back, _ = inn(list(z), rev=True)
    metrics = _metrics(report, "roundtrip")
    _assert_same_errors(metrics, per_sample_norm(back - x))
    assert report.target["latent_levels"] == [{"path": "0", "shape": [6, 4, 4]}, {"path": "1", "shape": [6, 4, 4]}]


def test_nflows_multiscale_transform_is_cut_into_its_levels(tmp_path: Path) -> None:
    from tests.multiscale import nflows_multiscale

    data, x = _inputs(tmp_path, seed=4)
    report = _roundtrip(f"{HERE / 'nflows_multiscale.py'}:build", data)
    transform = nflows_multiscale.build()
    with torch.no_grad():
        back, _ = transform.inverse(transform(x.clone())[0])
    metrics = _metrics(report, "roundtrip")
    _assert_same_errors(metrics, per_sample_norm(back - x))
    assert set(metrics["levels"]) == {"0", "1"}
    model = load_model(f"{HERE / 'nflows_multiscale.py'}:build").model
    whole = model.forward(x)
    h = x
    for block in model.blocks():
        h = block.carry(block.forward(h))
    torch.testing.assert_close(h, model.latent.unflatten(whole)[1])
