"""``innaudit list``, ``explain``, ``init`` and ``train``."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any, BinaryIO

import click

from innaudit.cli.app import cli
from innaudit.cli.output import check_targets, echo, err, write_files
from innaudit.core.errors import UsageError, did_you_mean

__all__ = ["explain", "init", "list_audits", "train"]


@cli.command("list")
def list_audits() -> None:
    """List the audits with their ids, and the built-in data sets with where they come from."""
    from innaudit.audits import REGISTRY
    from innaudit.data import data_catalogue

    for aid, cls in REGISTRY.items():
        click.echo(f"{aid:12s} {cls.title}")
    click.echo("\nbuilt-in data sets (--data / --ood SPEC; files and folders: see docs/data.md)")
    for name, summary, provenance in data_catalogue():
        click.echo(f"{name:12s} {summary}")
        if provenance:
            click.echo(f"{'':12s} from: {provenance}")


@cli.command()
@click.argument("audit_id", metavar="ID")
def explain(audit_id: str) -> None:
    """Explain what audit ID checks, its formula, and how to read a failure."""
    from innaudit.audits import REGISTRY

    if audit_id not in REGISTRY:
        raise UsageError(f"audit {audit_id!r} does not exist{did_you_mean(audit_id, REGISTRY)}")
    click.echo(REGISTRY[audit_id].explain())


@cli.command()
@click.argument("path", default="innaudit.yaml", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: str, force: bool) -> None:
    """Write a commented default config to PATH (default innaudit.yaml; - is stdout)."""
    from innaudit.audits import specs
    from innaudit.config.template import default_config_text
    from innaudit.safeio.atomic import direct_target

    text = default_config_text(specs())
    if path == "-":
        echo(text)
        return
    target = Path(path)
    check_targets([], extra=[(f"init {path!r}", target)])
    if target.exists() and not direct_target(target) and not force:
        raise UsageError(f"{path} exists; pass --force to overwrite it")
    write_files([("the config", target, text)])
    err(f"wrote {path}")


@cli.command()
@click.argument("recipe")
@click.option(
    "-o", "--output", "output", required=True, metavar="PATH", help="Where to write the checkpoint (- is stdout)."
)
@click.option("--seed", default=0, show_default=True, help="Training seed.")
@click.option(
    "--regularizer",
    type=click.Choice(["none", "fd", "nf"]),
    default="none",
    show_default=True,
    help="Stabilizing regularizer: RECIPE --regularizer fd is the recipe RECIPE-fd.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr.")
@click.option(
    "--monitor-every",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Check invertibility every N steps (innaudit.monitor); the timeline goes into the checkpoint's provenance.",
)
@click.option(
    "--monitor-log",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PATH",
    help="Also write the monitor's checks to PATH as JSONL (for innaudit render).",
)
def train(
    recipe: str,
    output: str,
    seed: int,
    regularizer: str,
    progress: bool | None,
    monitor_every: int | None,
    monitor_log: str | None,
) -> None:
    """Train the built-in RECIPE (digits-affine, digits-additive...) into a native checkpoint."""
    recipe = recipe if regularizer == "none" else f"{recipe}-{regularizer}"
    from rich.console import Console
    from rich.progress import Progress

    from innaudit.loading.native import checkpoint_bytes
    from innaudit.train import run_recipe

    target = None if output == "-" else Path(output)  # -o - is stdout
    if monitor_log is not None and monitor_every is None:
        raise UsageError("--monitor-log needs --monitor-every N")
    log = [(f"--monitor-log {monitor_log!r}", Path(monitor_log))] if monitor_log is not None else []
    check_targets([], extra=[*([(f"-o {output!r}", target)] if target is not None else []), *log])
    hook = _recipe_monitor(monitor_every, monitor_log)
    show = sys.stderr.isatty() if progress is None else progress
    with Progress(console=Console(stderr=True), transient=True, disable=not show) as bar, _hooked(hook):
        task = bar.add_task(f"train {recipe}", total=None)
        trained = run_recipe(
            recipe, seed=seed, progress=lambda step, total: bar.update(task, completed=step, total=total)
        )
    # the output path is left out of the recorded command: it does not change the file's bytes
    command = f"innaudit train {recipe} --seed {seed}" + (f" --monitor-every {monitor_every}" if hook else "")
    provenance = {**trained.provenance, "command": f"{command} -o PATH"}
    if hook is not None:
        provenance["monitor"] = hook.provenance()
        for message in hook.warnings:
            err(f"monitor: {message}")
    data = checkpoint_bytes(trained.module, trained.architecture, trained.config, trained.domain, provenance)
    line = f"{output} sha256 {hashlib.sha256(data).hexdigest()}"
    if target is None:
        _binary_stdout(data)
        err(line)
        return
    write_files([("the checkpoint", target, data)])
    click.echo(line)


def _binary_stdout(data: bytes) -> None:
    """``train -o -``: the checkpoint's bytes on stdout."""
    stream: BinaryIO | None = getattr(sys.stdout, "buffer", None)
    if stream is None:
        raise UsageError("stdout takes no bytes here (closed, or not a file); pass -o PATH")
    try:
        stream.write(data)
        stream.flush()
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot write the checkpoint to stdout: {getattr(exc, 'strerror', None) or exc}") from None


def _recipe_monitor(every: int | None, log: str | None) -> Any:
    """The monitor hook of ``--monitor-every`` (None without it)."""
    if every is None:
        return None
    from innaudit.monitor.training import RecipeMonitor

    return RecipeMonitor(every, log)


def _hooked(hook: Any) -> Any:
    """The training-step hook context for ``hook`` (a no-op context without one)."""
    import contextlib

    from innaudit.train.hooks import step_hook

    return step_hook(hook) if hook is not None else contextlib.nullcontext()
