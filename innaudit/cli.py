"""The command line: a thin click layer over the library.

Only this module imports click, writes to streams or writes files. Exit codes: 0 every audit
passed its gate; 1 a gate failed; 2 no trustworthy verdict (usage, config or load error, a
crashed audit, Ctrl-C). Torch is imported only inside commands, so ``--help`` is instant.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .errors import InnauditError, UsageError, clean_text

if TYPE_CHECKING:
    from .isolation import Job
    from .results import Report

__all__ = ["cli", "main"]

EXIT_HELP = "Exit codes: 0 pass, 1 a gate failed, 2 no trustworthy verdict (bad input, crash, Ctrl-C)."
_STATE = {"verbose": 0}


def _err(message: str) -> None:
    click.echo(message, err=True)


# -- outputs ---------------------------------------------------------------------------------
def _parse_outputs(values: Sequence[str]) -> list[tuple[str, Path | None]]:
    from .render import FORMATS

    outputs: list[tuple[str, Path | None]] = []
    for value in values:
        fmt, sep, path = value.partition("=")
        if fmt not in FORMATS:
            raise UsageError(f"-o {value!r}: format {fmt!r} is unknown; expected one of "
                             f"{', '.join(FORMATS)}, as FORMAT or FORMAT=PATH")
        if sep and not path:
            raise UsageError(f"-o {value!r} names no file; expected FORMAT=PATH")
        target = Path(path) if sep else None
        if target is not None and not (target.parent if str(target.parent) else Path(".")).is_dir():
            raise UsageError(f"-o {value!r}: folder {str(target.parent)!r} does not exist")
        outputs.append((fmt, target))
    if all(path is not None for _, path in outputs):
        outputs.insert(0, ("console", None))  # files as well as, not instead of, the table
    return outputs


def _write_outputs(report: Report, outputs: list[tuple[str, Path | None]], quiet: bool) -> None:
    from .atomic import write_atomic
    from .render import RENDERERS, console

    for fmt, path in outputs:
        if fmt == "console":
            text = console.render(report, color=path is None and _color(), width=_width())
        else:
            text = RENDERERS[fmt](report)
        if path is None:
            if not quiet:
                click.echo(text, nl=False)
        else:
            try:
                write_atomic(path, text)
            except OSError as exc:
                raise UsageError(f"cannot write {fmt} report to {str(path)!r}: {exc.strerror}") from None


def _color() -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(os.environ.get("FORCE_COLOR")) or sys.stdout.isatty()


def _width() -> int:
    try:
        return max(80, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return 120


# -- progress --------------------------------------------------------------------------------
class _ProgressObserver:
    """Draws one rich progress bar per (audit, set) on stderr."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=True,
                                 disable=not enabled)
        self.tasks: dict[tuple[str, str], Any] = {}

    def __enter__(self) -> _ProgressObserver:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def audit_started(self, audit_id: str, title: str) -> None:
        pass

    def progress(self, audit_id: str, dataset: str, done: int, total: int) -> None:
        key = (audit_id, dataset)
        if key not in self.tasks:
            self.tasks[key] = self.bars.add_task(f"{audit_id} {dataset}", total=total)
        self.bars.update(self.tasks[key], completed=done)

    def audit_finished(self, result: Any) -> None:
        pass


# -- the group -------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_HELP)
@click.version_option(__version__, prog_name="innaudit")
def cli() -> None:
    """Audit trained invertible neural networks (normalizing flows) for numerical invertibility."""


