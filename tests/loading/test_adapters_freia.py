"""FrEIA models audited through the CLI: the round trip equals FrEIA's own, blocks, conditions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("FrEIA", reason="FrEIA is not installed (pip install innaudit[adapters])")

from innaudit.loading import load_model  # noqa: E402
from innaudit.model import InverseKind, LogDetKind  # noqa: E402
from tests.adapters.helpers import (assert_matches, audit, factory, factory_module,  # noqa: E402
                                    hand_errors, roundtrip_metrics, save_weights, write_inputs)

LIB = "freia"


def _hand(inn: torch.nn.Module, x: torch.Tensor, c: list[torch.Tensor] | None = None) -> torch.Tensor:
    inn.eval()
    return hand_errors(x, lambda t: inn(t, c=c)[0], lambda t: inn(t, c=c, rev=True)[0])


def test_stable_sequence_inn_matches_freia_and_passes(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    code, report, _ = audit(tmp_path, factory(LIB), data)
    assert code == 0
    assert report["target"]["library"] == "FrEIA"
    assert_matches(roundtrip_metrics(report), _hand(factory_module(LIB).build(), x))


def test_unstable_coupling_fails_with_freia_error(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    code, report, _ = audit(tmp_path, factory(LIB, "build_unstable"), data)
    metrics = roundtrip_metrics(report)
    assert code == 1 and metrics["rel_error_l2"]["max"] > 1e-2
    assert_matches(metrics, _hand(factory_module(LIB).build_unstable(), x))


def test_graph_inn_matches_and_has_blocks(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    code, report, _ = audit(tmp_path, factory(LIB, "build_graph"), data)
    assert code == 0
    assert_matches(roundtrip_metrics(report), _hand(factory_module(LIB).build_graph(), x))
    model = load_model(factory(LIB, "build_graph"), fallback_domain=lambda: _domain()).model
    names = [b.info.architecture for b in model.blocks()]
    assert names == ["RNVPCouplingBlock[0]", "PermuteRandom[1]", "RNVPCouplingBlock[2]"]
    _composes(model, x)


def _domain():  # noqa: ANN202
    from innaudit.domain import DataDomain

    return DataDomain(shape=(4,), low=-4.0, high=4.0)


def _composes(model, x: torch.Tensor) -> None:  # noqa: ANN001
    """Running the blocks one after the other gives the whole model's forward and log-det."""
    z, ld = x, torch.zeros(len(x))
    for block in model.blocks():
        z, block_ld = block.forward_and_log_det(z)
        ld = ld + block_ld
    whole, whole_ld = model.forward_and_log_det(x)
    torch.testing.assert_close(z, whole)
    torch.testing.assert_close(ld, whole_ld)


def test_blocks_localize_the_unstable_couplings(tmp_path: Path) -> None:
    model = load_model(factory(LIB, "build_unstable"), fallback_domain=_domain).model
    assert model.info.inverse_kind is InverseKind.ANALYTIC and model.info.log_det_kind is LogDetKind.EXACT
    x = write_inputs(tmp_path)[1]
    errors = [float((b.inverse(b.forward(x)) - x).norm(dim=1).max()) for b in model.blocks()]
    assert [type(b.module).__name__ for b in model.blocks()][::2] == ["GLOWCouplingBlock"] * 2
    assert max(errors[0], errors[2]) > 1e-3 and errors[1] == errors[3] == 0.0  # permutations are exact


def test_weights_pt_and_safetensors_load_into_the_factory(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    unstable = factory_module(LIB).build_unstable()
    for weights in save_weights(unstable, tmp_path, "unstable"):
        code, report, _ = audit(tmp_path, factory(LIB), data, "--weights", weights)
        assert code == 1, weights
        assert report["target"]["weights"] == str(weights)
        assert_matches(roundtrip_metrics(report), _hand(unstable, x))


def test_conditional_network_takes_the_condition(tmp_path: Path, run_cli) -> None:  # noqa: ANN001
    import numpy as np

    data, x = write_inputs(tmp_path)
    inn = factory_module(LIB).build_conditional()
    code, report, _ = audit(tmp_path, factory(LIB, "build_conditional"), data, "--condition", "constant:0.5,-1")
    assert code == 0 and report["target"]["condition"]["rows"] == 1
    c = torch.tensor([[0.5, -1.0]]).expand(len(x), 2)
    assert_matches(roundtrip_metrics(report), _hand(inn, x, [c]))
    rows = np.random.default_rng(1).standard_normal((len(x), 2)).astype(np.float32)
    np.save(tmp_path / "c.npy", rows)
    code, report, _ = audit(tmp_path, factory(LIB, "build_conditional"), data, "--condition", tmp_path / "c.npy")
    assert_matches(roundtrip_metrics(report), _hand(inn, x, [torch.from_numpy(rows)]))
    missing = run_cli("run", factory(LIB, "build_conditional"), "--data", data, "--audit", "roundtrip")
    assert missing.code == 2 and "--condition" in missing.stderr_lines[-1]
