"""The click group and the entry point that maps every outcome to innaudit's exit codes."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import click

from innaudit._version import __version__
from innaudit.cli.output import STATE, err
from innaudit.core.errors import InnauditError, clean_text

__all__ = ["EXIT_HELP", "cli", "main"]

EXIT_HELP = "Exit codes: 0 pass, 1 a gate failed, 2 no trustworthy verdict (bad input, crash, Ctrl-C)."


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=EXIT_HELP)
@click.version_option(__version__, prog_name="innaudit")
def cli() -> None:
    """Audit trained invertible neural networks (normalizing flows) for numerical invertibility."""


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI and exit with innaudit's codes: every error is 2, never a traceback."""
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="innaudit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except SystemExit as exc:  # click never raises it here: a library called sys.exit mid-run
        err(
            f"error: something the model uses called sys.exit({clean_text(repr(exc.code), 40)}) during "
            "the run; no verdict (exit 2)"
        )
        code = 2
    except click.ClickException as exc:  # its message may quote what the user typed: sanitized
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            click.echo(f"{exc.ctx.get_usage()}\nTry '{exc.ctx.command_path} -h' for help.\n", err=True)
        err(f"Error: {exc.format_message()}")
        code = 2
    except (click.Abort, KeyboardInterrupt):
        err("innaudit: interrupted; no verdict (exit 2)")
        code = 2
    except InnauditError as exc:
        err(f"error: {exc}")
        code = 2
    except Exception as exc:  # anything unexpected: still one line and exit 2
        if STATE["verbose"] >= 2:
            traceback.print_exc()
        err(f"internal error: {clean_text(f'{type(exc).__name__}: {exc}', 300)} (run with -vv for the traceback)")
        code = 2
    code = code if isinstance(code, int) else 0
    if argv is None:
        _leave_strays(code)
    sys.exit(code)


def _leave_strays(code: int) -> None:
    """Exit now, with ``code``, when a model left non-daemon threads running: Python would wait
    for them forever after the report was written (only for the real process, not in-process
    callers that pass ``argv``)."""
    import os
    import threading

    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
