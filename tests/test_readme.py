"""The README's console samples are what the renderer prints for the shipped checkpoints.

The README shows ``$ COLUMNS=80 innaudit run checkpoints/... --seed S`` blocks followed by their
output; this test runs each exact command (fixed seed, the README's width) and compares the text.
After a deliberate change of the console, paste the new output into the README. The samples
come from one torch thread, as the tests run (``tests/conftest.py``): with another thread count
the last digit of an error can differ, since float sums are reduced in another order.
"""

from __future__ import annotations

import doctest
import re
import shlex

import pytest

from .conftest import REPO, invoke_cli

README = REPO / "README.md"
PROMPT = "$ COLUMNS="


def _samples() -> list[tuple[dict[str, str], list[str], str]]:
    """Every README console block that starts with ``$ COLUMNS=``: env, arguments, output."""
    lines = README.read_text(encoding="utf-8").splitlines(keepends=True)
    found = []
    for start in (i for i, line in enumerate(lines) if line.startswith(PROMPT) and lines[i - 1] == "```\n"):
        stop = next(i for i in range(start, len(lines)) if lines[i] == "```\n")
        command, output = lines[start].rstrip("\n"), "".join(lines[start + 1:stop])
        words = shlex.split(command[2:])
        env = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=\S*", w))
        args = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w)]
        found.append((env, args, output))
    return found


SAMPLES = _samples()
# the deep flow's sample runs the default 200-step attack
MARKS = {1: pytest.mark.slow}


def test_the_readme_commands_are_pinned() -> None:
    assert len(SAMPLES) == 2, "expected the digits-affine and digits-affine-deep samples"
    for env, args, _ in SAMPLES:
        assert env == {"COLUMNS": "80"} and args[:2] == ["innaudit", "run"]
        assert "--seed" in args  # fixed, so the numbers are stable


@pytest.mark.parametrize("index", [pytest.param(i, marks=MARKS.get(i, ())) for i in range(len(SAMPLES))])
def test_the_readme_console_blocks_match_the_renderer(monkeypatch: pytest.MonkeyPatch, index: int) -> None:
    env, args, output = SAMPLES[index]
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
