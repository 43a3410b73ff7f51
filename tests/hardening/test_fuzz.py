"""Mutated checkpoints and random configs: only known outcomes, never a traceback."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from innaudit import save_checkpoint, zoo
from innaudit.audits import specs
from innaudit.config.settings import parse_config
from innaudit.core.domain import DataDomain
from innaudit.core.errors import ConfigError, DataError, InnauditError
from innaudit.data import Role, resolve_dataset
from innaudit.loading import load_model
from innaudit.safeio.preflight import Limits

CONFIG = {
    "shape": [4],
    "steps": 2,
    "hidden": 8,
    "coupling": "affine",
    "scale": "sigmoid",
    "permutation": "reverse",
    "actnorm": True,
    "seed": 0,
}
BOUNDARY = (b"\x00\x00\x00\x00", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff")


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    kind = rng.randrange(5)
    at = rng.randrange(len(out))
    if kind == 0:
        out[at] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del out[at:]
    elif kind == 2:
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    elif kind == 3:
        del out[at : at + rng.randrange(1, 64)]
    else:
        out[at : at + 4] = rng.choice(BOUNDARY)
    return bytes(out)


def test_three_hundred_mutants_give_only_known_outcomes(tmp_path: Path, run_cli) -> None:
    module = zoo.build("coupling-vector", CONFIG)
    source = save_checkpoint(tmp_path / "src.pt", module, "coupling-vector", CONFIG, DataDomain(shape=(4,)))
    original = source.read_bytes()
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(source, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    seeds = [(original, i) for i in range(200)] + [(legacy.read_bytes(), i) for i in range(100)]
    rng, outcomes, deadline = random.Random(0), {}, time.monotonic() + 240
    for data, _ in seeds:
        if time.monotonic() > deadline:
            break
        mutant = tmp_path / "mutant.pt"
        mutant.write_bytes(_mutate(data, rng))
        try:
            load_model(str(mutant), limits=Limits(max_bytes=64 << 20))
            outcome = "loaded"
        except InnauditError as exc:
            outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert sum(outcomes.values()) >= 250, outcomes
    assert set(outcomes) <= {"loaded", "LoadError", "CorruptCheckpointError", "UnsafeCheckpointError"}
    assert outcomes.get("CorruptCheckpointError", 0) > 50, outcomes
    # and through the CLI: exit codes 0/1/2 only, one line, no traceback
    for i in range(20):
        mutant = tmp_path / f"cli{i}.pt"
        mutant.write_bytes(_mutate(original, rng))
        result = run_cli("run", str(mutant), "--samples", "16")
        assert result.code in (0, 1, 2)
        assert "Traceback" not in result.stderr
        if result.code == 2:
            assert len(result.stderr_lines) == 1 and result.stderr_lines[0].startswith(("error:", "innaudit:"))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)
KEYS = st.sampled_from(
    [
        "seed",
        "samples",
        "batch_size",
        "device",
        "float64_check",
        "fail_on",
        "data",
        "ood",
        "audits",
        "skip",
        "roundtrip",
        "sampling",
        "sed",
        "thresholds",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, JSONISH, max_size=4))
def test_any_config_is_valid_or_one_config_error(raw: dict) -> None:
    try:
        parse_config(raw, specs())
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)


SPEC_ALPHABET = st.sampled_from(list("abcdegiklmnoprstuvxy0123456789.:=,-_/ "))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(SPEC_ALPHABET, max_size=24),
        st.sampled_from(["uniform", "gaussian", "constant:", "digits:", "x=", "a.npz:", "=uniform"]).flatmap(
            lambda p: st.text(SPEC_ALPHABET, max_size=8).map(lambda s: p + s)
        ),
    )
)
@example("constant:1e100")  # found by this test: beyond float32, torch.full raised a RuntimeError
def test_any_data_spec_is_a_dataset_or_one_data_error(spec: str) -> None:
    domain = DataDomain(shape=(1, 8, 8))
    try:
        ds = resolve_dataset(spec, Role.OOD, domain, 5, 0)
    except DataError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert ds.first(2).shape[1:] == (1, 8, 8)


def test_same_seed_gives_byte_identical_json_but_for_times(tmp_path: Path, run_cli) -> None:
    import json

    texts = []
    config = tmp_path / "c.yaml"
    config.write_text("attack: {steps: 40}\n")
    for name in ("a.json", "b.json"):
        assert (
            run_cli(
                "run",
                "checkpoints/digits-additive.pt",
                "--samples",
                "300",
                "--audit",
                "roundtrip",
                "--audit",
                "sampling",
                "--audit",
                "attack",
                "--attack-samples",
                "4",
                "--config",
                config,
                "-o",
                f"json={tmp_path / name}",
            ).code
            == 0
        )
        data = json.loads((tmp_path / name).read_text())
        data["run"].pop("started_at"), data["run"].pop("duration_s")
        for audit in data["audits"]:
            audit.pop("duration_s")
        texts.append(json.dumps(data, sort_keys=True))
    assert texts[0] == texts[1]


@pytest.mark.parametrize("value", ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"])
def test_the_environment_cannot_turn_the_safe_loader_off(tmp_path: Path, value: str, monkeypatch) -> None:
    import os
    import pickle

    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    monkeypatch.setenv(value, "1")
    with pytest.raises(InnauditError):
        load_model(str(path))
    assert not marker.exists()
    del pickle


# -- round 2: the sanitizer, YAML and .npz readers on arbitrary input -----------------------------
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_clean_text_of_any_string_is_one_printable_line(text: str) -> None:
    import unicodedata

    from innaudit.core.errors import clean_text

    out = clean_text(text)
    bad = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # controls, format (bidi, zero-width), surrogates, breaks
    assert not [c for c in out if unicodedata.category(c) in bad], repr(out)
    out.encode("utf-8")
    assert clean_text(out) == out, "sanitizing twice changes nothing"


YAML_ALPHABET = st.sampled_from([*"ab:-&*[]{},' \n\"!#|>%@`?0129.", "\t", "\x1b", "\u2028"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(YAML_ALPHABET, max_size=80))
def test_any_yaml_text_is_a_config_or_one_config_error(tmp_path: Path, text: str) -> None:
    from innaudit.config.settings import load_config

    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path, specs())
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 2100


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400), st.integers(0, 3))
def test_any_npz_bytes_give_an_array_or_one_data_error(tmp_path: Path, data: bytes, cut: int) -> None:
    import io

    import numpy as np

    from innaudit.safeio.arrays import read_array

    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.arange(40, dtype=np.float32).reshape(10, 4))
    good = buffer.getvalue()
    path = tmp_path / "f.npz"
    blob = [data, good[: len(good) * cut // 4] + data, good[:64] + data + good[64:], good][cut]
    path.write_bytes(blob)
    try:
        array = read_array(path, "x", 5)
    except DataError as exc:
        assert "\n" not in str(exc)
    else:
        assert array.shape[0] <= 5
