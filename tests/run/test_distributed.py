"""``torchrun`` scale-out (:mod:`innaudit.core.distributed`): exact merges, rank 0's report, faults.

The multi-process tests start 2 CPU processes with the gloo backend, either with ``torchrun
--standalone`` or as plain processes given the variables torchrun sets (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``), which keeps each rank's own exit code (torchrun itself exits
1 whenever a rank exits non-zero). Every process runs under a timeout, so nothing can hang.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch

from innaudit.audits.common import batch_units
from innaudit.audits.cost import Timing, Units
from innaudit.audits.precision import PRECISIONS, Lane, _merge, _Part
from innaudit.core.distributed import SINGLE, Shard
from innaudit.core.stats import ErrorAccumulator
from tests.helpers import REPO

ROOT = REPO
CHECKPOINT = ROOT / "checkpoints" / "digits-affine.pt"
TIMINGS = {"duration_s", "started_at", "world_size"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def _strip(value: object) -> object:
    """The report without its timings and ``run.world_size`` (NaN made comparable)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ranks(args: list[str], tmp: Path, timeout: float = 120.0, wait: float | None = None) -> list[int | None]:
    """Run ``innaudit run ARGS`` as 2 ranks; each rank's exit code (None: still running after
    ``wait`` seconds, then killed)."""
    port = str(_free_port())
    procs = []
    for r in range(2):
        with open(tmp / f"out{r}", "w") as out, open(tmp / f"err{r}", "w") as err:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "innaudit", "run", *args],
                    stdout=out,
                    stderr=err,
                    env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                    cwd=ROOT,
                )
            )
    codes: list[int | None] = []
    for index, proc in enumerate(procs):
        try:
            codes.append(proc.wait(timeout=wait if (wait is not None and index > 0) else timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            codes.append(None)
    return codes


def test_single_shard_map_is_a_plain_loop() -> None:
    """One process: ``map`` calls the work in order, here, and lets its errors through."""
    seen: list[int] = []
    assert SINGLE.map([3, 1, 2], lambda k: seen.append(k) or k * 10) == [30, 10, 20]
    assert seen == [3, 1, 2]
    with pytest.raises(ZeroDivisionError):
        SINGLE.map([0], lambda k: 1 / k)


def test_round_robin_ownership_covers_every_unit_once() -> None:
    units = batch_units([10, 0, 3], 4)
    assert units == [(0, 0, 4), (0, 4, 8), (0, 8, 10), (2, 0, 3)]
    owners = [[i for i in range(len(units)) if Shard(rank, 3).owns(i)] for rank in range(3)]
    assert sorted(i for mine in owners for i in mine) == list(range(len(units)))
    assert owners == [[0, 3], [1], [2]]


def test_ranks_claim_every_unit_once_from_the_store() -> None:
    """Each rank starts with its own unit, then claims the next free one as it finishes: a rank
    slowed by a costly unit takes fewer, and every unit is run exactly once."""
    store = torch.distributed.HashStore()
    fast, slow = Shard(0, 2, _store=store)._claims(6), Shard(1, 2, _store=store)._claims(6)
    taken = {"fast": [next(fast)], "slow": [next(slow)]}
    taken["fast"] += [next(fast), next(fast)]  # the slow rank is still on its first unit
    taken["slow"].append(next(slow))
    taken["fast"] += list(fast)
    taken["slow"] += list(slow)
    assert taken == {"fast": [0, 2, 3, 5], "slow": [1, 4]}


def test_accumulators_merged_by_batch_equal_one_pass() -> None:
    """Batches recorded apart and merged in order give the same metrics as one accumulator."""
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(10, 3, generator=gen)
    back = u + 1e-3 * torch.randn(10, 3, generator=gen)
    back[7, 1] = float("nan")
    whole = ErrorAccumulator(floor=1e-3)
    whole.add(u, u, back)
    merged = ErrorAccumulator(floor=1e-3)
    for start in (0, 4, 8):
        part = ErrorAccumulator(floor=1e-3)
        part.add(u[start : start + 4], u[start : start + 4], back[start : start + 4])
        merged.extend(part)
    assert _strip(merged.metrics("latent")) == _strip(whole.metrics("latent"))
    assert np.array_equal(merged.per_sample(), whole.per_sample())


def test_units_shared_by_workers_divide_every_cost() -> None:
    units = Units(Timing(1.0, 2.0), Timing(3.0, 4.0), Timing(5.0, 6.0), Timing(7.0, 8.0), 9.0, 32, 64)
    half = units.shared(2)
    assert half.forward == Timing(0.5, 1.0) and half.jvp == Timing(3.5, 4.0) and half.dense_s == 4.5
    assert (half.batch, half.dim) == (32, 64) and units.shared(1) is units


def test_precision_merges_lane_failures_as_one_pass_meets_them() -> None:
    """A lane that raised on some batch is dropped with its first failure's reason, reasons in
    the order one pass over the batches meets them, and the gaps end where float64 first failed."""
    lanes = [Lane(p, cast(Any, None)) for p in PRECISIONS[:4]]  # float64, float32, float16, bfloat16

    def part(failed: dict[str, str]) -> _Part:
        u = torch.ones(2, 3)
        accs = {p.name: ErrorAccumulator(floor=1e-3) for p in PRECISIONS[:4] if p.name not in failed}
        for acc in accs.values():
            acc.add(u, u, u)
        return _Part(accs, failed, {k: np.zeros(2) for k in accs if k != "float64"}, 2)

    parts = [part({}), part({"float64": "raised A", "bfloat16": "raised B"}), part({"float16": "raised C"})]
    skipped: dict[str, str] = {"autocast_float16": "not here"}
    sweep = _merge(lanes, skipped, parts, 1e-3)
    assert list(skipped.items()) == [
        ("autocast_float16", "not here"),
        ("float64", "raised A"),
        ("bfloat16", "raised B"),
        ("float16", "raised C"),
    ]
    assert list(sweep.accs) == ["float32"] and sweep.accs["float32"].metrics("latent")["n"] == 6
    assert [len(g) for g in sweep.gaps["float32"]] == [2] and sweep.n == 6


@pytest.mark.slow
def test_two_ranks_give_the_one_process_report(tmp_path: Path) -> None:
    """torchrun with 2 gloo ranks: the JSON equals one process's for every sharded audit that
    applies to an affine flow (uneven shards: 5 batches of 8 per set, 2 of the attack; non-finite
    round trips, so worst samples, witnesses and the layers' culprits), and the exit code is the same."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "attack: {steps: 20}\nspectrum: {samples: 12}\ngradient: {batch: 8}\n"  # the merge, not the search
        "logdet: {method: matrix-free, probes: 2, steps: 8}\n"
    )  # generators salted by batch
    audits = ("roundtrip", "sampling", "attack", "spectrum", "precision", "layers", "logdet", "gradient")
    args = [
        str(CHECKPOINT),
        *(x for a in audits for x in ("--audit", a)),
        "--samples",
        "40",
        "--batch-size",
        "8",
        "--attack-samples",
        "12",
        "-q",
        "--config",
        str(config),
    ]
    one = subprocess.run(
        [sys.executable, "-m", "innaudit", "run", *args, "-o", f"json={tmp_path / 'one.json'}"],
        env=_env(),
        cwd=ROOT,
        timeout=300,
        capture_output=True,
        text=True,
    )
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "innaudit",
            "run",
            *args,
            "-o",
            f"json={tmp_path / 'two.json'}",
        ],
        env=_env(),
        cwd=ROOT,
        timeout=300,
        capture_output=True,
        text=True,
    )
    first, second = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert second["run"]["world_size"] == 2 and "world_size" not in first["run"]
    assert sorted(a["id"] for a in first["audits"]) == sorted(audits)
    assert all(a["status"] != "error" for a in first["audits"])
    assert _strip(second) == _strip(first)
    # torchrun exits 0 when every rank did, else 1 (here the gate fails: exit 1 both ways)
    assert one.returncode == two.returncode == 1, (one.stderr[-500:], two.stderr[-2000:])


SHARDED = ("precision", "bounds", "layers", "logdet", "grid", "gradient")
"""The audits sharded since the first four; each splits its units over the ranks."""


@pytest.mark.slow
def test_two_ranks_split_every_audit_and_give_the_one_process_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 ranks of precision, bounds, layers, logdet, grid and gradient on a model that counts each
    audit's samples: every rank does some but not all of each audit (the units are claimed as
    the ranks go; the replicated bits are a few samples: skip probes, the loss choice), both
    together at least all of it, and rank 0's JSON equals the one process's."""
    counts = tmp_path / "counts"
    counts.mkdir()
    monkeypatch.setenv("INNAUDIT_COUNTS", str(counts))
    # the one process's counts are each audit's whole work: layers reading precision's kept passes
    # would count fewer samples there than a rank does (reuse is measured in tests/audits/test_passes.py)
    monkeypatch.setenv("INNAUDIT_SHARED_PASSES_MIB", "0")
    config = tmp_path / "c.yaml"
    config.write_text("grid: {resolution: 12}\ngradient: {batch: 8}\n")  # 18 and 8 units
    args = [
        "tests/distributed_models.py:counting",
        "--data",
        "two-moons",
        *(x for a in SHARDED for x in ("--audit", a)),
        "--samples",
        "64",
        "--batch-size",
        "8",
        "-q",
        "--config",
        str(config),
    ]
    subprocess.run(
        [sys.executable, "-m", "innaudit", "run", *args, "-o", f"json={tmp_path / 'one.json'}"],
        env=_env(),
        cwd=ROOT,
        timeout=300,
        check=True,
    )
    assert _ranks([*args, "-o", f"json={tmp_path / 'two.json'}"], tmp_path) == [0, 0]
    first, second = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert [(a["id"], a["status"]) for a in first["audits"]] == [(a, "pass") for a in SHARDED]
    assert _strip(second) == _strip(first)
    one, *ranks = (json.loads((counts / f"{n}.json").read_text()) for n in ("single", "0", "1"))
    for audit in SHARDED:
        shares = [rank.get(audit, 0) for rank in ranks]
        assert all(0 < share < one[audit] for share in shares), (audit, one[audit], shares)
        assert sum(shares) >= one[audit], (audit, one[audit], shares)


@pytest.mark.slow
def test_a_rank_that_raises_ends_every_rank_with_exit_2_naming_it(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    codes = _ranks(
        [
            "tests/distributed_models.py:raising",
            "--audit",
            "roundtrip",
            "--samples",
            "32",
            "--batch-size",
            "8",
            "-q",
            "-o",
            f"json={report}",
        ],
        tmp_path,
    )
    assert codes == [2, 2]
    audit = json.loads(report.read_text())["audits"][0]
    assert audit["status"] == "error"
    assert "on rank 1 of 2: RuntimeError: boom on purpose" in audit["error"]
    assert not (tmp_path / "out1").read_text()  # rank 1 writes no report


@pytest.mark.slow
def test_a_rank_that_hangs_ends_the_job_with_exit_2_naming_it(tmp_path: Path) -> None:
    report = tmp_path / "h.json"
    codes = _ranks(
        [
            "tests/distributed_models.py:hanging",
            "--audit",
            "roundtrip",
            "--samples",
            "32",
            "--batch-size",
            "8",
            "--rank-timeout",
            "5",
            "-q",
            "-o",
            f"json={report}",
        ],
        tmp_path,
        timeout=90,
        wait=1,
    )
    assert codes[0] == 2  # rank 0 gave up on rank 1 after 5 s, long before the 120 s hang ends
    data = json.loads(report.read_text())
    assert any("rank 1" in e and "crashed or hung" in e for e in data["errors"]), data["errors"]