@cli.command(epilog=EXIT_HELP)
@click.argument("model")
@click.option("--data", "data", metavar="SPEC", help="In-distribution set: a .npy/.npz[:key]/.pt file or a built-in (digits:test). Default: the model's own test set.")
@click.option("--ood", "ood", metavar="[NAME=]SPEC", multiple=True, help="Held-out set (repeatable). Default: uniform, gaussian, rademacher noise.")
@click.option("--weights", metavar="FILE", help="State dict to load into a factory MODEL.")
@click.option("--weights-key", metavar="KEY", help="Entry of a training dict holding the state dict (dotted path).")
@click.option("--condition", metavar="SPEC", help="Condition of a conditional model: a .npy/.npz/.pt file of rows (row j of each batch takes row j mod N) or constant:V1,V2,...")
@click.option("--trust-checkpoint", is_flag=True, help="Allow a checkpoint holding code (a pickled module) to load. Only for files you made.")
@click.option("--config", "config_path", metavar="PATH", type=click.Path(dir_okay=False), help="YAML config (see `innaudit init`).")
@click.option("--audit", "audits", metavar="ID", multiple=True, help="Run only this audit (repeatable).")
@click.option("--skip", metavar="ID", multiple=True, help="Leave this audit out (repeatable).")
@click.option("--samples", type=int, help="At most this many samples per set.  [default: 10000]")
@click.option("--batch-size", type=int, help="Samples per batch.  [default: 500]")
@click.option("--seed", type=int, help="Seed of every random draw.  [default: 0]")
@click.option("--device", help="cpu, cuda or cuda:N.  [default: cpu]")
@click.option("--float64-check/--no-float64-check", default=None, help="Repeat round trips in float64 to tell precision loss from ill-conditioning.")
@click.option("--temperature", "temperatures", type=float, multiple=True, help="Prior temperature for the sampling audit (repeatable).  [default: 1.0, 0.7]")
@click.option("--attack-samples", type=int, metavar="N", help="Data samples the attack audit searches around.  [default: 32]")
@click.option("--epsilon", type=float, metavar="E", help="L_inf radius of the attack.  [default: half a quantization bin]")
@click.option("--save-witnesses", metavar="DIR", help="Write the attack's worst points to DIR (witnesses.npy, originals.npy, witnesses.pt).")
@click.option("--fail-on", type=click.Choice(["warn", "fail"]), help="Least severe status that fails the gate.  [default: fail]")
@click.option("-o", "--output", "outputs", metavar="FORMAT[=PATH]", multiple=True, help="console, json, html, junit, markdown or github, to stdout or to PATH (repeatable).")
@click.option("--baseline", metavar="BASE.json", help="Compare every metric with this earlier JSON report (see `innaudit compare`).")
@click.option("--fail-on-regression", is_flag=True, help="With --baseline: a regressed metric fails the gate (exit 1).")
@click.option("--rel-tol", type=float, default=0.1, show_default=True, help="With --baseline: relative tolerance, tol = max(|base| * rel, abs).")
@click.option("--abs-tol", type=float, default=1e-6, show_default=True, help="With --baseline: absolute tolerance.")
@click.option("--timeout", type=float, metavar="SECONDS", help="Run in a child process and stop it after SECONDS; finished audits are kept, the run exits 2.")
@click.option("--max-memory", metavar="SIZE", help="Run in a child process limited to SIZE of memory (e.g. 4G); also the budget for checkpoint tensors.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 when a gate fails (never hides exit 2).")
@click.option("--progress/--no-progress", default=None, help="Progress bars on stderr.  [default: when stderr is a terminal]")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on stdout; files and the exit code only.")
@click.option("-v", "--verbose", count=True, help="-vv shows tracebacks of internal errors.")
def run(model: str, data: str | None, ood: tuple[str, ...], weights: str | None, weights_key: str | None,
        condition: str | None, trust_checkpoint: bool, config_path: str | None, audits: tuple[str, ...], skip: tuple[str, ...],
        samples: int | None, batch_size: int | None, seed: int | None, device: str | None,
        float64_check: bool | None, temperatures: tuple[float, ...], fail_on: str | None,
        outputs: tuple[str, ...], timeout: float | None, max_memory: str | None, exit_zero: bool,
        progress: bool | None, quiet: bool, verbose: int, attack_samples: int | None = None,
        epsilon: float | None = None, save_witnesses: str | None = None, **against: Any) -> int:
    """Audit MODEL: a checkpoint file, or a factory as package.module:callable or file.py:callable."""
    _STATE["verbose"] = verbose
    targets = _parse_outputs(outputs)
    base = _load_baseline(against)
    from .audits import specs
    from .config import load_config

    overrides = {"seed": seed, "samples": samples, "batch_size": batch_size, "device": device,
                 "float64_check": float64_check, "fail_on": fail_on, "data": data,
                 "ood": list(ood) or None, "audits": list(audits) or None, "skip": list(skip) or None}
    sections: dict[str, dict[str, Any]] = {"sampling": {"temperatures": list(temperatures)}} if temperatures else {}
    attack = {k: v for k, v in (("samples", attack_samples), ("epsilon", epsilon)) if v is not None}
    if attack:
        sections["attack"] = attack
    witness_dir = _witness_dir(save_witnesses)
    config = load_config(config_path, specs(), overrides, sections)
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout {timeout:g} must be positive (seconds)")
    from .isolation import Job

    job = Job(model, config, weights, weights_key, trust_checkpoint, _size(max_memory), condition)
    report = _audit(job, timeout, sys.stderr.isatty() if progress is None else progress)
    if base is not None:
        report = _compared(base, report, against)
    for warning in report.warnings:
        _err(f"warning: {warning}")
    _write_outputs(report, targets, quiet)
    if witness_dir is not None:
        _save_witnesses(report, witness_dir)
    if quiet or ("console", None) not in targets:  # the console table already ends with it
        from .render.console import verdict_line

        _err(verdict_line(report))
    code = int(report.exit_code)
    return 0 if exit_zero and code == 1 else code


