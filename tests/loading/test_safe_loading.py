"""Safe loading through the CLI, with real files (``shared/research/security.md`` sections 0, 1.4, 5).

- a pickle payload never runs, in any container format, even with
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (in-process for every format, and once in a real process);
- a pickled module loads only with ``--trust-checkpoint``, which the report records;
- damaged, wrong-format and missing files give one ``error:`` line, exit 2, no report file;
- ``--weights`` finds the state dict (``--weights-key``, ``module.`` prefixes) or says why not;
- factory mistakes give one line each;
- every ``torch.load`` in the package spells out ``weights_only=True``.
"""

from __future__ import annotations

import ast
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import innaudit
from innaudit import zoo
from innaudit.core.domain import DataDomain
from innaudit.loading.native import save_checkpoint
from tests.fixtures_models import DIM, ExactLinear
from tests.helpers import FIXTURE_MODELS, CliResult, read_report

PACKAGE = Path(innaudit.__file__).resolve().parent
REFUSED_GLOBAL = f"{os.system.__module__}.system"  # posix.system on Linux and macOS
FAST = ("--audit", "roundtrip", "--samples", "64")


def assert_one_error_line(result: CliResult) -> str:
    """Exit 2, exactly one line on stderr starting with ``error:``, no traceback, nothing on stdout."""
    assert result.code == 2, f"exit {result.code}; stderr: {result.stderr}"
    assert "Traceback" not in result.stderr
    assert len(result.stderr_lines) == 1, f"expected one line, got: {result.stderr!r}"
    assert result.stderr_lines[0].startswith("error:"), result.stderr
    assert result.stdout == ""
    return result.stderr_lines[0]


