"""The thread policy (``run.threads``): measured, or the user's count, and restored on return."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import innaudit
from innaudit.audits import specs
from innaudit.config.settings import parse_config
from innaudit.core.errors import ConfigError
from innaudit.run import threads as policy
from innaudit.run.threads import ThreadChoice, available_cores, given, kept, measured, rechecked
from tests.helpers import read_report

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures_models.py"


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OMP_NUM_THREADS and no count set by a caller: the policy measures."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(policy, "_AT_IMPORT", torch.get_num_threads())


def test_the_user_s_count_wins_in_order_option_environment_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    with kept():
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert given(2) == ThreadChoice(2, "option", available_cores())
        assert given(None) == ThreadChoice(3, "environment", available_cores())
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(policy, "_AT_IMPORT", torch.get_num_threads() + 1)  # the caller changed it since
        assert given(None) == ThreadChoice(torch.get_num_threads(), "caller", available_cores())
        monkeypatch.setattr(policy, "_AT_IMPORT", torch.get_num_threads())
        monkeypatch.setattr(policy, "available_cores", lambda: 1)
        assert given(None) == ThreadChoice(1, "single core", 1)
        monkeypatch.setattr(policy, "available_cores", lambda: 2)
        assert given(None) is None  # measured


@pytest.fixture(autouse=True)
def _idle_unknown(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit tests' probes are fakes: the machine's idle cores are not theirs to read (the
    tests of that reading and the end-to-end ones keep the real one)."""
    if not request.node.name.startswith("test_idle_cores_") and "unset" not in request.fixturenames:
        monkeypatch.setattr(policy, "idle_cores_during", lambda run: (run(), None))


@pytest.mark.parametrize(("slow", "want"), [(1, 4), (4, 1)])
def test_the_faster_count_is_kept_with_both_timings(slow: int, want: int) -> None:
    seen: list[int] = []

    def probe() -> float:  # the planned work takes 10 s at the slow count, 1 s at the other
        seen.append(torch.get_num_threads())
        return 10.0 if torch.get_num_threads() == slow else 1.0

    with kept():
        choice = measured(probe, 4)
        assert torch.get_num_threads() == want  # set for the run
    assert seen == [1, 4] and choice.threads == want and choice.source == "measured"
    assert choice.to_dict()["probe_s"] == {"1": 10.0 if slow == 1 else 1.0, "4": 10.0 if slow == 4 else 1.0}


@pytest.mark.parametrize(("idle", "probed"), [(0.0, [1]), (1.2, [1]), (2.0, [1, 4]), (3.0, [1, 4]), (None, [1, 4])])
def test_cores_taken_by_other_processes_are_not_probed(
    monkeypatch: pytest.MonkeyPatch, idle: float | None, probed: list[int]
) -> None:
    """4 cores: with fewer than half of the 3 others idle during the 1-thread probe (other
    processes hold them), 1 thread is kept and every core never probed, even where the probe
    would have found it equal; where the system does not say (None), both are probed."""
    seen: list[int] = []

    def probe() -> float:
        seen.append(torch.get_num_threads())
        return 1.0

    monkeypatch.setattr(policy, "idle_cores_during", lambda run: (run(), idle))
    with kept():
        choice = measured(probe, 4)
    assert seen == probed and choice.threads == 1 and choice.idle_cores == idle
    assert ("idle_cores" in choice.to_dict()) == (idle is not None)


def test_idle_cores_of_cpus_the_system_does_not_list_are_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container whose ``/proc/stat`` lists other CPUs than this process may use: unknown
    (None, both counts probed), never "every core taken"."""
    monkeypatch.setattr(policy.os, "sched_getaffinity", lambda pid: {4096, 4097}, raising=False)
    assert policy.idle_cores_during(lambda: 1.0) == (1.0, None)


def test_idle_cores_are_read_from_the_machine() -> None:
    """On Linux, one busy thread of this process leaves at most ``cores - 1`` idle cores."""
    out, idle = policy.idle_cores_during(lambda: sum(i * i for i in range(2_000_000)) * 0.0)
    assert out == 0.0
    if idle is not None:
        assert 0.0 <= idle <= available_cores() - 1 + 0.5


def test_a_slow_forward_with_every_core_skips_their_full_probe() -> None:
    """On a busy machine the screen (one forward pass each way) rules every core out, so the
    probe's own cost stays small; the screen's timings are recorded."""
    full: list[int] = []

    def probe() -> float:
        full.append(torch.get_num_threads())
        return 1.0

    def quick() -> float:
        return 0.01 if torch.get_num_threads() == 1 else 0.5

    with kept():
        choice = measured(probe, 4, quick)
        assert torch.get_num_threads() == 1
    assert full == [1] and choice.threads == 1
    assert choice.to_dict()["forward_s"] == {"1": 0.01, "4": 0.5} and choice.to_dict()["probe_s"] == {"1": 1.0}
    with kept():
        close = measured(probe, 4, lambda: 0.01)  # no slower: the full probe decides
    assert full == [1, 1, 4] and close.threads == 1


def test_the_measurement_s_own_cost_is_recorded_and_a_recheck_adds_to_it() -> None:
    """The policy's promise is "never slower than the better fixed count by more than the
    probe's own cost": that cost is in the report, so the promise can be checked."""
    import time

    def probe() -> float:
        time.sleep(0.05)
        return 1.0 if torch.get_num_threads() == 1 else 2.0

    with kept():
        first = measured(probe, 2, lambda: 0.01)
        assert 0.1 <= first.to_dict()["cost_s"] < 5.0  # two probes of 0.05 s, and the screen
        again = rechecked(dataclasses.replace(first, threads=2), probe)
    assert again.cost_s is not None and first.cost_s is not None
    assert again.cost_s >= first.cost_s + 0.1
    assert given(1) is not None and "cost_s" not in given(1).to_dict()  # a given count costs nothing


