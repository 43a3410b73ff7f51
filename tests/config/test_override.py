"""One validated path from options to a Config: ``Config.override``, ``__post_init__``, the API and
the CLI refuse the same values with the same one-line ConfigError the YAML loader gives."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any

import click
import pytest

import innaudit
from innaudit.audits import specs
from innaudit.audits.gradient import LOSSES
from innaudit.audits.precision import PRECISIONS
from innaudit.cli.run import run as run_command
from innaudit.config.choices import FAIL_ON, GRADIENT_LOSSES, PRECISION_NAMES
from innaudit.config.settings import OPTIONS, Config, parse_config
from innaudit.core.errors import ConfigError
from innaudit.core.results import Status
from tests.fixtures_models import ExactLinear
from tests.helpers import invoke_cli

BAD = [
    ({"samples": -5}, "samples is -5; expected a count from 1 to 1e+09"),
    ({"samples": "many"}, "samples is 'many' (str); expected int"),
    ({"fail_on": "sometimes"}, "fail_on is 'sometimes'; expected 'warn' or 'fail'"),
    ({"audits": ["roundtip"]}, "audits: audit 'roundtip' does not exist; did you mean 'roundtrip'?"),
    ({"skip": ["spectrom"]}, "skip: audit 'spectrom' does not exist; did you mean 'spectrum'?"),
    ({"batch_size": 0}, "batch_size is 0; expected a count from 1"),
    ({"range": [1, 0]}, "range 1,0 is not a range"),
    ({"budget": "soon"}, "budget 'soon' is not a duration"),
    ({"seed": True}, "seed is True (bool); expected int"),
]


@pytest.mark.parametrize(("options", "message"), BAD)
def test_override_refuses_what_the_yaml_loader_refuses(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as by_yaml:
        parse_config(options, specs())
    with pytest.raises(ConfigError) as by_override:
        Config().override(specs(), **options)
    assert message in str(by_yaml.value)
    assert str(by_override.value) == str(by_yaml.value)
    assert "\n" not in str(by_override.value)


@pytest.mark.parametrize(("options", "message"), [(o, m) for o, m in BAD if "range" not in o])  # not an API keyword
@pytest.mark.parametrize("config", [None, Config(), {"seed": 3}])
def test_the_api_refuses_bad_options_with_config_error(
    config: Config | dict[str, Any] | None, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(innaudit.ConfigError) as info:
        innaudit.audit(ExactLinear(), data="uniform", ood=[], config=config, **options)
    assert message in str(info.value)


def test_samples_minus_five_on_a_config_object_is_a_config_error() -> None:
    """The issue's case: ``innaudit.audit(model, config=Config(), samples=-5)``."""
    with pytest.raises(innaudit.ConfigError, match="samples is -5"):
        innaudit.audit(ExactLinear(), config=Config(), samples=-5)


def test_every_construction_validates() -> None:
    """``Config(...)`` and ``dataclasses.replace`` run the same checks (``__post_init__``)."""
    with pytest.raises(ConfigError, match="fail_on is 'sometimes'"):
        replace(Config(), fail_on="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="samples is -5"):
        Config(samples=-5)
    parsed = parse_config(None, specs())
    with pytest.raises(ConfigError, match="did you mean 'roundtrip'"):
        replace(parsed, audits=("roundtip",))  # a parsed config knows the audit ids
    with pytest.raises(ConfigError, match="option 'sample' is unknown; did you mean 'samples'"):
        Config().override(sample=5)


def test_values_are_normalized_as_the_loader_normalizes_them() -> None:
    config = Config().override(
        specs(), fail_on="warn", ood=["uniform"], audits=["roundtrip"], budget="2m", range=[0, 1], samples=7
    )
    assert config.fail_on is Status.WARN
    assert (config.ood, config.audits, config.budget, config.range, config.samples) == (
        ("uniform",),
        ("roundtrip",),
        120.0,
        (0.0, 1.0),
        7,
    )
    parsed = parse_config(
        {"fail_on": "warn", "ood": ["uniform"], "audits": ["roundtrip"], "budget": "2m", "range": "0,1", "samples": 7},
        specs(),
    )
    assert replace(parsed, settings={}) == config
    parsed = parse_config({"fail_on": "warn"}, specs())
    assert parsed.fail_on is Status.WARN and parsed.to_dict()["fail_on"] == "warn"
    assert Config().fail_on is Status.FAIL and Config().to_dict()["fail_on"] == "fail"
    assert set(OPTIONS) == set(Config().to_dict()) - {"settings", "waivers"}


def test_options_given_on_the_command_line_win_over_the_file_through_override() -> None:
    config = parse_config({"samples": 50, "fail_on": "warn"}, specs(), {"samples": 7, "fail_on": None})
    assert config.samples == 7 and config.fail_on is Status.WARN
    # a flag replaces the file's value before it is judged, as the flag is what the run uses
    assert parse_config({"samples": 0}, specs(), {"samples": 5}).samples == 5


def test_audit_choices_are_checked_when_the_config_is_read() -> None:
    with pytest.raises(ConfigError, match=r"gradient\.loss is 'nlll'; did you mean 'nll'"):
        parse_config({"gradient": {"loss": "nlll"}}, specs())
    with pytest.raises(ConfigError, match=r"precision\.required is 'float31'; did you mean 'float32'"):
        parse_config({"precision": {"required": "float31"}}, specs())


def _choices(name: str) -> tuple[str, ...]:
    option = next(p for p in run_command.params if p.name == name)
    assert isinstance(option.type, click.Choice)
    return tuple(option.type.choices)


def test_the_cli_choice_lists_are_the_audits_constants() -> None:
    assert tuple(p.name for p in PRECISIONS) == PRECISION_NAMES == _choices("require_precision")
    assert LOSSES == GRADIENT_LOSSES == _choices("gradient_loss")
    assert FAIL_ON == _choices("fail_on") == tuple(s.value for s in (Status.WARN, Status.FAIL))


def test_the_cli_refuses_a_bad_value_with_the_same_line(tmp_path: Any) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("fail_on: sometimes\n")
    result = invoke_cli("run", "nothing.pt", "--config", str(config))
    assert result.code == 2 and result.stdout == ""
    assert result.stderr.strip() == "error: fail_on is 'sometimes'; expected 'warn' or 'fail'"


def test_run_help_does_not_import_torch() -> None:
    """``innaudit run --help`` lists the audits' choices without importing torch or numpy."""
    code = (
        "import sys; from innaudit.cli import cli\n"
        "try:\n    cli.main(['run', '--help'], standalone_mode=False)\nexcept SystemExit: pass\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "autocast_bfloat16" in out and "projection" in out
    assert out.splitlines()[-1] == "False False", "run --help must not import torch or numpy"