# -- pickle payloads ---------------------------------------------------------------------------
class Payload:
    """Unpickling this runs ``touch MARKER`` (harmless, and visible)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.system, (f"touch '{self.marker}'",)


def _write_payload(kind: str, path: Path, marker: Path) -> None:
    obj = {"state_dict": {"w": torch.zeros(2)}, "config": Payload(marker)}
    if kind == "zip":
        torch.save(obj, path)
    elif kind == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    elif kind.startswith("raw"):
        with path.open("wb") as handle:
            pickle.dump(obj, handle, protocol=int(kind.removeprefix("raw-p")))
    else:
        raise ValueError(kind)


PAYLOAD_KINDS = ("zip", "legacy", "raw-p2", "raw-p4")


def test_payload_fixture_is_live(tmp_path: Path) -> None:
    """Positive control: an unsafe load of the same bytes does run the payload."""
    for kind in PAYLOAD_KINDS:
        path, marker = tmp_path / f"{kind}.pt", tmp_path / f"{kind}.marker"
        _write_payload(kind, path, marker)
        if kind.startswith("raw"):
            with path.open("rb") as handle:
                pickle.load(handle)
        else:
            torch.load(path, weights_only=False)
        assert marker.exists(), kind


def _assert_payload_refused(result: CliResult, marker: Path, report: Path) -> None:
    assert not marker.exists(), "the pickle payload ran"
    line = assert_one_error_line(result)
    assert REFUSED_GLOBAL in line
    assert "--trust-checkpoint" in line
    assert not report.exists()


@pytest.mark.parametrize("force_unsafe_env", [False, True], ids=["default-env", "force-no-weights-only"])
@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_pickle_payload_is_refused_and_never_runs(run_cli, monkeypatch, tmp_path, kind, force_unsafe_env) -> None:
    """In-process: torch reads ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` at each ``torch.load`` call."""
    path, marker, report = tmp_path / "evil.pt", tmp_path / "PWNED", tmp_path / "r.json"
    _write_payload(kind, path, marker)
    if force_unsafe_env:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    _assert_payload_refused(run_cli("run", path, "-o", f"json={report}"), marker, report)


def test_pickle_payload_never_runs_in_a_real_process_told_to_load_unsafely(cli_subprocess, tmp_path) -> None:
    """The same refusal from ``python -m innaudit`` with the override set in its environment."""
    path, marker, report = tmp_path / "evil.pt", tmp_path / "PWNED", tmp_path / "r.json"
    _write_payload("zip", path, marker)
    result = cli_subprocess("run", path, "-o", f"json={report}", env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    _assert_payload_refused(result, marker, report)


# -- a whole pickled module --------------------------------------------------------------------
@pytest.fixture
def pickled_module(tmp_path: Path) -> Path:
    path = tmp_path / "whole_module.pt"
    torch.save(ExactLinear(), path)
    return path


def test_pickled_module_refused_without_flag(run_cli, pickled_module, tmp_path) -> None:
    out = tmp_path / "r.json"
    line = assert_one_error_line(run_cli("run", pickled_module, *FAST, "-o", f"json={out}"))
    assert "ExactLinear" in line
    assert "--trust-checkpoint" in line
    assert not out.exists()


def test_pickled_module_loads_with_trust_flag(run_cli, pickled_module, tmp_path) -> None:
    out = tmp_path / "r.json"
    result = run_cli("run", pickled_module, "--trust-checkpoint", *FAST, "-o", f"json={out}")
    assert result.code == 0, result.stderr
    assert any(line.startswith("warning:") and "--trust-checkpoint" in line for line in result.stderr_lines)
    report = read_report(out)
    assert report["target"]["trusted"] is True
    assert report["warnings"] and all(isinstance(w, str) and w for w in report["warnings"])
    assert [a["status"] for a in report["audits"] if a["id"] == "roundtrip"] == ["pass"]


# -- damaged, wrong-format and missing files -----------------------------------------------------
@pytest.fixture(scope="module")
def valid_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Bytes of a native checkpoint (zoo model) and of a plain state dict."""
    folder = tmp_path_factory.mktemp("valid")
    config = {"shape": [DIM], "steps": 2, "hidden": 8}
    module = zoo.build("coupling-vector", config)
    native = save_checkpoint(
        folder / "native.pt", module, "coupling-vector", config, DataDomain(shape=(DIM,), name="unit")
    )
    state = folder / "state.pt"
    torch.save(ExactLinear().state_dict(), state)
    return {"native": native.read_bytes(), "state": state.read_bytes()}


def test_untruncated_native_checkpoint_runs(run_cli, valid_checkpoints, tmp_path) -> None:
    """Control for the truncation cases: the whole file loads and gets a verdict."""
    path = tmp_path / "native.pt"
    path.write_bytes(valid_checkpoints["native"])
    result = run_cli("run", path, *FAST, "-o", f"json={tmp_path / 'r.json'}")
    assert result.code in (0, 1), result.stderr
    assert read_report(tmp_path / "r.json")["target"]["loader"] == "native"


CUTS = {
    "1B": lambda n: 1,
    "10B": lambda n: 10,
    "100B": lambda n: 100,
    "half": lambda n: n // 2,
    "minus1B": lambda n: n - 1,
}


def _bad_file(case: str, folder: Path, valid: dict[str, bytes]) -> Path:
    path = folder / "model.pt"
    if case == "missing":
        return folder / "does-not-exist.pt"
    if case == "directory":
        path.mkdir()
        return path
    if case == "empty":
        path.write_bytes(b"")
    elif case == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    elif case == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif case == "text":
        path.write_text("this is not a checkpoint\n" * 20, encoding="utf-8")
    else:
        source, cut = case.split("-")
        data = valid[source]
        path.write_bytes(data[: CUTS[cut](len(data))])
    return path


BAD_CASES = [
    "empty",
    "png",
    "random",
    "text",
    "directory",
    "missing",
    *(f"{source}-{cut}" for source in ("native", "state") for cut in CUTS),
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_file_gives_one_line_and_no_report(run_cli, valid_checkpoints, tmp_path, case) -> None:
    path = _bad_file(case, tmp_path, valid_checkpoints)
    out = tmp_path / "report.json"
    assert_one_error_line(run_cli("run", path, "-o", f"json={out}"))
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".report") or p.suffix == ".tmp"]


def test_bare_state_dict_suggests_a_factory(run_cli, tmp_path) -> None:
    path = tmp_path / "state.pt"
    torch.save(ExactLinear().state_dict(), path)
    line = assert_one_error_line(run_cli("run", path))
    assert "file.py:build --weights" in line


# -- --weights ---------------------------------------------------------------------------------
def _weights_run(run_cli: Any, tmp_path: Path, obj: Any, *extra: object) -> tuple[CliResult, Path]:
    path, out = tmp_path / "weights.pt", tmp_path / "r.json"
    torch.save(obj, path)
    result = run_cli("run", f"{FIXTURE_MODELS}:exact", "--weights", path, *extra, *FAST, "-o", f"json={out}")
    return result, out


def _training_dict() -> dict[str, Any]:
    return {"model": ExactLinear().state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "epoch": 3}


def test_training_dict_is_read_without_weights_key(run_cli, tmp_path) -> None:
    """The one entry that fits the module is found; the report says which."""
    result, out = _weights_run(run_cli, tmp_path, _training_dict())
    assert result.code == 0, result.stderr
    target = read_report(out)["target"]
    assert target["weights_key"] == "model" and target["weights_reading"]["entry"] == "model"


def test_training_dict_loads_with_weights_key(run_cli, tmp_path) -> None:
    result, out = _weights_run(run_cli, tmp_path, _training_dict(), "--weights-key", "model")
    assert result.code == 0, result.stderr
    target = read_report(out)["target"]
    assert target["weights_key"] == "model"
    assert len(target["weights_sha256"]) == 64


def test_dataparallel_prefixes_are_stripped_and_weights_used(run_cli, tmp_path) -> None:
    """``module.w`` lands in ``w``: NaN weights there make every sample non-finite (exit 1)."""
    state = {"module.w": torch.full((DIM, DIM), float("nan"))}
    result, out = _weights_run(run_cli, tmp_path, state)
    assert result.code == 1, result.stderr
    (audit,) = read_report(out)["audits"]
    assert all(r["metrics"]["nonfinite_fraction"] == 1.0 for r in audit["results"])


@pytest.mark.parametrize(
    "state",
    [
        {"w": torch.zeros(DIM + 1, DIM + 1)},  # wrong shape
        {"v": torch.eye(DIM)},  # missing w, unexpected v
        {"w": torch.eye(DIM), "extra.bias": torch.zeros(DIM)},  # unexpected key
    ],
    ids=["wrong-shape", "missing-key", "unexpected-key"],
)
def test_weights_that_do_not_fit(run_cli, tmp_path, state) -> None:
    result, out = _weights_run(run_cli, tmp_path, state)
    line = assert_one_error_line(result)
    assert "does not fit" in line
    assert not out.exists()


# -- factory mistakes --------------------------------------------------------------------------
FACTORIES = """
import torch
def boom():
    raise RuntimeError("kaboom in the factory")
def not_a_module():
    return 42
"""


@pytest.mark.parametrize(
    "name, expected",
    [
        ("missing-file", "does not exist"),
        ("missing-callable", "exact"),  # the message lists the callables found
        ("raises", "kaboom in the factory"),
        ("not-a-module", "int"),
    ],
)
def test_factory_errors(run_cli, tmp_path, name, expected) -> None:
    helper = tmp_path / "factories.py"
    helper.write_text(FACTORIES, encoding="utf-8")
    spec = {
        "missing-file": f"{tmp_path / 'nope.py'}:build",
        "missing-callable": f"{FIXTURE_MODELS}:no_such_factory",
        "raises": f"{helper}:boom",
        "not-a-module": f"{helper}:not_a_module",
    }[name]
    line = assert_one_error_line(run_cli("run", spec, *FAST))
    assert expected in line


# -- the source never calls torch.load unsafely ------------------------------------------------
class _TorchLoadCalls(ast.NodeVisitor):
    """Collects every ``torch.load(...)`` / ``serialization.load(...)`` call with its innermost function."""

    def __init__(self) -> None:
        self.functions: list[str] = ["<module>"]
        self.calls: list[tuple[int, str, ast.Call]] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "load"
            and isinstance(func.value, ast.Name)
            and func.value.id in ("torch", "serialization")
        ):
            self.calls.append((node.lineno, self.functions[-1], node))
        self.generic_visit(node)


def _torch_load_calls() -> list[tuple[str, str, ast.Call]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        visitor = _TorchLoadCalls()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        rel = path.relative_to(PACKAGE.parent)
        found += [(f"{rel}:{line}", function, call) for line, function, call in visitor.calls]
    return found


def test_every_torch_load_spells_out_weights_only_true() -> None:
    calls = _torch_load_calls()
    assert calls, "found no torch.load call at all; the scan is broken"
    unsafe = []
    trusted = []
    for location, function, call in calls:
        where = f"{location} in {function}"
        keywords = {k.arg: k.value for k in call.keywords}
        assert "pickle_module" not in keywords, f"{where} passes pickle_module"
        assert None not in keywords, f"{where} passes **kwargs, which can hide weights_only"
        value = keywords.get("weights_only")
        literal_true = isinstance(value, ast.Constant) and value.value is True
        if function == "load_trusted":
            trusted.append(where)
        elif not literal_true:
            unsafe.append(where)
    assert not unsafe, f"torch.load without a literal weights_only=True: {unsafe}"
    assert len(trusted) == 1, f"expected exactly one unsafe load, in load_trusted; found {trusted}"


def test_source_scan_also_catches_aliases() -> None:
    """No ``from torch import load`` or ``torch.serialization.load`` alias dodges the scan above."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module in ("torch", "torch.serialization")
                and any(alias.name == "load" for alias in node.names)
            ):
                offenders.append(f"{path.name}:{node.lineno}")
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "load"
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "serialization"
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"torch.load reached through an alias: {offenders}"


# -- one read per file --------------------------------------------------------------------------
def _opens_of(path: Path, action: Callable[[], Any]) -> int:
    """How many times ``action`` opens ``path`` (counted by a ``sys.addaudithook`` on ``open``)."""
    import sys

    target, count, active = str(path.resolve()), [0], [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        opened = args[0] if event == "open" else None
        if (
            active[0]
            and isinstance(opened, (str, bytes, os.PathLike))
            and os.path.abspath(os.fsdecode(opened)) == target
        ):
            count[0] += 1

    sys.addaudithook(hook)  # hooks cannot be removed; the flag switches this one off
    try:
        action()
    finally:
        active[0] = False
    return count[0]


def test_a_checkpoint_is_read_once_and_the_report_hashes_those_bytes(tmp_path: Path) -> None:
    import hashlib

    from innaudit.loading import load_model

    config = {"shape": [DIM], "steps": 2, "hidden": 8}
    path = save_checkpoint(
        tmp_path / "m.pt",
        zoo.build("coupling-vector", config),
        "coupling-vector",
        config,
        DataDomain(shape=(DIM,), name="unit"),
    )
    loaded: list[Any] = []
    assert _opens_of(path, lambda: loaded.append(load_model(str(path)))) == 1
    assert loaded[0].target["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded[0].target["size"] == path.stat().st_size


def test_weights_are_read_once_and_hashed(tmp_path: Path) -> None:
    import hashlib

    from innaudit.loading import load_model

    weights = tmp_path / "w.pt"
    torch.save(ExactLinear().state_dict(), weights)
    loaded: list[Any] = []
    spec = f"{FIXTURE_MODELS}:exact"
    assert _opens_of(weights, lambda: loaded.append(load_model(spec, weights=str(weights)))) == 1
    assert loaded[0].target["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
