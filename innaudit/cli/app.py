"""The click group and the entry point that maps every outcome to innaudit's exit codes."""

from __future__ import annotations

import contextlib
import faulthandler
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import TextIO

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
    """Run the CLI and exit with innaudit's codes: every error is 2, never a traceback.

    Called as the program (``argv`` None), it enables :mod:`faulthandler` (a segfault names
    itself on stderr), makes a C-level ``exit()`` by model code exit 2, and ends the process with
    ``os._exit(code)`` once everything is written and flushed: no ``atexit`` handler a model
    registered, no thread it left running, can change or delay the exit code. While the command
    runs, ``os._exit`` called by model code raises instead of ending the process, and SIGTERM /
    SIGHUP stop the run with its partial report (:mod:`innaudit.run.guard`).
    """
    from innaudit.run.guard import c_exit_fails, exits_raise, real_exit, stopping_on

    real = argv is None
    code = 2
    try:
        if real:
            c_exit_fails()
            if sys.stderr is not None:
                with contextlib.suppress(Exception):
                    faulthandler.enable(file=sys.stderr, all_threads=False)
        with _warnings_routed(), exits_raise(), stopping_on():
            code = _run(argv)
        if not real:
            sys.exit(code)
        code = _flushed(code)
    finally:
        if real:  # always, even past an error here: Python's own shutdown never runs
            real_exit(code)


def _flushed(code: int) -> int:
    """Flush stdout and stderr; a report that could not all get out is exit 2."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            code = 2 if stream is sys.stdout else code
    return code


def _run(argv: Sequence[str] | None) -> int:
    """The command's exit code, every outcome mapped (see :data:`EXIT_HELP`)."""
    from innaudit.run.guard import ModelExit, Stopped

    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="innaudit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except ModelExit as exc:
        err(f"error: something the model uses called {exc} during the run; no verdict (exit 2)")
        code = 2
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
    except Stopped as exc:
        err(f"innaudit: stopped by {exc}; no verdict (exit 2)")
        code = 2
    except (click.Abort, KeyboardInterrupt):
        err("innaudit: interrupted; no verdict (exit 2)")
        code = 2
    except InnauditError as exc:
        err(f"error: {exc}")
        code = 2
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "can't allocate memory" not in str(exc):
            code = _internal(exc)
        else:
            err(
                f"error: out of memory ({clean_text(exc, 200) or 'MemoryError'}); no verdict (exit 2): "
                "lower --samples or --batch-size, or run under --max-memory to bound it"
            )
            code = 2
    except Exception as exc:  # anything unexpected: still one line and exit 2
        code = _internal(exc)
    except BaseException as exc:  # GeneratorExit or another BaseException raised by model code
        err(
            f"error: the model raised {clean_text(f'{type(exc).__name__}: {exc}', 300)}, which is not an "
            "Exception; no verdict (exit 2)"
        )
        code = 2
    return code if isinstance(code, int) else 0


def _internal(exc: Exception) -> int:
    """An error innaudit did not foresee: one line (the traceback with ``-vv``), exit 2."""
    if STATE["verbose"] >= 2:
        traceback.print_exc()
    err(f"internal error: {clean_text(f'{type(exc).__name__}: {exc}', 300)} (run with -vv for the traceback)")
    return 2


@contextlib.contextmanager
def _warnings_routed() -> Iterator[None]:
    """Print Python warnings (a library's, matplotlib's missing-glyph notes) as one sanitized
    line each while the command runs: their text may quote a set name or a model's string."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        err(f"{category.__name__}: {message}")

    previous, warnings.showwarning = warnings.showwarning, show
    try:
        yield
    finally:
        warnings.showwarning = previous
