"""TorchScript archives (trusted only), .pt2 refusal, and the safetensors header pre-check."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from innaudit.core.errors import CorruptCheckpointError, LoadError
from innaudit.safeio.preflight import Limits
from tests.adapters.helpers import audit, roundtrip_metrics, write_inputs

DIM = 4
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


class _Scaled(nn.Module):
    """x -> x * s with chosen per-feature scales: round trip exact up to float32 rounding."""

    def __init__(self, scales: list[float]) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scales))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    @torch.jit.export
    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.scale


def _script(tmp_path: Path, scales: list[float]) -> Path:
    path = tmp_path / "flow.ts"
    torch.jit.script(_Scaled(scales)).save(str(path))
    return path


def test_torchscript_needs_trust_then_audits(tmp_path: Path, run_cli) -> None:
    data, x = write_inputs(tmp_path)
    archive = _script(tmp_path, [1.0, 2.0, 0.5, 3.0])
    refused = run_cli("run", archive, "--data", data, "--audit", "roundtrip")
    assert refused.code == 2 and "TorchScript" in refused.stderr and "--trust-checkpoint" in refused.stderr
    code, report, stderr = audit(tmp_path, str(archive), data, "--trust-checkpoint")
    assert code == 0 and report["target"]["library"] == "TorchScript"
    assert "warning" in stderr and "code" in stderr
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0])
    expected = ((x * scale) / scale - x).double().norm(dim=1)
    assert abs(roundtrip_metrics(report)["error_l2"]["max"] - float(expected.max())) < 1e-12


def test_torchscript_without_inverse_is_refused(tmp_path: Path, run_cli) -> None:
    data, _ = write_inputs(tmp_path)
    path = tmp_path / "fwd.ts"
    torch.jit.script(nn.Linear(DIM, DIM)).save(str(path))
    result = run_cli("run", path, "--data", data, "--trust-checkpoint")
    assert result.code == 2 and "inverse" in result.stderr_lines[-1]


def test_pt2_is_refused_with_and_without_trust(tmp_path: Path, run_cli) -> None:
    data, _ = write_inputs(tmp_path)
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(nn.Linear(DIM, DIM), (torch.randn(1, DIM),)), str(path))
    for extra in ((), ("--trust-checkpoint",)):
        result = run_cli("run", path, "--data", data, *extra)
        assert result.code == 2 and ".pt2" in result.stderr_lines[-1], extra
        assert "Traceback" not in result.stderr


def _safetensors(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_safetensors_header_checks(tmp_path: Path) -> None:
    pytest.importorskip("safetensors", reason="safetensors is not installed")
    from innaudit.loading.safetensors_io import MAX_HEADER_BYTES, read_safetensors

    good = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    tensors = read_safetensors(_safetensors(tmp_path / "ok.safetensors", good, bytes(8)))
    assert tensors["w"].tolist() == [0.0, 0.0]
    with pytest.raises(CorruptCheckpointError, match="declares 8 bytes"):  # shape vs offsets
        read_safetensors(
            _safetensors(
                tmp_path / "a.safetensors", {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)
            )
        )
    with pytest.raises(CorruptCheckpointError, match="trailing or missing"):  # polyglot tail
        read_safetensors(_safetensors(tmp_path / "b.safetensors", good, bytes(8) + b"\x80\x02tail"))
    with pytest.raises(CorruptCheckpointError, match="data section"):  # offsets past the end
        read_safetensors(_safetensors(tmp_path / "c.safetensors", good, bytes(4)))
    huge = tmp_path / "d.safetensors"
    huge.write_bytes(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}")
    with pytest.raises(LoadError, match="header"):
        read_safetensors(huge)
    dup = tmp_path / "e.safetensors"
    raw = b'{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    dup.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(4))
    with pytest.raises(CorruptCheckpointError, match="duplicate"):
        read_safetensors(dup)
    with pytest.raises(LoadError, match="budget"):
        read_safetensors(tmp_path / "ok.safetensors", Limits(max_bytes=4))
