"""Configuration: defaults, YAML, precedence, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from innaudit.audits import specs
from innaudit.config.settings import Threshold, load_config, parse_config
from innaudit.config.template import default_config_text
from innaudit.core.errors import ConfigError


def test_defaults_come_from_the_audits() -> None:
    config = parse_config(None, specs())
    assert config.seed == 0 and config.samples == 10000
    assert config.settings["roundtrip"].thresholds["nonfinite_fraction"] == Threshold(None, 0.0)
    assert config.settings["sampling"].options["temperatures"] == (1.0, 0.7)


def test_cli_overrides_beat_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("seed: 5\nsamples: 20\n")
    config = load_config(path, specs(), {"seed": 7, "samples": None})
    assert (config.seed, config.samples) == (7, 20)


def test_yaml_reads_exponents_without_a_dot(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("roundtrip:\n  thresholds:\n    rel_error_l2.max: {warn: 1e-5, fail: 1e-3}\n")
    t = load_config(path, specs()).settings["roundtrip"].thresholds["rel_error_l2.max"]
    assert t == Threshold(1e-5, 1e-3)


def test_per_set_override_keeps_the_other_level() -> None:
    raw = {"roundtrip": {"sets": {"uniform": {"thresholds": {"rel_error_l2.max": {"fail": 1.0}}}}}}
    settings = parse_config(raw, specs()).settings["roundtrip"]
    assert settings.thresholds_for("uniform")["rel_error_l2.max"] == Threshold(1e-4, 1.0)
    assert settings.thresholds_for("gaussian")["rel_error_l2.max"] == Threshold(1e-4, 1e-2)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"sed": 1}, "did you mean 'seed'"),
        ({"seed": "one"}, "seed is 'one'"),
        ({"seed": True}, "expected int"),
        ({"samples": 0}, "samples is 0; expected a count from 1"),
        ({"fail_on": "error"}, "expected 'warn' or 'fail'"),
        ({"audits": ["roundtrp"]}, "did you mean 'roundtrip'"),
        ({"roundtrip": {"threshold": {}}}, "did you mean 'thresholds'"),
        ({"roundtrip": {"thresholds": {"error_l2.maxx": {"fail": 1}}}}, "did you mean 'error_l2.max'"),
        ({"roundtrip": {"thresholds": {"error_l2.max": {"fial": 1}}}}, "did you mean 'fail'"),
        ({"roundtrip": {"thresholds": {"error_l2.max": {"warn": 2, "fail": 1}}}}, "above fail"),
        ({"sampling": {"temperatures": []}}, "non-empty list"),
        ({"sampling": {"temperatures": ["hot"]}}, "expected float"),
        ({"ood": "uniform"}, "list of strings"),
    ],
)
def test_each_mistake_is_one_clear_error(raw: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, specs())
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_yaml_and_non_mapping_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken, specs())
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listing, specs())
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "missing.yaml", specs())


def test_the_init_template_loads_back_to_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "innaudit.yaml"
    path.write_text(default_config_text(specs()))
    assert load_config(path, specs()) == parse_config(None, specs())
