"""normflows models audited through the CLI; normflows' forward is latent -> data, swapped here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("normflows", reason="normflows is not installed (pip install innaudit[adapters])")

from innaudit.domain import DataDomain  # noqa: E402
from innaudit.loading import load_model  # noqa: E402
from tests.adapters.helpers import (assert_matches, audit, factory, factory_module,  # noqa: E402
                                    hand_errors, roundtrip_metrics, save_weights, write_inputs)

LIB = "normflows"


def _hand(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return hand_errors(x, model.inverse, model.forward)  # data -> latent is normflows' inverse


def _domain() -> DataDomain:
    return DataDomain(shape=(4,), low=-4.0, high=4.0)


def test_stable_flow_matches_normflows_and_passes(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    code, report, _ = audit(tmp_path, factory(LIB), data)
    assert code == 0 and report["target"]["library"] == "normflows"
    assert_matches(roundtrip_metrics(report), _hand(factory_module(LIB).build(), x))


def test_direction_is_data_to_latent_with_normflows_log_det(tmp_path: Path) -> None:
    x = write_inputs(tmp_path)[1]
    nf_model = factory_module(LIB).build().eval()
    model = load_model(factory(LIB), fallback_domain=_domain).model
    z, ld = model.forward_and_log_det(x)
    with torch.no_grad():
        z_ref, ld_ref = nf_model.inverse_and_log_det(x)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(ld, ld_ref)
    assert len(model.blocks()) == 4
    assert type(model.blocks()[0].module).__name__ == "Permute"  # the last layer comes first


def test_unstable_coupling_fails(tmp_path: Path) -> None:
    data, _ = write_inputs(tmp_path)
    code, report, _ = audit(tmp_path, factory(LIB, "build_unstable"), data)
    metrics = roundtrip_metrics(report)
    assert code == 1 and metrics["nonfinite_fraction"] > 0  # exp(scale) overflows


def test_weights_pt_and_safetensors_load_into_the_factory(tmp_path: Path) -> None:
    data, _ = write_inputs(tmp_path)
    for weights in save_weights(factory_module(LIB).build_unstable(), tmp_path, "unstable"):
        code, report, _ = audit(tmp_path, factory(LIB), data, "--weights", weights)
        assert code == 1 and roundtrip_metrics(report)["nonfinite_fraction"] > 0, weights
