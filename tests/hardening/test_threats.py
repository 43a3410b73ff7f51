"""One fixture per threat of security.md section 5, each with its documented outcome.

Every fixture is built at test time; payloads only touch a marker file, which must never appear.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from innaudit import save_checkpoint, zoo
from innaudit.core.domain import DataDomain
from innaudit.core.errors import CorruptCheckpointError, LoadError, UnsafeCheckpointError
from innaudit.loading import load_model
from innaudit.safeio.preflight import Limits

CONFIG = {
    "shape": [4],
    "steps": 2,
    "hidden": 8,
    "coupling": "additive",
    "permutation": "reverse",
    "actnorm": False,
    "seed": 0,
}


@pytest.fixture()
def native(tmp_path: Path) -> Path:
    module = zoo.build("coupling-vector", CONFIG)
    return save_checkpoint(
        tmp_path / "tiny.pt", module, "coupling-vector", CONFIG, DataDomain(shape=(4,)), {"recipe": "test"}
    )


def _rezip(src: Path, dst: Path, compress: int, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", compress) as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info.filename))
        for name, data in (extra or {}).items():
            new.writestr(name, data)
    return dst


def test_compressed_zip_bomb_is_refused(native: Path, tmp_path: Path) -> None:
    prefix = zipfile.ZipFile(native).namelist()[0].split("/")[0]
    bomb = _rezip(native, tmp_path / "bomb.pt", zipfile.ZIP_DEFLATED, {f"{prefix}/data/999": b"\0" * (64 << 20)})
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(LoadError, match="zip bomb"):
        load_model(str(bomb), limits=Limits(max_bytes=256 << 20))


def test_declared_size_over_budget_is_refused_before_loading(native: Path) -> None:
    with pytest.raises(LoadError, match="budget"):
        load_model(str(native), limits=Limits(max_bytes=1000))


def test_a_flipped_byte_in_tensor_data_is_caught_by_the_crc(native: Path, tmp_path: Path) -> None:
    data = bytearray(native.read_bytes())
    with zipfile.ZipFile(native) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 16)
    head = info.header_offset
    name_len, extra_len = (int.from_bytes(data[head + i : head + i + 2], "little") for i in (26, 28))
    offset = head + 30 + name_len + extra_len + 4
    data[offset] ^= 0xFF
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="CRC"):
        load_model(str(flipped))


def test_a_file_saved_without_crcs_is_not_called_corrupt(tmp_path: Path) -> None:
    module = zoo.build("coupling-vector", CONFIG)
    torch.serialization.set_crc32_options(False)
    try:
        path = save_checkpoint(tmp_path / "nocrc.pt", module, "coupling-vector", CONFIG, DataDomain(shape=(4,)))
    finally:
        torch.serialization.set_crc32_options(True)
    with zipfile.ZipFile(path) as archive:
        assert all(i.CRC == 0 for i in archive.infolist() if i.file_size)
    assert load_model(str(path)).target["loader"] == "native"


def _raw_pickle(tmp_path: Path, name: str, obj: object) -> Path:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


def test_deep_nesting_and_reference_bombs_end_quickly(tmp_path: Path) -> None:

    deep: list = []
    node = deep
    for _ in range(400):  # torch.save itself recurses; 400 is past our depth cap of 200
        node.append([])
        node = node[0]
    level: list = [1]
    for _ in range(9):
        level = [level] * 10  # 10**9 leaves, 11 distinct objects
    for name, obj in (("deep.pt", deep), ("dag.pt", {"state_dict": level})):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        path = tmp_path / name
        path.write_bytes(buffer.getvalue())
        with pytest.raises(LoadError):  # 10**9 leaves: only an iterative walk that remembers ends
            load_model(str(path), limits=Limits(max_depth=200))


def test_the_walker_is_iterative_and_remembers_what_it_saw() -> None:
    from innaudit.safeio.preflight import check_structure

    deep: list = []
    node = deep
    for _ in range(200_000):
        node.append([])
        node = node[0]
    with pytest.raises(LoadError, match="structure bomb"):
        check_structure(deep, Limits(), Path("x"))
    level: list = [torch.zeros(2)]
    for _ in range(9):
        level = [level] * 10
    check_structure(level, Limits(), Path("x"))  # 11 distinct objects: fine, and instant


def test_stride_zero_tensor_is_refused_without_allocating(tmp_path: Path) -> None:
    path = tmp_path / "s0.pt"
    torch.save({"w": torch.zeros(4).as_strided((1_000_000_000,), (0,))}, path)
    with pytest.raises(LoadError, match="stride-0"):
        load_model(str(path))


def test_escape_codes_in_a_global_name_never_reach_the_terminal(tmp_path: Path, run_cli) -> None:
    payload = b"\x80\x02c\x1b[31mevil\nthing\n)R."
    path = tmp_path / "esc.pt"
    path.write_bytes(payload)
    result = run_cli("run", str(path))
    assert result.code == 2 and "\x1b" not in result.stderr + result.stdout
    assert "evil" in result.stderr and len(result.stderr_lines) == 1


def test_escape_codes_in_provenance_never_reach_the_report(tmp_path: Path, run_cli) -> None:
    module = zoo.build("coupling-vector", CONFIG)
    path = save_checkpoint(
        tmp_path / "p.pt",
        module,
        "coupling-vector",
        CONFIG,
        DataDomain(shape=(4,)),
        {"recipe": "\x1b[2J\x1b[31mred", "note": "a\rb"},
    )
    report = tmp_path / "r.json"
    result = run_cli("run", str(path), "--samples", "20", "-o", f"json={report}")
    assert result.code in (0, 1)
    text = report.read_text()
    assert "\\u001b" not in text and "\x1b" not in result.stdout
    assert json.loads(text)["target"]["provenance"]["recipe"] == "red"


def test_pt2_and_torchscript_are_code(tmp_path: Path) -> None:
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    ts = tmp_path / "model.pt"
    torch.jit.save(scripted, str(ts))
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        load_model(str(ts))
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    pt2 = tmp_path / "model.pt2"
    with zipfile.ZipFile(pt2, "w") as archive:
        archive.writestr("model/models/model.json", "{}")
        archive.writestr("model/data/weights/weight.pt", pickle.dumps(Payload()))
    with pytest.raises(LoadError):
        load_model(str(pt2))
    assert not marker.exists()


def test_wrong_magic_and_polyglots(tmp_path: Path, native: Path) -> None:
    png = tmp_path / "image.pt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(CorruptCheckpointError, match="not a checkpoint format"):
        load_model(str(png))
    renamed = tmp_path / "weights.safetensors"
    renamed.write_bytes(native.read_bytes())
    assert load_model(str(renamed)).target["loader"] == "native", "the bytes decide, not the name"


def test_a_writer_killed_mid_write_leaves_the_previous_report_intact(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    report = tmp_path / "report.json"
    report.write_text('{"status": "old"}')
    started = tmp_path / "started"
    child = (
        "import os, pathlib, time\n"
        "import innaudit.safeio.atomic as atomic\n"
        "def slow_fsync(fd):\n"
        f"    pathlib.Path({str(started)!r}).touch(); time.sleep(60)\n"
        "os.fsync = slow_fsync\n"
        f'atomic.write_target({str(report)!r}, \'{{"status": "new", "rows": [\' + \'1,\' * 100000)\n'
    )
    proc = subprocess.Popen([sys.executable, "-c", child])
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert json.loads(report.read_text()) == {"status": "old"}


# -- round 2: each former "internal error" or misleading message is one specific line, exit 2 ---
def _lesser_inputs(tmp_path: Path) -> dict[str, tuple[object, ...]]:
    import numpy as np

    from tests.helpers import FIXTURE_MODELS

    model = f"{FIXTURE_MODELS}:exact"
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), dtype=np.float32))
    np.save(tmp_path / "f128.npy", np.zeros((4, 4), dtype=np.longdouble))
    np.save(tmp_path / "huge.npy", np.full((4, 4), 1e300))
    torch.save(torch.eye(4).to_sparse(), tmp_path / "sparse.pt")
    torch.save(torch.zeros(4, 4, dtype=torch.complex64), tmp_path / "complex.pt")
    (tmp_path / "folder.npy").mkdir()
    os.mkfifo(tmp_path / "fifo.npy")
    (tmp_path / "bad.json").write_text('{"a":')
    (tmp_path / "date.yaml").write_text("waivers:\n  - {audit: roundtrip, reason: r, expires: 2099-13-45}\n")
    (tmp_path / "dup.yaml").write_text("seed: 1\nseed: 2\n")
    (tmp_path / "many.yaml").write_text("samples: 1000000000000000000000\n")
    torch.save({"x": _Payload()}, tmp_path / "code.pt")
    fast = ("--samples", "8", "--audit", "roundtrip")
    return {
        "empty set": ("run", model, "--data", tmp_path / "empty.npy", *fast),
        "float128": ("run", model, "--data", tmp_path / "f128.npy", *fast),
        "sparse .pt": ("run", model, "--data", tmp_path / "sparse.pt", *fast),
        "complex .pt": ("run", model, "--data", tmp_path / "complex.pt", *fast),
        "folder as data": ("run", model, "--data", tmp_path / "folder.npy", *fast),
        "fifo as data": ("run", model, "--data", tmp_path / "fifo.npy", *fast),
        "finite 1e300": ("run", model, "--data", tmp_path / "huge.npy", *fast),
        "impossible date": ("run", model, "--config", tmp_path / "date.yaml", *fast),
        "duplicate key": ("run", model, "--config", tmp_path / "dup.yaml", *fast),
        "samples 1e21": ("run", model, "--config", tmp_path / "many.yaml"),
        "timeout nan": ("run", model, "--timeout", "nan", *fast),
        "device mps": ("run", model, "--device", "mps", *fast),
        "max-memory 1e30": ("run", model, "--max-memory", "1e30", *fast),
        "malformed json": ("render", tmp_path / "bad.json"),
        "init read-only": ("init", "/proc/innaudit.yaml"),
        "pickle as data": ("run", model, "--data", tmp_path / "code.pt", *fast),
        "pickle as weights": ("run", model, "--weights", tmp_path / "code.pt", *fast),
    }


_EXPECTED = {
    "empty set": "no samples",
    "float128": "float64 or float32",
    "sparse .pt": "dense",
    "complex .pt": "real numbers",
    "folder as data": "not a regular file",
    "fifo as data": "not a regular file",
    "finite 1e300": "beyond float32",
    "impossible date": "not a date",
    "duplicate key": "given twice",
    "samples 1e21": "expected a count from 1 to 1e+09",
    "timeout nan": "finite",
    "device mps": "not available",
    "max-memory 1e30": "between 64M",
    "malformed json": "not JSON",
    "init read-only": "cannot write",
    "pickle as data": "needs no code",
    "pickle as weights": "needs no code",
}


class _Payload:
    def __reduce__(self) -> tuple[object, ...]:
        return (print, ("payload ran",))


@pytest.mark.parametrize("case", sorted(_EXPECTED))
def test_round_two_bad_inputs_are_one_specific_line(run_cli: Any, tmp_path: Path, case: str) -> None:
    result = run_cli(*_lesser_inputs(tmp_path)[case])
    assert result.code == 2, (case, result.stdout, result.stderr)
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    assert "internal error" not in line and "Traceback" not in result.stderr
    assert _EXPECTED[case] in line, line
    assert "--trust-checkpoint" not in line or "MODEL only" in line


@pytest.mark.parametrize(
    ("flag", "value", "needle"), [("--epsilon", "-1", "attack.epsilon"), ("--attack-samples", "0", "attack.samples")]
)
def test_bad_attack_settings_are_refused_before_any_audit(run_cli: Any, flag: str, value: str, needle: str) -> None:
    from tests.helpers import FIXTURE_MODELS

    result = run_cli("run", f"{FIXTURE_MODELS}:exact", "--audit", "roundtrip", "--samples", "5", flag, value)
    assert result.code == 2 and len(result.stderr_lines) == 1 and needle in result.stderr


# -- round 3 (issue 28, the low list): no "internal error", no misleading message --------------
def _safetensors(header: bytes, data: bytes = b"") -> bytes:
    import struct

    return struct.pack("<Q", len(header)) + header + data


def _round_three_inputs(tmp_path: Path) -> dict[str, tuple[object, ...]]:
    import struct

    import numpy as np

    from tests.helpers import FIXTURE_MODELS, REPO

    model = f"{FIXTURE_MODELS}:exact"
    hostile = Path(__file__).resolve().parent / "hostile_models.py"
    offsets = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0.5, 8]}}
    (tmp_path / "offsets.safetensors").write_bytes(_safetensors(json.dumps(offsets).encode(), b"\0" * 8))
    (tmp_path / "empty.safetensors").write_bytes(_safetensors(b""))
    np.save(tmp_path / "scalar.npy", np.float32(0.5))
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4), }"
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    (tmp_path / "negative.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64)
    fast = ("--samples", "8", "--audit", "roundtrip")
    return {
        "safetensors float offsets": ("run", model, "--weights", tmp_path / "offsets.safetensors", *fast),
        "safetensors empty header": ("run", model, "--weights", tmp_path / "empty.safetensors", *fast),
        "0-d .npy": ("run", model, "--data", tmp_path / "scalar.npy", *fast),
        "negative-shape .npy": ("run", model, "--data", tmp_path / "negative.npy", *fast),
        "input_shape 10^12": ("run", f"{hostile}:huge_shape", *fast),
        "grid beyond float32": (
            "run",
            REPO / "checkpoints/checkerboard-affine.pt",
            "--data",
            "grid:-1e39,1e39,4",
            *fast,
        ),
    }


_ROUND_THREE = {
    "safetensors float offsets": "whole byte offsets",
    "safetensors empty header": "header is empty",
    "0-d .npy": "shape ()",
    "negative-shape .npy": "negative dimensions",
    "input_shape 10^12": "values per sample",
    "grid beyond float32": "float32's range",
}


@pytest.mark.parametrize("case", sorted(_ROUND_THREE))
def test_round_three_bad_inputs_are_one_specific_line(run_cli: Any, tmp_path: Path, case: str) -> None:
    result = run_cli(*_round_three_inputs(tmp_path)[case])
    assert result.code == 2, (case, result.stdout, result.stderr)
    assert len(result.stderr_lines) == 1, result.stderr
    assert "internal error" not in result.stderr and _ROUND_THREE[case] in result.stderr, result.stderr


def _saved_report(run_cli: Any, tmp_path: Path) -> dict[str, Any]:
    from tests.helpers import FIXTURE_MODELS

    path = tmp_path / "r.json"
    assert (
        run_cli("run", f"{FIXTURE_MODELS}:exact", "--audit", "roundtrip", "--samples", "8", "-o", f"json={path}").code
        == 0
    )
    return json.loads(path.read_text())


def _crafted(report: dict[str, Any], case: str) -> str:
    result = report["audits"][0]["results"][0]
    if case == "audits not a list":
        report["audits"] = 5
    elif case == "message not a string":
        report["audits"][0]["message"] = 5
    elif case == "set name a list":
        result["dataset"] = [1]
    elif case == "n a string":
        result["metrics"]["n"] = "many"
    elif case.startswith("fraction "):
        result["metrics"]["nonfinite_fraction"] = json.loads(case.split()[1])
    elif case == "seed a string":
        report["run"]["seed"] = "x"
    elif case == "datasets an int":
        report["run"]["datasets"] = 5
    elif case == "metrics nested deep":
        result["metrics"]["deep"] = json.loads("[" * 200 + "]" * 200)
    elif case == "json nested deeper than python":
        return '{"schema_version": 1, "tool": ' + "[" * 100000 + "]" * 100000 + "}"
    return json.dumps(report)


@pytest.mark.parametrize(
    "case",
    [
        "audits not a list",
        "message not a string",
        "set name a list",
        "n a string",
        "fraction 1e308",
        'fraction "inf"',
        "fraction -0.5",
        "seed a string",
        "datasets an int",
        "metrics nested deep",
        "json nested deeper than python",
    ],
)
def test_a_crafted_report_is_not_an_innaudit_report(run_cli: Any, tmp_path: Path, case: str) -> None:
    crafted = tmp_path / "crafted.json"
    crafted.write_text(_crafted(_saved_report(run_cli, tmp_path), case))
    for args in (("render", crafted, "-o", "html=" + str(tmp_path / "x.html")), ("compare", crafted, crafted)):
        result = run_cli(*args)
        assert result.code == 2, (case, args, result.stderr)
        assert len(result.stderr_lines) == 1 and "internal error" not in result.stderr, result.stderr
        assert "not an innaudit report" in result.stderr or "nested too deep" in result.stderr, result.stderr
    assert not (tmp_path / "x.html").exists()


def test_a_nan_rate_in_a_report_still_renders(run_cli: Any, tmp_path: Path) -> None:
    report = _saved_report(run_cli, tmp_path)
    report["audits"][0]["results"][0]["metrics"]["nonfinite_fraction"] = "nan"
    crafted = tmp_path / "nan.json"
    crafted.write_text(json.dumps(report))
    for fmt in ("console", "html", "junit", "markdown", "github"):
        assert run_cli("render", crafted, "-o", f"{fmt}={tmp_path / fmt}").code == 0, fmt


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_no_verdict_is_printed_before_every_file_is_written(run_cli: Any, tmp_path: Path) -> None:
    from tests.helpers import FIXTURE_MODELS

    good = tmp_path / "r.json"
    result = run_cli(
        "run",
        f"{FIXTURE_MODELS}:exact",
        "--audit",
        "roundtrip",
        "--samples",
        "8",
        "-o",
        f"json={good}",
        "-o",
        "html=/dev/full",
    )
    assert result.code == 2 and "cannot write html report" in result.stderr
    assert "PASS" not in result.stdout + result.stderr, "no verdict claimed when a write failed"


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import innaudit.safeio.atomic as atomic
    from innaudit.run.guard import Stopped

    target = tmp_path / "report.json"
    target.write_text("old")

    def stopped(fd: int) -> None:
        raise Stopped(15)  # what the SIGTERM handler raises, mid-write

    monkeypatch.setattr(atomic.os, "fsync", stopped)
    with pytest.raises(Stopped):
        atomic.write_target(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_closed_stdout_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.helpers import FIXTURE_MODELS, REPO, subprocess_env

    command = f"{sys.executable} -m innaudit run {FIXTURE_MODELS}:exact --audit roundtrip --samples 8 >&-"
    proc = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, cwd=REPO, env=subprocess_env(), check=False
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "stdout is closed" in lines[0]


def test_matplotlib_warnings_reach_stderr_sanitized(tmp_path: Path) -> None:
    import subprocess
    import sys

    import numpy as np

    from tests.helpers import REPO, subprocess_env

    data = tmp_path / "d\x1b[31m\x07x.npy"  # control characters matplotlib has no glyph for
    np.save(data, np.full((8, 2), 0.5, dtype=np.float32))
    args = ["run", REPO / "checkpoints/checkerboard-affine.pt", "--audit", "roundtrip", "--data", data]
    proc = subprocess.run(
        [sys.executable, "-m", "innaudit", *map(str, args), "-o", f"html={tmp_path / 'r.html'}", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=subprocess_env(),
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert "Glyph" in proc.stderr, "the warning is kept"
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr


@pytest.mark.parametrize(
    "record",
    [
        {"kind": "check", "step": "0", "status": "fail", "findings": [], "sets": {}},
        {"kind": "check", "step": 0, "status": "fail", "findings": [{"message": 5}], "sets": {}},
        {"kind": "check", "step": 0, "status": "fail", "findings": "x", "sets": {}},
        {"kind": "check", "step": 0, "status": "fail", "findings": [], "sets": {"data": 3}},
        {"kind": "start", "every": 1, "sets": [5], "audits": []},
        {"kind": 7},
    ],
)
def test_a_crafted_monitor_log_is_one_line(run_cli: Any, tmp_path: Path, record: dict[str, Any]) -> None:
    good = {"kind": "check", "step": 1, "status": "pass", "findings": [], "sets": {}}
    log = tmp_path / "m.jsonl"
    log.write_text(json.dumps(record) + "\n" + json.dumps(good) + "\n")
    for args in ((), ("-o", f"html={tmp_path / 't.html'}")):
        result = run_cli("render", log, *args)
        assert result.code == 2 and len(result.stderr_lines) == 1, result.stderr
        assert "is not a monitor record" in result.stderr and "internal error" not in result.stderr
