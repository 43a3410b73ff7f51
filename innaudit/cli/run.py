"""``innaudit run``: load, audit, compare with a baseline, write the reports, exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from innaudit.cli.app import EXIT_HELP, cli
from innaudit.cli.output import STATE, ProgressObserver, check_targets, err, input_paths, parse_outputs, write_outputs
from innaudit.cli.reports import compared, load_baseline
from innaudit.config.choices import FAIL_ON, GRADIENT_LOSSES, PRECISION_NAMES
from innaudit.core.errors import DistributedError, UsageError
from innaudit.render import output_help
from innaudit.verdict.baseline import ABS_TOL, REL_TOL

if TYPE_CHECKING:
    from innaudit.core.results import Report
    from innaudit.run.job import Job

__all__ = ["run"]


@cli.command(epilog=EXIT_HELP)
@click.argument("model")
@click.option(
    "--data",
    "data",
    metavar="SPEC",
    help="In-distribution set: a .npy/.npz[:key]/.pt file or a built-in (digits:test). Default: the model's own test set.",
)
@click.option(
    "--ood",
    "ood",
    metavar="[NAME=]SPEC",
    multiple=True,
    help="Held-out set (repeatable). Default: uniform, gaussian, rademacher noise.",
)
@click.option("--weights", metavar="FILE", help="State dict to load into a factory MODEL.")
@click.option("--weights-key", metavar="KEY", help="Entry of a training dict holding the state dict (dotted path).")
@click.option(
    "--condition",
    metavar="SPEC",
    help="Condition of a conditional model: a .npy/.npz/.pt file of rows (row j of each batch takes row j mod N) or constant:V1,V2,...",
)
@click.option(
    "--trust-checkpoint",
    is_flag=True,
    help="Allow a checkpoint holding code (a pickled module) to load. Only for files you made.",
)
@click.option(
    "--range",
    "data_range",
    metavar="LOW,HIGH",
    help="Data range of a model that declares none.  [default: from --data, snapped to [0,1], [-0.5,0.5] or [-1,1]]",
)
@click.option(
    "--levels",
    type=int,
    metavar="N",
    help="Quantization levels of a model that declares none.  [default: inferred from --data]",
)
@click.option(
    "--allow-mutation",
    is_flag=True,
    help="Audit a model that rewrites its parameters or buffers while audited (ActNorm init) instead of exiting 2.",
)
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="YAML config (see `innaudit init`).",
)
@click.option("--audit", "audits", metavar="ID", multiple=True, help="Run only this audit (repeatable).")
@click.option("--skip", metavar="ID", multiple=True, help="Leave this audit out (repeatable).")
@click.option("--samples", type=int, help="At most this many samples per set.  [default: 10000]")
@click.option(
    "--batch-size",
    metavar="N|auto",
    help="Samples per batch, or auto: the largest batch whose activations fit free memory (at most 500).  [default: auto]",
)
@click.option(
    "--budget",
    metavar="DURATION",
    help="Time budget (90s, 10m, 1h): each audit's samples are sized to fit; the report records the plan and what was cut.",
)
@click.option(
    "--plan", "show_plan", is_flag=True, help="Print the plan (per audit: samples, method, estimated time) and exit 0."
)
@click.option(
    "--threads",
    type=int,
    metavar="N",
    help="Intra-op threads of torch.  [default: OMP_NUM_THREADS if set, else the faster of 1 and all cores, measured]",
)
@click.option("--seed", type=int, help="Seed of every random draw.  [default: 0]")
@click.option("--device", help="cpu, cuda or cuda:N.  [default: cpu]")
@click.option(
    "--float64-check/--no-float64-check",
    default=None,
    help="Repeat round trips in float64 to tell precision loss from ill-conditioning.",
)
@click.option(
    "--temperature",
    "temperatures",
    type=float,
    multiple=True,
    help="Prior temperature for the sampling audit (repeatable).  [default: 1.0, 0.7]",
)
@click.option(
    "--require-precision",
    type=click.Choice(PRECISION_NAMES),
    help="The precision audit fails unless the model is invertible at this precision.  [default: float32]",
)
@click.option(
    "--attack-samples", type=int, metavar="N", help="Data samples the attack audit searches around.  [default: 32]"
)
@click.option(
    "--epsilon", type=float, metavar="E", help="L_inf radius of the attack.  [default: half a quantization bin]"
)
@click.option(
    "--gradient-loss",
    type=click.Choice(GRADIENT_LOSSES),
    help="Loss of the gradient audit: nll, projection, or the model's own gradient_loss.  [default: auto]",
)
@click.option(
    "--save-witnesses",
    metavar="DIR",
    help="Write the attack's worst points to DIR (witnesses.npy, originals.npy, witnesses.pt).",
)
@click.option("--fail-on", type=click.Choice(FAIL_ON), help="Least severe status that fails the gate.  [default: fail]")
@click.option(
    "-o",
    "--output",
    "outputs",
    metavar="FORMAT[=PATH]",
    multiple=True,
    help=output_help(),
)
@click.option(
    "--baseline",
    metavar="BASE.json",
    help="Compare every metric with this earlier JSON report (see `innaudit compare`).",
)
@click.option("--fail-on-regression", is_flag=True, help="With --baseline: a regressed metric fails the gate (exit 1).")
@click.option(
    "--rel-tol",
    type=float,
    default=REL_TOL,
    show_default=True,
    help="With --baseline: relative tolerance, tol = max(|base| * rel, abs).",
)
@click.option("--abs-tol", type=float, default=ABS_TOL, show_default=True, help="With --baseline: absolute tolerance.")
@click.option(
    "--timeout",
    type=float,
    metavar="SECONDS",
    help="Run in a child process and stop it after SECONDS; finished audits are kept, the run exits 2. Under torchrun: the whole job's limit.",
)
@click.option(
    "--max-memory",
    metavar="SIZE",
    help="Run in a child process limited to SIZE of memory (e.g. 4G); also the budget for checkpoint tensors.",
)
@click.option(
    "--rank-timeout",
    type=float,
    metavar="SECONDS",
    help="Under torchrun: how long a rank waits for the others before the job ends with exit 2 naming the ranks that crashed or hung.  [default: 600]",
)
@click.option("--exit-zero", is_flag=True, help="Exit 0 when a gate fails (never hides exit 2).")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress on stderr: bars on a terminal, a plain line every 10 s otherwise (-q: none unless asked).  [default: on]",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on stdout; files and the exit code only.")
@click.option("-v", "--verbose", count=True, help="-vv shows tracebacks of internal errors.")
def run(
    model: str,
    data: str | None,
    ood: tuple[str, ...],
    weights: str | None,
    weights_key: str | None,
    condition: str | None,
    trust_checkpoint: bool,
    data_range: str | None,
    levels: int | None,
    allow_mutation: bool | None,
    config_path: str | None,
    audits: tuple[str, ...],
    skip: tuple[str, ...],
    samples: int | None,
    batch_size: str | None,
    budget: str | None,
    show_plan: bool,
    threads: int | None,
    seed: int | None,
    device: str | None,
    float64_check: bool | None,
    temperatures: tuple[float, ...],
    require_precision: str | None,
    attack_samples: int | None,
    epsilon: float | None,
    gradient_loss: str | None,
    save_witnesses: str | None,
    fail_on: str | None,
    outputs: tuple[str, ...],
    baseline: str | None,
    fail_on_regression: bool,
    rel_tol: float,
    abs_tol: float,
    timeout: float | None,
    max_memory: str | None,
    rank_timeout: float | None,
    exit_zero: bool,
    progress: bool | None,
    quiet: bool,
    verbose: int,
) -> int:
    """Audit MODEL: a checkpoint file, or a factory as package.module:callable or file.py:callable."""
    STATE["verbose"] = verbose
    targets = parse_outputs(outputs)
    base = load_baseline(baseline, fail_on_regression)
    from innaudit.audits import specs
    from innaudit.config.settings import load_config

    overrides = {
        "seed": seed,
        "samples": samples,
        "batch_size": _batch(batch_size),
        "budget": budget,
        "threads": threads,
        "device": device,
        "float64_check": float64_check,
        "fail_on": fail_on,
        "data": data,
        "ood": list(ood) or None,
        "audits": list(audits) or None,
        "skip": list(skip) or None,
        "range": data_range,
        "levels": levels,
        "allow_mutation": allow_mutation or None,
    }
    sections: dict[str, dict[str, Any]] = {"sampling": {"temperatures": list(temperatures)}} if temperatures else {}
    attack = {k: v for k, v in (("samples", attack_samples), ("epsilon", epsilon)) if v is not None}
    if attack:
        sections["attack"] = attack
    if gradient_loss is not None:
        sections["gradient"] = {"loss": gradient_loss}
    if require_precision is not None:
        sections["precision"] = {"required": require_precision}
    witness_dir = _witness_dir(save_witnesses)
    config = load_config(config_path, specs(), overrides, sections)
    check_targets(
        targets,
        input_paths(model, (weights, config_path, baseline), (config.data, *config.ood, condition)),
        _witness_targets(witness_dir),
        quiet=quiet,
    )
    if timeout is not None and not 0 < timeout < float("inf"):
        raise UsageError(f"--timeout {timeout:g} must be a positive, finite number of seconds")
    if rank_timeout is not None and not 0 < rank_timeout < float("inf"):
        raise UsageError(f"--rank-timeout {rank_timeout:g} must be a positive, finite number of seconds")
    from innaudit.core.distributed import world_size_of

    world = world_size_of()
    _check_device(config.device)
    from innaudit.run.job import Job

    job = Job(model, config, weights, weights_key, trust_checkpoint, _size(max_memory), condition)
    if show_plan:
        return _print_plan(job) if world == 1 or os.environ.get("RANK", "0") == "0" else 0
    tty = sys.stderr.isatty()
    mode = (
        "off"
        if progress is False or (quiet and progress is None and not tty)
        else "bars"
        if progress or tty
        else "plain"
    )
    finish = partial(
        _finish,
        base=base,
        baseline=baseline,
        rel_tol=rel_tol,
        abs_tol=abs_tol,
        fail_on_regression=fail_on_regression,
        targets=targets,
        quiet=quiet,
        witness_dir=witness_dir,
        exit_zero=exit_zero,
    )
    if world > 1 and (timeout is not None or job.max_memory is not None):
        return _distributed_isolated(job, mode, timeout, rank_timeout, finish)
    if world > 1:
        return _distributed(job, mode, rank_timeout, finish)
    return finish(_audit(job, timeout, mode))


def _finish(
    report: Report,
    base: Any,
    baseline: str | None,
    rel_tol: float,
    abs_tol: float,
    fail_on_regression: bool,
    targets: Any,
    quiet: bool,
    witness_dir: Path | None,
    exit_zero: bool,
    write: bool = True,
) -> int:
    """Compare with the baseline, write the reports and the witnesses (unless ``write`` is
    False: a torchrun rank other than 0); the exit code."""
    if base is not None:
        report = compared(base, report, cast(str, baseline), rel_tol, abs_tol, fail_on_regression)  # base came from it
    code = int(report.exit_code)
    code = 0 if exit_zero and code == 1 else code
    if not write:
        return code
    for warning in report.warnings:
        err(f"warning: {warning}")
    witnesses = _witness_files(report, witness_dir) if witness_dir is not None else []
    write_outputs(report, targets, quiet, witnesses)
    if witnesses:
        err(f"wrote {witness_count(report)} witness(es) to {witness_dir}")
    if quiet or ("console", None) not in targets:  # the console table already ends with it
        from innaudit.render.console import verdict_line

        err(verdict_line(report))
    return code


def _distributed(job: Job, progress: str, rank_timeout: float | None, finish: Callable[..., int]) -> int:
    """One rank of a torchrun job: every rank audits its share; rank 0 alone writes the reports
    and decides the exit code, which every other rank exits with (its own once the job broke)."""
    from innaudit.core.distributed import DEFAULT_TIMEOUT_S, join, leave
    from innaudit.run.guard import stdout_to_stderr
    from innaudit.run.job import execute

    shard = join(rank_timeout or DEFAULT_TIMEOUT_S)
    try:
        with ProgressObserver(progress if shard.leader else "off") as observer, stdout_to_stderr():
            report = execute(job, observer, shard)
        code, problem = 2, None
        if shard.leader:
            try:
                code = finish(report)
            except Exception as exc:  # the others still get exit 2 before this is raised
                problem = exc
        elif report.errors:  # a broken job: this rank says why on stderr
            err(f"error: rank {shard.rank}: {report.errors[0]}")
        try:
            code = shard.first(code, "exit code")
        except DistributedError as exc:
            if not shard.leader:
                err(f"error: {exc}")
                code = 2
        if problem is not None:
            raise problem
        return code
    finally:
        leave(shard)


def _distributed_isolated(
    job: Job, progress: str, timeout: float | None, rank_timeout: float | None, finish: Callable[..., int]
) -> int:
    """One rank of a torchrun job with ``--timeout`` or ``--max-memory``: this rank's child process
    joins the job and audits its share; this process keeps the clock and the memory limit. Rank 0
    writes the reports. Every rank holds the merged results, so each reaches the same exit code
    from its own report; a rank stopped by the deadline, a crash or a peer that is gone exits 2."""
    from innaudit.core.distributed import DEFAULT_TIMEOUT_S
    from innaudit.run.child import run_isolated

    leader = os.environ.get("RANK", "0") == "0"
    with ProgressObserver(progress if leader else "off") as observer:
        report = run_isolated(job, timeout, observer, rank_timeout or DEFAULT_TIMEOUT_S)
    if not leader and report.errors:
        err(f"error: rank {os.environ.get('RANK')}: {report.errors[0]}")
    return finish(report, write=leader)


def _witness_dir(path: str | None) -> Path | None:
    if path is None:
        return None
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"--save-witnesses {path!r} is not an existing folder; create it first")
    return folder


WITNESS_FILES = ("witnesses.npy", "originals.npy", "witnesses.pt")
"""What ``--save-witnesses DIR`` writes into DIR."""


def _witness_targets(folder: Path | None) -> list[tuple[str, Path]]:
    """The witness files as targets, checked with the reports before the run."""
    if folder is None:
        return []
    return [(f"--save-witnesses {str(folder)!r}: {name}", folder / name) for name in WITNESS_FILES]


def _witness_artifacts(report: Report) -> Mapping[str, Any] | None:
    found = [r.artifacts for a in report.audits if a.id == "attack" for r in a.results if r.artifacts]
    return found[0] if found else None


def witness_count(report: Report) -> int:
    """How many witnesses the attack found (0 when it did not run)."""
    art = _witness_artifacts(report)
    return 0 if art is None else len(art["witnesses"])


def _witness_files(report: Report, folder: Path) -> list[tuple[str, Path, bytes]]:
    """The attack's witnesses as files: ``witnesses.npy`` (worst x' per sample, the model's
    input shape), ``originals.npy`` (the data x), ``witnesses.pt`` (both, with the starts and
    errors); none (and a warning) when the attack did not run."""
    import io

    import numpy as np
    import torch

    art = _witness_artifacts(report)
    if art is None:
        err("warning: --save-witnesses: the attack audit did not run, so there is nothing to write")
        return []

    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        return buffer.getvalue()

    buffer = io.BytesIO()
    torch.save(
        {k: torch.from_numpy(np.ascontiguousarray(art[k])) for k in ("witnesses", "originals", "starts", "errors")}
        | {"epsilon": torch.tensor(float(art["epsilon"]), dtype=torch.float64)},
        buffer,
    )
    data = (npy(art["witnesses"]), npy(art["originals"]), buffer.getvalue())
    return [("witnesses", folder / name, payload) for name, payload in zip(WITNESS_FILES, data, strict=True)]


def _check_device(device: str) -> None:
    """Refuse a device this torch cannot use before anything is loaded (one line, exit 2)."""
    import torch

    from innaudit.core.errors import clean_text

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        kind = ""
    if kind not in ("cpu", "cuda", "mps", "xpu", "meta"):
        return  # not a device at all: the loader's own message says so
    usable = kind == "cpu" or (kind == "cuda" and torch.cuda.is_available())
    if not usable:
        raise UsageError(
            f"device {clean_text(device, 40)!r} is not available to this torch; expected cpu"
            + (" or cuda[:N]" if torch.cuda.is_available() else " (no CUDA device found)")
        )


def _size(text: str | None) -> int | None:
    """``"4G"``, ``"512M"``, ``"2GiB"``, ``"1000000"`` -> bytes."""
    if text is None:
        return None
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    body = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = body[-1:] if body[-1:] in units and body[-1:] else ""
    try:
        value = float(body[: len(body) - len(unit)]) * units[unit]
    except ValueError:
        value = -1
    if not (64 << 20) <= value <= (1 << 50):
        raise UsageError(f"--max-memory {text!r} is not a size between 64M and 1P; expected e.g. 4G or 512M")
    return int(value)


def _batch(text: str | None) -> int | str | None:
    """``--batch-size``: ``auto`` or a positive integer."""
    if text is None or text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"--batch-size {text!r} is not a positive integer or auto; expected e.g. 256 or auto")
    return value


def _print_plan(job: Job) -> int:
    """``--plan``: load, measure one batch, print the plan, exit 0."""
    from innaudit.run.guard import stdout_to_stderr
    from innaudit.run.job import plan

    with stdout_to_stderr():  # model code runs here: its prints go to stderr
        lines = plan(job).describe()
    click.echo("\n".join(lines))
    return 0


def _audit(job: Job, timeout: float | None, progress: str) -> Report:
    """In this process, or in a child one when a time or memory limit is asked for.

    In this process, model output goes to stderr while it runs, and SIGTERM or SIGHUP ends the
    run with the report of what it reached (:class:`~innaudit.run.partial.Partial`, exit 2).
    """
    from innaudit.run.child import run_isolated
    from innaudit.run.guard import Stopped, stdout_to_stderr
    from innaudit.run.job import execute
    from innaudit.run.partial import Partial, Tee

    with ProgressObserver(progress) as observer:
        if timeout is not None or job.max_memory is not None:
            return run_isolated(job, timeout, observer)
        partial = Partial(job)
        try:
            with stdout_to_stderr():
                return execute(job, Tee(observer, partial))
        except Stopped as exc:
            return partial.report(f"stopped by {exc}")
