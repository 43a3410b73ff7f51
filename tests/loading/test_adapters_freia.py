"""FrEIA specifics: graph INN blocks, blocks that localize the unstable couplings, conditions.

The round trip, the failing unstable model and weights files: ``test_adapters.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.adapters.helpers import CASES

CASES["freia"].require()

from innaudit.model.contract import InverseKind, LogDetKind  # noqa: E402
from tests.adapters.helpers import (  # noqa: E402
    assert_blocks_compose,
    assert_condition_required,
    assert_matches,
    audit,
    factory,
    factory_module,
    hand_freia,
    load,
    roundtrip_metrics,
    write_inputs,
)

LIB = "freia"


def test_graph_inn_matches_and_has_blocks(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    code, report, _ = audit(tmp_path, factory(LIB, "build_graph"), data)
    assert code == 0
    assert_matches(roundtrip_metrics(report), hand_freia(factory_module(LIB).build_graph(), x))
    model = load(LIB, "build_graph")
    names = [b.info.architecture for b in model.blocks()]
    assert names == ["RNVPCouplingBlock[0]", "PermuteRandom[1]", "RNVPCouplingBlock[2]"]
    assert_blocks_compose(model, x)


def test_blocks_localize_the_unstable_couplings(tmp_path: Path) -> None:
    model = load(LIB, "build_unstable")
    assert model.info.inverse_kind is InverseKind.ANALYTIC and model.info.log_det_kind is LogDetKind.EXACT
    x = write_inputs(tmp_path)[1]
    errors = [float((b.inverse(b.forward(x)) - x).norm(dim=1).max()) for b in model.blocks()]
    assert [type(b.module).__name__ for b in model.blocks()][::2] == ["GLOWCouplingBlock"] * 2
    assert max(errors[0], errors[2]) > 1e-3 and errors[1] == errors[3] == 0.0  # permutations are exact


def test_conditional_network_takes_the_condition(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    inn = factory_module(LIB).build_conditional()
    code, report, _ = audit(tmp_path, factory(LIB, "build_conditional"), data, "--condition", "constant:0.5,-1")
    assert code == 0 and report["target"]["condition"]["rows"] == 1
    c = torch.tensor([[0.5, -1.0]]).expand(len(x), 2)
    assert_matches(roundtrip_metrics(report), hand_freia(inn, x, [c]))
    rows = np.random.default_rng(1).standard_normal((len(x), 2)).astype(np.float32)
    np.save(tmp_path / "c.npy", rows)
    code, report, _ = audit(tmp_path, factory(LIB, "build_conditional"), data, "--condition", tmp_path / "c.npy")
    assert_matches(roundtrip_metrics(report), hand_freia(inn, x, [torch.from_numpy(rows)]))
    assert_condition_required(LIB, data)
