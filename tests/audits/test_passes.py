"""Shared passes: what one audit ran on a batch, the next reads, and the report does not change."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from innaudit.api import audit
from innaudit.audits.common import batch_units
from innaudit.audits.passes import SharedPasses, reader_rows
from innaudit.core.domain import DataDomain
from innaudit.loading import load_model
from innaudit.loading.adapt import adapt_module
from innaudit.model.contract import InverseKind
from tests.helpers import REPO

CHECKPOINT = REPO / "checkpoints" / "digits-affine.pt"
READERS = ["roundtrip", "precision", "layers", "logdet"]


class Counted(nn.Module):
    """``z = 2 x`` with its calls counted (forward and inverse, by rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.calls = {"forward": 0, "inverse": 0}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls["forward"] += len(x)
        return x * self.scale, torch.full((len(x),), 3 * float(torch.log(self.scale)))

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        self.calls["inverse"] += len(z)
        return z / self.scale


def _counted() -> tuple[Any, Counted]:
    module = Counted()
    return adapt_module(module, DataDomain(shape=(3,)), {"test": "counted"}), module


def test_a_pass_is_kept_and_read_once_for_an_equal_input_and_run_again_for_another() -> None:
    model, module = _counted()
    passes = SharedPasses({"precision": 8})
    x = torch.rand(4, 3)
    first = passes.view(model, "data", 0, 4)
    z = first.forward(x)
    back = first.inverse(z)
    again = passes.view(model, "data", 0, 4)
    assert again.forward(x.clone()) is z and again.inverse(z) is back
    assert module.calls == {"forward": 4, "inverse": 4} and passes.hits == 2
    other = x.clone()
    other[0, 0] += 1e-6  # one element differs: the kept pass is not this input's
    assert not torch.equal(passes.view(model, "data", 0, 4).forward(other), z)
    assert module.calls["forward"] == 8
    passes.view(model, "noise", 0, 4).forward(x)  # another set: another key
    assert module.calls["forward"] == 12


def test_nothing_is_kept_past_the_readers_rows_or_the_bound() -> None:
    model, module = _counted()
    x = torch.rand(4, 3)
    beyond = SharedPasses({"layers": 2})  # the batch 0:4 ends past the 2 rows a reader takes
    beyond.view(model, "data", 0, 4).forward(x)
    beyond.view(model, "data", 0, 4).forward(x)
    assert module.calls["forward"] == 8 and beyond.kept_bytes == 0
    small = SharedPasses({"layers": 4}, limit_bytes=x.numel() * 4)  # room for x, not for z as well
    small.view(model, "data", 0, 4).forward(x)
    small.view(model, "data", 0, 4).forward(x)
    assert module.calls["forward"] == 16 and small.kept_bytes == 0
    off = SharedPasses({"layers": 4}, limit_bytes=0)
    off.view(model, "data", 0, 4).forward(x)
    off.view(model, "data", 0, 4).forward(x)
    assert module.calls["forward"] == 24 and off.hits == 0


def test_the_log_det_comes_with_the_forward_pass_when_logdet_reads_the_batch() -> None:
    model, module = _counted()
    passes = SharedPasses({"logdet": 4})
    x = torch.rand(4, 3)
    z = passes.view(model, "data", 0, 4).forward(x)
    got, ld = passes.view(model, "data", 0, 4).forward_and_log_det(x)
    assert got is z and module.calls["forward"] == 4
    assert ld is not None and torch.allclose(ld, torch.full((4,), 3 * float(torch.log(torch.tensor(2.0)))))


def test_an_iterative_inverse_is_never_kept() -> None:
    model, module = _counted()
    model.info = replace(model.info, inverse_kind=InverseKind.ITERATIVE)
    passes = SharedPasses({"layers": 4})
    x = torch.rand(4, 3)
    z = passes.view(model, "data", 0, 4).forward(x)
    passes.view(model, "data", 0, 4).inverse(z)
    passes.view(model, "data", 0, 4).inverse(z)
    assert module.calls["inverse"] == 8


def test_batches_end_at_the_readers_rows_as_well() -> None:
    assert batch_units([300, 20], 100, (32, 64, 256)) == [
        (0, 0, 32),
        (0, 32, 64),
        (0, 64, 100),
        (0, 100, 200),
        (0, 200, 256),
        (0, 256, 300),
        (1, 0, 20),
    ]
    assert batch_units([300], 100) == [(0, 0, 100), (0, 100, 200), (0, 200, 300)]
    assert SharedPasses(reader_rows({"precision": {"samples": 256}, "layers": {"samples": 64}}, 100)).cuts == (64, 100)


def _timeless(report_json: str) -> dict[str, Any]:
    """The report without what changes from run to run (times)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("duration_s", "started_at")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(report_json))


def _rows_run(monkeypatch: pytest.MonkeyPatch, mib: str) -> tuple[str, int]:
    """The reading audits on digits-affine with the shared passes' bound at ``mib``: the report
    and the rows the model's forward ran on."""
    monkeypatch.setenv("INNAUDIT_SHARED_PASSES_MIB", mib)
    model = load_model(str(CHECKPOINT)).model
    rows = [0]
    model.module.register_forward_hook(lambda m, args, out: rows.__setitem__(0, rows[0] + len(args[0])))
    report = audit(
        model,
        data="uniform",
        ood=["gaussian"],
        audits=READERS,
        samples=300,
        batch_size=100,
        threads=1,
        config={"precision": {"prior": False}},
    )
    assert {a.id: a.status.value for a in report.audits if a.status.value == "error"} == {}
    return report.to_json(), rows[0]


def test_reuse_saves_the_readers_forward_passes_and_the_report_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    shared, shared_rows = _rows_run(monkeypatch, "256")
    alone, alone_rows = _rows_run(monkeypatch, "0")
    assert _timeless(shared) == _timeless(alone)
    # per set (uniform, gaussian): layers' 64 rows, logdet's 32, precision's float32 lane's 256
    assert alone_rows - shared_rows == 2 * (64 + 32 + 256)


def test_precision_alone_runs_without_the_others(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = run_cli("run", CHECKPOINT, "--audit", "precision", "--samples", "64", "-o", f"json={out}")
    assert result.code in (0, 1), result.stderr
    (precision,) = json.loads(out.read_text())["audits"]
    assert precision["id"] == "precision" and precision["status"] != "error"
    assert precision["results"][0]["metrics"]["float32"]["rel_error_l2"]["max"] < 1e-3
