"""nflows models audited through the CLI: the round trip equals nflows' own, blocks, weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("nflows", reason="nflows is not installed (pip install innaudit[adapters])")

from innaudit.domain import DataDomain  # noqa: E402
from innaudit.loading import load_model  # noqa: E402
from tests.adapters.helpers import (assert_matches, audit, factory, factory_module,  # noqa: E402
                                    hand_errors, roundtrip_metrics, save_weights, write_inputs)

LIB = "nflows"


def _hand(flow: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    flow.eval()
    t = flow._transform
    return hand_errors(x, lambda u: t(u)[0], lambda u: t.inverse(u)[0])


def test_stable_flow_matches_nflows_and_passes(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    code, report, _ = audit(tmp_path, factory(LIB), data)
    assert code == 0 and report["target"]["library"] == "nflows"
    assert_matches(roundtrip_metrics(report), _hand(factory_module(LIB).build(), x))


def test_unstable_coupling_fails_with_nflows_error(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    code, report, _ = audit(tmp_path, factory(LIB, "build_unstable"), data)
    metrics = roundtrip_metrics(report)
    assert code == 1 and metrics["rel_error_l2"]["max"] > 1e-2
    assert_matches(metrics, _hand(factory_module(LIB).build_unstable(), x))


def test_blocks_are_the_composite_transforms(tmp_path: Path) -> None:
    x = write_inputs(tmp_path)[1]
    model = load_model(factory(LIB, "build_unstable"),
                       fallback_domain=lambda: DataDomain(shape=(4,), low=-4.0, high=4.0)).model
    blocks = model.blocks()
    assert [type(b.module).__name__ for b in blocks] == ["AffineCouplingTransform", "ReversePermutation"] * 2
    z = x
    for b in blocks:
        z = b.forward(z)
    torch.testing.assert_close(z, model.forward(x))
    assert float((blocks[1].inverse(blocks[1].forward(x)) - x).abs().max()) == 0.0


def test_weights_pt_and_safetensors_load_into_the_factory(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    unstable = factory_module(LIB).build_unstable()
    for weights in save_weights(unstable, tmp_path, "unstable"):
        code, report, _ = audit(tmp_path, factory(LIB), data, "--weights", weights)
        assert code == 1, weights
        assert_matches(roundtrip_metrics(report), _hand(unstable, x))