def _witness_dir(path: str | None) -> Path | None:
    if path is None:
        return None
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"--save-witnesses {path!r} is not an existing folder; create it first")
    return folder


def _save_witnesses(report: Report, folder: Path) -> None:
    """Write the attack's witnesses: ``witnesses.npy`` (worst x' per sample, the model's input
    shape), ``originals.npy`` (the data x), ``witnesses.pt`` (both, with the starts and errors)."""
    import io

    import numpy as np
    import torch

    from .atomic import write_atomic

    found = [r.artifacts for a in report.audits if a.id == "attack" for r in a.results if r.artifacts]
    if not found:
        _err("warning: --save-witnesses: the attack audit did not run, so there is nothing to write")
        return
    art = found[0]

    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        return buffer.getvalue()

    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(np.ascontiguousarray(art[k])) for k in ("witnesses", "originals", "starts", "errors")}
               | {"epsilon": torch.tensor(float(art["epsilon"]), dtype=torch.float64)}, buffer)
    try:
        write_atomic(folder / "witnesses.npy", npy(art["witnesses"]))
        write_atomic(folder / "originals.npy", npy(art["originals"]))
        write_atomic(folder / "witnesses.pt", buffer.getvalue())
    except OSError as exc:
        raise UsageError(f"cannot write witnesses to {str(folder)!r}: {exc.strerror}") from None
    _err(f"wrote {len(art['witnesses'])} witness(es) to {folder}")


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
    if value < (64 << 20):
        raise UsageError(f"--max-memory {text!r} is not a size of at least 64M; expected e.g. 4G or 512M")
    return int(value)


def _audit(job: Job, timeout: float | None, progress: bool) -> Report:
    """In this process, or in a child one when a time or memory limit is asked for."""
    from .api import prepare
    from .isolation import run_isolated
    from .runner import run_audits

    with _ProgressObserver(progress) as observer:
        if timeout is not None or job.max_memory is not None:
            return run_isolated(job, timeout, observer)
        prepared = prepare(job.model, job.config, weights=job.weights, weights_key=job.weights_key,
                           trust=job.trust, condition=job.condition)
        return run_audits(prepared.loaded.model, prepared.datasets, job.config,
                          latent_shape=prepared.latent_shape, observer=observer,
                          target=prepared.loaded.target, warnings=prepared.loaded.warnings)


@cli.command("list")
def list_audits() -> None:
    """List the audits with their ids."""
    from .audits import REGISTRY

    for aid, cls in REGISTRY.items():
        click.echo(f"{aid:12s} {cls.title}")


