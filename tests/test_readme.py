"""The README's console sample is what the renderer prints for the shipped checkpoint.

The README shows ``$ COLUMNS=80 innaudit run checkpoints/digits-affine.pt ... --samples N --seed S``
followed by its output; this test runs that exact command (fixed seed, small sample count, the
README's width) and compares the text. After a deliberate change of the console, paste the new
output into the README.
"""

from __future__ import annotations

import doctest
import re
import shlex

import pytest

from .conftest import REPO, invoke_cli

README = REPO / "README.md"
PROMPT = "$ COLUMNS="


def _sample() -> tuple[dict[str, str], list[str], str]:
    """The README's first console block that starts with ``$ COLUMNS=``: env, arguments, output."""
    lines = README.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(PROMPT) and lines[i - 1] == "```\n")
    stop = next(i for i in range(start, len(lines)) if lines[i] == "```\n")
    command, output = lines[start].rstrip("\n"), "".join(lines[start + 1:stop])
    words = shlex.split(command[2:])
    env = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=\S*", w))
    args = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w)]
    return env, args, output


def test_the_readme_command_is_pinned() -> None:
    env, args, _ = _sample()
    assert env == {"COLUMNS": "80"} and args[:2] == ["innaudit", "run"]
    assert "--samples" in args and "--seed" in args  # small and fixed, so the numbers are stable


def test_the_readme_console_block_matches_the_renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    env, args, output = _sample()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.chdir(REPO)
    result = invoke_cli(*args[1:])
    assert result.code == 1, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= int(env["COLUMNS"])
    assert result.stdout == output, "README sample differs from the output:\n" + result.stdout


def test_readme_python_examples_run_as_written() -> None:
    """The README's ``>>>`` blocks (the Python API section) run and print what they show."""
    result = doctest.testfile(str(README), module_relative=False, verbose=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8, "the README lost its Python examples"
    assert result.failed == 0
