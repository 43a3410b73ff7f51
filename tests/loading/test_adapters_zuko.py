"""zuko flows audited through the CLI: ``flow().transform`` and ``.inv``, conditions, blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("zuko", reason="zuko is not installed (pip install innaudit[adapters])")

from innaudit.domain import DataDomain  # noqa: E402
from innaudit.loading import load_model  # noqa: E402
from innaudit.model import InverseKind  # noqa: E402
from tests.adapters.helpers import (assert_matches, audit, factory, factory_module,  # noqa: E402
                                    hand_errors, roundtrip_metrics, save_weights, write_inputs)

LIB = "zuko"


def _hand(flow: torch.nn.Module, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    flow.eval()
    t = flow(c).transform
    return hand_errors(x, t, t.inv)


def test_stable_flow_matches_zuko_and_passes(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    code, report, _ = audit(tmp_path, factory(LIB), data)
    assert code == 0 and report["target"]["library"] == "zuko"
    assert_matches(roundtrip_metrics(report), _hand(factory_module(LIB).build(), x))


def test_unstable_coupling_fails_with_zuko_error(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    code, report, _ = audit(tmp_path, factory(LIB, "build_unstable"), data)
    metrics = roundtrip_metrics(report)
    assert code == 1 and metrics["rel_error_l2"]["max"] > 1e-2
    assert_matches(metrics, _hand(factory_module(LIB).build_unstable(), x))


def test_weights_pt_and_safetensors_load_into_the_factory(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    unstable = factory_module(LIB).build_unstable()
    for weights in save_weights(unstable, tmp_path, "unstable"):
        code, report, _ = audit(tmp_path, factory(LIB), data, "--weights", weights)
        assert code == 1, weights
        assert_matches(roundtrip_metrics(report), _hand(unstable, x))


def test_conditional_flow_with_a_condition_file(tmp_path: Path, run_cli) -> None:  # noqa: ANN001
    data, x = write_inputs(tmp_path)
    rows = np.random.default_rng(3).standard_normal((len(x), 2)).astype(np.float32)
    np.save(tmp_path / "c.npy", rows)
    code, report, _ = audit(tmp_path, factory(LIB, "build_conditional"), data, "--condition", tmp_path / "c.npy")
    assert code == 0 and report["target"]["condition"]["rows"] == len(x)
    flow = factory_module(LIB).build_conditional()
    assert_matches(roundtrip_metrics(report), _hand(flow, x, torch.from_numpy(rows)))
    missing = run_cli("run", factory(LIB, "build_conditional"), "--data", data, "--audit", "roundtrip")
    assert missing.code == 2 and "--condition" in missing.stderr_lines[-1]


def test_blocks_and_kinds(tmp_path: Path) -> None:
    import zuko

    x = write_inputs(tmp_path)[1]
    domain = DataDomain(shape=(4,), low=-4.0, high=4.0)
    model = load_model(factory(LIB), fallback_domain=lambda: domain).model
    assert model.info.inverse_kind is InverseKind.ANALYTIC and len(model.blocks()) == 3
    z = x
    for b in model.blocks():
        z = b.forward(z)
    torch.testing.assert_close(z, model.forward(x))
    from innaudit.loading.adapters import adapt_object

    naf = adapt_object(zuko.flows.NAF(4, transforms=1, hidden_features=(8,)), domain, {}).model
    assert naf.info.inverse_kind is InverseKind.ITERATIVE and naf.info.inverse_tolerance == 1e-6



def test_domain_from_attributes_set_by_the_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --data, ``input_shape`` / ``data_range`` set on the flow give the domain."""
    import sys
    import types

    flow = factory_module(LIB).build()
    flow.input_shape, flow.data_range = (4,), (-3.0, 3.0)
    holder = types.ModuleType("zuko_attr_factory")
    holder.build = lambda: flow  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "zuko_attr_factory", holder)
    domain = load_model("zuko_attr_factory:build").model.info.domain
    assert domain.shape == (4,) and (domain.low, domain.high) == (-3.0, 3.0)