@cli.command()
@click.argument("audit_id", metavar="ID")
def explain(audit_id: str) -> None:
    """Explain what audit ID checks, its formula, and how to read a failure."""
    import difflib

    from .audits import REGISTRY

    if audit_id not in REGISTRY:
        close = difflib.get_close_matches(audit_id, list(REGISTRY), n=1)
        raise UsageError(f"audit {audit_id!r} does not exist"
                         + (f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(REGISTRY)}"))
    click.echo(REGISTRY[audit_id].explain())


@cli.command()
@click.argument("path", default="innaudit.yaml", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: str, force: bool) -> None:
    """Write a commented default config to PATH (default innaudit.yaml)."""
    from .atomic import write_atomic
    from .audits import specs
    from .config_template import default_config_text

    target = Path(path)
    if target.exists() and not force:
        raise UsageError(f"{path} exists; pass --force to overwrite it")
    write_atomic(target, default_config_text(specs()))
    _err(f"wrote {path}")


@cli.command()
@click.argument("recipe")
@click.option("-o", "--output", "output", required=True, metavar="PATH", help="Where to write the checkpoint.")
@click.option("--seed", default=0, show_default=True, help="Training seed.")
@click.option("--regularizer", type=click.Choice(["none", "fd", "nf"]), default="none", show_default=True, help="Stabilizing regularizer: RECIPE --regularizer fd is the recipe RECIPE-fd.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr.")
def train(recipe: str, output: str, seed: int, regularizer: str, progress: bool | None) -> None:
    """Train the built-in RECIPE (digits-affine, digits-additive...) into a native checkpoint."""
    recipe = recipe if regularizer == "none" else f"{recipe}-{regularizer}"
    from rich.console import Console
    from rich.progress import Progress

    from .loading import file_sha256
    from .loading.native import save_checkpoint
    from .train import run_recipe

    target = Path(output)
    if not (target.parent if str(target.parent) else Path(".")).is_dir():
        raise UsageError(f"-o {output!r}: folder {str(target.parent)!r} does not exist")
    show = sys.stderr.isatty() if progress is None else progress
    with Progress(console=Console(stderr=True), transient=True, disable=not show) as bar:
        task = bar.add_task(f"train {recipe}", total=None)
        trained = run_recipe(recipe, seed=seed,
                             progress=lambda step, total: bar.update(task, completed=step, total=total))
    # the output path is left out of the recorded command: it does not change the file's bytes
    provenance = {**trained.provenance, "command": f"innaudit train {recipe} --seed {seed} -o PATH"}
    save_checkpoint(target, trained.module, trained.architecture, trained.config, trained.domain, provenance)
    click.echo(f"{output} sha256 {file_sha256(target)}")


# -- saved reports: render, compare, --baseline -------------------------------------------------
def _load_baseline(against: dict[str, Any]) -> Report | None:
    """Read ``--baseline`` before any audit runs, so a bad file fails fast (exit 2)."""
    from .report_io import load_report

    if against.get("baseline") is None:
        if against.get("fail_on_regression"):
            raise UsageError("--fail-on-regression needs --baseline BASE.json")
        return None
    return load_report(against["baseline"], "baseline")


def _compared(base: Report, report: Report, against: dict[str, Any]) -> Report:
    from dataclasses import replace

    from .baseline import compare

    comparison = compare(base, report, rel_tol=against["rel_tol"], abs_tol=against["abs_tol"],
                         gate=against["fail_on_regression"], base_name=against["baseline"])
    return replace(report, comparison=comparison)


@cli.command(epilog="Exit codes: 0 written, 2 the report cannot be read or has another schema_version.")
@click.argument("report_path", metavar="REPORT.json")
@click.option("-o", "--output", "outputs", metavar="FORMAT[=PATH]", multiple=True, help="console, json, html, junit, markdown or github, to stdout or to PATH (repeatable).")
def render(report_path: str, outputs: tuple[str, ...]) -> None:
    """Render a saved JSON report in any format: the same output as the run gave."""
    from .report_io import load_report

    targets = _parse_outputs(outputs)
    _write_outputs(load_report(report_path), targets, quiet=False)


@cli.command(epilog="Exit codes: 0 no regression gated, 1 a metric regressed and --fail-on-regression, 2 bad input.")
@click.argument("base_path", metavar="BASE.json")
@click.argument("new_path", metavar="NEW.json")
@click.option("--fail-on-regression", is_flag=True, help="Exit 1 when any metric regressed.")
@click.option("--rel-tol", type=float, default=0.1, show_default=True, help="Relative tolerance, tol = max(|base| * rel, abs).")
@click.option("--abs-tol", type=float, default=1e-6, show_default=True, help="Absolute tolerance.")
@click.option("-o", "--output", "outputs", metavar="FORMAT[=PATH]", multiple=True, help="The NEW report with the comparison, in any format (repeatable).")
def compare(base_path: str, new_path: str, fail_on_regression: bool, rel_tol: float, abs_tol: float,
            outputs: tuple[str, ...]) -> int:
    """Classify every metric of NEW against BASE: improved, unchanged, regressed, new or missing."""
    from .render.compare import table
    from .report_io import load_report

    targets = _parse_outputs(outputs)
    base, new = load_report(base_path, "baseline"), load_report(new_path, "report")
    report = _compared(base, new, {"rel_tol": rel_tol, "abs_tol": abs_tol, "baseline": base_path,
                                   "fail_on_regression": fail_on_regression})
    comparison = report.comparison
    assert comparison is not None
    if targets == [("console", None)] or not outputs:
        from rich.console import Console

        console = Console(file=sys.stdout, force_terminal=_color(), no_color=not _color(),
                          width=_width(), highlight=False)
        console.print(table(comparison))
        targets = [t for t in targets if t != ("console", None)]
    _write_outputs(report, targets, quiet=False)
    counts = ", ".join(f"{n} {c}" for c, n in comparison.counts.items() if n) or "nothing compared"
    code = 1 if comparison.gate_failed else 0
    _err(f"innaudit compare: {counts} (exit {code})")
    return code


# -- entry point -----------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI and exit with innaudit's codes: every error is 2, never a traceback."""
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="innaudit",
                        standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = 2
    except (click.Abort, KeyboardInterrupt):
        _err("innaudit: interrupted; no verdict (exit 2)")
        code = 2
    except InnauditError as exc:
        _err(f"error: {exc}")
        code = 2
    except Exception as exc:  # anything unexpected: still one line and exit 2
        if _STATE["verbose"] >= 2:
            traceback.print_exc()
        _err(f"internal error: {clean_text(f'{type(exc).__name__}: {exc}', 300)} "
             "(run with -vv for the traceback)")
        code = 2
    sys.exit(code if isinstance(code, int) else 0)

