"""zuko specifics: conditions, blocks and inverse kinds, the domain from flow attributes.

The round trip, the failing unstable model and weights files: ``test_adapters.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.adapters.helpers import CASES

CASES["zuko"].require()

from innaudit.loading import load_model  # noqa: E402
from innaudit.model.contract import InverseKind  # noqa: E402
from tests.adapters.helpers import (  # noqa: E402
    DOMAIN,
    assert_blocks_compose,
    assert_condition_required,
    assert_matches,
    audit,
    factory,
    factory_module,
    hand_zuko,
    load,
    roundtrip_metrics,
    write_inputs,
)

LIB = "zuko"


def test_conditional_flow_with_a_condition_file(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    rows = np.random.default_rng(3).standard_normal((len(x), 2)).astype(np.float32)
    np.save(tmp_path / "c.npy", rows)
    code, report, _ = audit(tmp_path, factory(LIB, "build_conditional"), data, "--condition", tmp_path / "c.npy")
    assert code == 0 and report["target"]["condition"]["rows"] == len(x)
    flow = factory_module(LIB).build_conditional()
    assert_matches(roundtrip_metrics(report), hand_zuko(flow, x, torch.from_numpy(rows)))
    assert_condition_required(LIB, data)


def test_blocks_and_kinds(tmp_path: Path) -> None:
    import zuko

    from innaudit.loading.adapters import adapt_object

    x = write_inputs(tmp_path)[1]
    model = load(LIB)
    assert model.info.inverse_kind is InverseKind.ANALYTIC and len(model.blocks()) == 3
    assert_blocks_compose(model, x)
    naf = adapt_object(zuko.flows.NAF(4, transforms=1, hidden_features=(8,)), DOMAIN, {}).model
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
