"""``innaudit repair``: from a failing audit to a fixed checkpoint, with the proof and the price."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from innaudit.cli.app import cli
from innaudit.cli.output import STATE, ProgressObserver, check_targets, err, input_paths, parse_outputs, write_outputs
from innaudit.core.errors import UsageError, clean_text
from innaudit.render import format_list

__all__ = ["repair"]

EPILOG = (
    "Exit codes: 0 repaired (the re-audit passes), nothing to repair, or --plan; 1 a failure remains "
    "or no remedy applies; 2 no trustworthy verdict (bad input, crash, Ctrl-C)."
)


def _checkpoint_target(output: str | None, plan: bool, inputs: list[Path]) -> str | None:
    """``-o PATH``: required unless ``--plan``, in a folder that exists, not an input of the run."""
    if output is None:
        if not plan:
            raise UsageError("repair needs -o PATH for the repaired checkpoint (or --plan to see the remedies only)")
        return None
    target = Path(output)
    if target.is_dir():
        raise UsageError(f"-o {clean_text(output, 300)!r} is a folder; expected a file path for the checkpoint")
    if not (target.parent if str(target.parent) else Path(".")).is_dir():
        raise UsageError(f"-o {clean_text(output, 300)!r}: folder {str(target.parent)!r} does not exist")
    if target.exists() and any(os.path.samefile(target, p) for p in inputs if p.exists()):
        raise UsageError(f"-o {clean_text(output, 300)!r} is an input of this repair; write the checkpoint elsewhere")
    if not os.access(target.parent if str(target.parent) else Path("."), os.W_OK):
        raise UsageError(f"-o {clean_text(output, 300)!r}: cannot write in that folder; choose a writable one")
    return output


@cli.command(epilog=EPILOG)
@click.argument("model")
@click.option(
    "--data",
    "data",
    required=True,
    metavar="SPEC",
    help="Training data the fine-tune draws from (digits:train, x.npy).",
)
@click.option(
    "--ood",
    "ood",
    metavar="[NAME=]SPEC",
    multiple=True,
    help="Held-out set of both audits (repeatable). Default: the noise battery.",
)
@click.option(
    "--test",
    "test",
    metavar="SPEC",
    help="Held-out split for the price and the audits.  [default: the model's test split, else 20 % of --data]",
)
@click.option(
    "--labels", metavar="FILE", help="Class labels of --data, for a supervised INN (built-in digits carry theirs)."
)
@click.option("--test-labels", metavar="FILE", help="Class labels of --test.")
@click.option("--weights", metavar="FILE", help="State dict to load into a factory MODEL.")
@click.option("--weights-key", metavar="KEY", help="Entry of a training dict holding the state dict.")
@click.option(
    "--before", "before", metavar="REPORT.json", help="Start from this saved report of MODEL instead of auditing it."
)
@click.option(
    "--config", "config_path", metavar="PATH", type=click.Path(dir_okay=False), help="YAML config of the audits."
)
@click.option(
    "--audit", "audits", metavar="ID", multiple=True, help="Audit only this (repeatable); the re-audit repeats it."
)
@click.option("--skip", metavar="ID", multiple=True, help="Leave this audit out (repeatable).")
@click.option("--samples", type=int, help="At most this many samples per set in the audits.  [default: 10000]")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the audits, the fine-tune and the checkpoint."
)
@click.option("--steps", type=int, default=300, show_default=True, help="Fine-tune steps.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Fine-tune learning rate (Adam).")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Fine-tune batch size.")
@click.option(
    "--margin", type=float, default=1.2, show_default=True, help="Bounded scale: c = MARGIN x max |h| on --data."
)
@click.option(
    "--monitor-every",
    type=click.IntRange(min=1),
    metavar="N",
    help="Monitor checks during the fine-tune.  [default: 5 per run]",
)
@click.option(
    "--budget", metavar="DURATION", help="Bound the whole repair (10m): 30 % per audit, the rest for the fine-tune."
)
@click.option("--plan", "show_plan", is_flag=True, help="Print the remedies chosen and why, and exit 0.")
@click.option("-o", "--output", "output", metavar="PATH", help="Where to write the repaired checkpoint.")
@click.option(
    "--report",
    "reports",
    metavar="FORMAT[=PATH]",
    multiple=True,
    help=f"The before/after report: {format_list()} (repeatable).",
)
@click.option("--progress/--no-progress", default=None, help="Audit progress on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on stdout.")
@click.option("-v", "--verbose", count=True, help="-vv shows tracebacks of internal errors.")
def repair(
    model: str,
    data: str,
    ood: tuple[str, ...],
    test: str | None,
    labels: str | None,
    test_labels: str | None,
    weights: str | None,
    weights_key: str | None,
    before: str | None,
    config_path: str | None,
    audits: tuple[str, ...],
    skip: tuple[str, ...],
    samples: int | None,
    seed: int,
    steps: int,
    lr: float,
    batch_size: int,
    margin: float,
    monitor_every: int | None,
    budget: str | None,
    show_plan: bool,
    output: str | None,
    reports: tuple[str, ...],
    progress: bool | None,
    quiet: bool,
    verbose: int,
) -> int:
    """Repair MODEL: audit it, apply the remedies its failures call for, fine-tune, re-audit, price."""
    STATE["verbose"] = verbose
    targets = parse_outputs(reports)
    inputs = input_paths(model, (weights, config_path, before, labels, test_labels), (data, test, *ood))
    checkpoint = _checkpoint_target(output, show_plan, inputs)
    check_targets(targets, [*inputs, *([Path(checkpoint)] if checkpoint else [])])
    from innaudit.audits import specs
    from innaudit.config.settings import load_config
    from innaudit.remedies.session import repair as run_repair
    from innaudit.remedies.summary import describe, describe_plan, verdict_line

    config = load_config(config_path, specs()) if config_path is not None else None
    mode = "off" if progress is False or (quiet and progress is None) else "bars" if sys.stderr.isatty() else "plain"
    with ProgressObserver(mode) as observer:
        result = run_repair(
            model,
            data=data,
            ood=list(ood) or None,
            test=test,
            labels=labels,
            test_labels=test_labels,
            audits=list(audits) or None,
            skip=list(skip) or None,
            samples=samples,
            seed=seed,
            config=config,
            before=before,
            weights=weights,
            weights_key=weights_key,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            margin=margin,
            monitor_every=monitor_every,
            budget=budget,
            output=None if show_plan else checkpoint,
            plan_only=show_plan,
            observer=observer,
        )
    lines = describe_plan(result.plan) if show_plan else describe(result)
    if not quiet:
        click.echo("\n".join(" " * (len(line) - len(line.lstrip())) + clean_text(line, 2000) for line in lines))
    if not show_plan:
        write_outputs(result.report, targets, quiet)
    err(verdict_line(result))
    return int(result.exit_code)