def test_a_recheck_measures_again_only_a_measured_choice() -> None:
    calls: list[int] = []

    def probe() -> float:
        calls.append(torch.get_num_threads())
        return 1.0 if torch.get_num_threads() == 1 else 5.0  # the machine became busy

    with kept():
        assert rechecked(ThreadChoice(2, "option", 2), probe) == ThreadChoice(2, "option", 2) and not calls
        one = ThreadChoice(1, "measured", 2, {1: 1.0, 2: 3.0})
        assert rechecked(one, probe) == one and not calls  # fewer threads cannot help
        again = rechecked(ThreadChoice(2, "measured", 2, {1: 3.0, 2: 1.0}), probe)
    assert again.threads == 1 and calls == [1, 2]


def test_kept_restores_the_caller_s_count() -> None:
    before = torch.get_num_threads()
    with kept():
        torch.set_num_threads(before + 1)
    assert torch.get_num_threads() == before


def test_the_api_measures_records_and_restores(unset: None) -> None:
    before = torch.get_num_threads()
    x = torch.rand(64, 4, generator=torch.Generator().manual_seed(0))
    report = innaudit.audit(f"{FIXTURES}:exact", data=x, ood=[], audits=["roundtrip"])
    record = report.run["threads"]
    assert record["source"] == ("measured" if available_cores() > 1 else "single core")
    assert record["cores"] == available_cores()
    if available_cores() > 1:
        every = str(available_cores())
        screen = record.get("forward_s")
        ruled_out = screen is not None and screen[every] > policy.SCREEN * screen["1"]  # a busy machine
        taken = record.get("idle_cores", available_cores()) < policy.TAKEN * (available_cores() - 1)
        assert set(record["probe_s"]) == ({"1"} if ruled_out or taken else {"1", every})
        best = min(record["probe_s"], key=lambda n: (record["probe_s"][n], int(n)))
        assert record["threads"] == int(best)
    assert torch.get_num_threads() == before


def test_a_caller_s_set_num_threads_wins_and_is_restored(unset: None) -> None:
    before = torch.get_num_threads()
    x = torch.rand(16, 4, generator=torch.Generator().manual_seed(0))
    try:
        torch.set_num_threads(before + 1)
        report = innaudit.audit(f"{FIXTURES}:exact", data=x, ood=[], audits=["roundtrip"])
        assert report.run["threads"]["threads"] == before + 1 and report.run["threads"]["source"] == "caller"
        assert torch.get_num_threads() == before + 1
        report = innaudit.audit(f"{FIXTURES}:exact", data=x, ood=[], audits=["roundtrip"], threads=1)
        assert report.run["threads"]["threads"] == 1 and report.run["threads"]["source"] == "option"
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)


def test_threads_option_from_the_cli_and_the_environment(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = run_cli("run", f"{FIXTURES}:exact", "--data", "gaussian", "--audit", "roundtrip", "--threads", "1",
                     "--samples", "50", "-o", f"json={out}")  # fmt: skip
    assert result.code == 0, result.stderr
    assert read_report(out)["run"]["threads"] == {"threads": 1, "source": "option", "cores": available_cores()}
    assert read_report(out)["run"]["config"]["threads"] == 1
    result = run_cli("run", f"{FIXTURES}:exact", "--data", "gaussian", "--audit", "roundtrip",
                     "--samples", "50", "-o", f"json={out}")  # fmt: skip
    assert result.code == 0, result.stderr  # the tests run with OMP_NUM_THREADS=1
    assert read_report(out)["run"]["threads"]["source"] == "environment"


@pytest.mark.parametrize("bad", ["0", "-2", "5000"])
def test_a_bad_thread_count_is_one_line_exit_2(run_cli, bad: str) -> None:
    result = run_cli("run", f"{FIXTURES}:exact", "--data", "gaussian", "--threads", bad)
    assert result.code == 2 and "threads" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("bad", [0, "two", True, 1.5])
def test_a_bad_thread_count_in_the_config_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="threads"):
        parse_config({"threads": bad}, specs())
    assert parse_config({"threads": 2}, specs()).threads == 2
    with pytest.raises(ConfigError, match="threads"):
        innaudit.audit(f"{FIXTURES}:exact", data=torch.zeros(2, 4), threads=0, config=parse_config({}, specs()))
