"""The report's run and target blocks are typed records whose JSON form is the one the report
always had, key for key and byte for byte."""

from __future__ import annotations

import json
from dataclasses import replace

import torch

import innaudit
from innaudit.core.records import RunRecord, TargetRecord
from innaudit.verdict.report_json import report_from_dict, report_to_dict, to_plain
from tests.api_models import Squash

RUN_KEYS = [
    "seed",
    "started_at",
    "device",
    "dtype",
    "versions",
    "platform",
    "threads",
    "float32_matmul_precision",
    "deterministic_algorithms",
    "datasets",
    "config",
    "duration_s",
]
"""The run block of a run through the API, in the order the report has always written it
(``plan`` follows when the run was planned to a budget)."""


def _report() -> innaudit.Report:
    x = torch.rand(40, 4, generator=torch.Generator().manual_seed(0))
    return innaudit.audit(Squash(), data=x, ood={"far": 1e8 * (1 + x)}, audits=["roundtrip"])


def _dumps(data: object) -> str:
    return json.dumps(to_plain(data), indent=2, allow_nan=False)


def test_a_run_gives_typed_records_in_the_json_order_of_old() -> None:
    report = _report()
    assert isinstance(report.run, RunRecord) and isinstance(report.target, TargetRecord)
    assert list(report.run) == RUN_KEYS
    assert report.run.seed == report.run["seed"] == 0 and report.run.dtype == "float32"
    assert report.target.loader == report.target["loader"] == "python"
    assert report.target.latent_shape == [4] and report.target.info is not None
    assert report.run.replans == () and "replans" not in report.run  # serialized only when set


def test_the_json_round_trip_is_byte_for_byte() -> None:
    first = _dumps(report_to_dict(_report()))
    again = _dumps(report_to_dict(report_from_dict(json.loads(first))))
    assert again == first


def test_keys_keep_their_given_order_nulls_and_unknown_keys() -> None:
    """A block read from a file keeps every key where it was, a null stays a null, and a key
    innaudit has no field for is kept in ``extra``."""
    given = {"dtype": "float64", "later_key": {"a": 1}, "seed": 3, "sha256": None, "replans": []}
    run = RunRecord.of(given)
    assert run.seed == 3 and run.dtype == "float64" and run.extra["later_key"] == {"a": 1}
    assert json.dumps(run.to_dict()) == json.dumps(given)
    target = TargetRecord.of({"model": "m.pt", "weights_sha256": "ab", "loader": "native", "sha256": None})
    assert list(target) == ["model", "weights_sha256", "loader", "sha256"] and target.sha256 is None
    assert target.extra["weights_sha256"] == "ab"


def test_the_speed_fields_are_serialized_only_when_set() -> None:
    run = _report().run
    policy = {"policy": "auto", "intra_op": 2}
    planned = replace(run, threads=policy, replans=({"at": "roundtrip", "samples": 10},))
    out = planned.to_dict()
    assert out["threads"] == policy and to_plain(out)["replans"] == [{"at": "roundtrip", "samples": 10}]
    assert list(out)[: len(RUN_KEYS)] == RUN_KEYS and list(out)[-1] == "replans"
    assert _dumps(RunRecord.of(json.loads(_dumps(out))).to_dict()) == _dumps(out)  # read back, same bytes
