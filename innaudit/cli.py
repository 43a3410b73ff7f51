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
    from .config import Config
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
@click.option("--fail-on", type=click.Choice(["warn", "fail"]), help="Least severe status that fails the gate.  [default: fail]")
@click.option("-o", "--output", "outputs", metavar="FORMAT[=PATH]", multiple=True, help="console or json, to stdout or to PATH (repeatable).")
@click.option("--exit-zero", is_flag=True, help="Exit 0 when a gate fails (never hides exit 2).")
@click.option("--progress/--no-progress", default=None, help="Progress bars on stderr.  [default: when stderr is a terminal]")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on stdout; files and the exit code only.")
@click.option("-v", "--verbose", count=True, help="-vv shows tracebacks of internal errors.")
def run(model: str, data: str | None, ood: tuple[str, ...], weights: str | None, weights_key: str | None,
        trust_checkpoint: bool, config_path: str | None, audits: tuple[str, ...], skip: tuple[str, ...],
        samples: int | None, batch_size: int | None, seed: int | None, device: str | None,
        float64_check: bool | None, temperatures: tuple[float, ...], fail_on: str | None,
        outputs: tuple[str, ...], exit_zero: bool, progress: bool | None, quiet: bool, verbose: int) -> int:
    """Audit MODEL: a checkpoint file, or a factory as package.module:callable or file.py:callable."""
    _STATE["verbose"] = verbose
    targets = _parse_outputs(outputs)
    from .audits import specs
    from .config import load_config

    overrides = {"seed": seed, "samples": samples, "batch_size": batch_size, "device": device,
                 "float64_check": float64_check, "fail_on": fail_on, "data": data,
                 "ood": list(ood) or None, "audits": list(audits) or None, "skip": list(skip) or None}
    sections = {"sampling": {"temperatures": list(temperatures)}} if temperatures else {}
    config = load_config(config_path, specs(), overrides, sections)
    report = _audit(model, config, weights, weights_key, trust_checkpoint,
                    sys.stderr.isatty() if progress is None else progress)
    for warning in report.warnings:
        _err(f"warning: {warning}")
    _write_outputs(report, targets, quiet)
    from .render.console import verdict_line

    _err(verdict_line(report))
    code = int(report.exit_code)
    return 0 if exit_zero and code == 1 else code


def _audit(model: str, config: Config, weights: str | None, weights_key: str | None, trust: bool,
           progress: bool) -> Report:
    from .api import prepare
    from .runner import run_audits

    prepared = prepare(model, config, weights=weights, weights_key=weights_key, trust=trust)
    with _ProgressObserver(progress) as observer:
        return run_audits(prepared.loaded.model, prepared.datasets, config,
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
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr.")
def train(recipe: str, output: str, seed: int, progress: bool | None) -> None:
    """Train the built-in RECIPE (digits-affine, digits-additive...) into a native checkpoint."""
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

