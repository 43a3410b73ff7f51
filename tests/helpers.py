"""What the tests share: the repository's paths, the CLI in-process (:func:`invoke_cli`) and as a
real process (:func:`invoke_subprocess`), and a strict reader of JSON reports.

:func:`invoke_cli` is fast and is what most CLI tests use. :func:`invoke_subprocess` runs
``python -m innaudit`` in a fresh interpreter, for the tests that must show what a real process
prints (no traceback) and does (a pickle payload never runs), and that must control the
environment torch sees (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``). Import them from here
(``from tests.helpers import invoke_cli``), never from a ``conftest``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIXTURE_MODELS = Path(__file__).resolve().parent / "fixtures_models.py"

# Variables that change how torch.load or the output behaves; a subprocess starts without them.
_SCRUBBED = ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "FORCE_COLOR")


@dataclass(frozen=True)
class CliResult:
    """What one CLI invocation gave: the exit code and the two streams."""

    code: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        """The non-empty lines of stderr."""
        return [line for line in self.stderr.splitlines() if line.strip()]


def _exit_code(value: Any) -> int:
    if value is None:
        return 0
    return value if isinstance(value, int) else 1


def invoke_cli(*args: object) -> CliResult:
    """Run ``innaudit.cli.main(args)`` in this process and capture its exit code and streams."""
    from innaudit.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: Any = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        else:  # main() must always exit
            raise AssertionError("innaudit.cli.main returned without sys.exit")
    return CliResult(_exit_code(code), out.getvalue(), err.getvalue())


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for ``python -m innaudit``: the repo importable, no torch overrides."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(NO_COLOR="1", COLUMNS="120")
    env.update(extra or {})
    return env


def invoke_subprocess(
    *args: object, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> CliResult:
    """Run ``python -m innaudit ARGS`` in a fresh interpreter with :func:`subprocess_env`."""
    proc = subprocess.run(
        [sys.executable, "-m", "innaudit", *map(str, args)],
        capture_output=True,
        text=True,
        env=subprocess_env(env),
        cwd=cwd or REPO,
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def read_report(path: Path) -> dict[str, Any]:
    """Parse a JSON report strictly: a bare NaN or Infinity token fails the test."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds the non-standard JSON token {token}")

    return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=refuse)
