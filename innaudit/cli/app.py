"""The click group and the entry point that maps every outcome to innaudit's exit codes."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import click

from .._version import __version__
from ..errors import InnauditError, clean_text
from .output import STATE, err

__all__ = ["EXIT_HELP", "cli", "main"]

EXIT_HELP = "Exit codes: 0 pass, 1 a gate failed, 2 no trustworthy verdict (bad input, crash, Ctrl-C)."


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_HELP)
@click.version_option(__version__, prog_name="innaudit")
def cli() -> None:
    """Audit trained invertible neural networks (normalizing flows) for numerical invertibility."""


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
        err("innaudit: interrupted; no verdict (exit 2)")
        code = 2
    except InnauditError as exc:
        err(f"error: {exc}")
        code = 2
    except Exception as exc:  # anything unexpected: still one line and exit 2
        if STATE["verbose"] >= 2:
            traceback.print_exc()
        err(f"internal error: {clean_text(f'{type(exc).__name__}: {exc}', 300)} "
             "(run with -vv for the traceback)")
        code = 2
    sys.exit(code if isinstance(code, int) else 0)

