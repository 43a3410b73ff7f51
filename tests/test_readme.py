"""The console samples of the README and of ``docs/`` are what the renderer prints for the
shipped checkpoints.

The README and the pages under ``docs/`` show ``$ COLUMNS=80 innaudit run checkpoints/... --seed S``
blocks followed by their output; this test runs each exact command (fixed seed, the page's
width) and compares the text. After a deliberate change of the console, paste the new output
into the page. The samples
come from one torch thread, as the tests run (``tests/conftest.py``): with another thread count
the last digit of an error can differ, since float sums are reduced in another order.
"""

from __future__ import annotations

import doctest
import math
import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import REPO, invoke_cli

README = REPO / "README.md"
PAGES = (README, *sorted((REPO / "docs").glob("*.md")))
PROMPT = "$ COLUMNS="


def _samples() -> list[tuple[dict[str, str], list[str], str]]:
    """Every console block of the README and of ``docs/`` that starts with ``$ COLUMNS=``: env,
    arguments, output, in page order."""
    found = []
    for page in PAGES:
        found += _page_samples(page)
    return found


def _page_samples(page: Path) -> list[tuple[dict[str, str], list[str], str]]:
    """The ``$ COLUMNS=`` console blocks of one page."""
    lines = page.read_text(encoding="utf-8").splitlines(keepends=True)
    found = []
    for start in (i for i, line in enumerate(lines) if line.startswith(PROMPT) and lines[i - 1] == "```\n"):
        stop = next(i for i in range(start, len(lines)) if lines[i] == "```\n")
        command, output = lines[start].rstrip("\n"), "".join(lines[start + 1 : stop])
        words = shlex.split(command[2:])
        env = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=\S*", w))
        args = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w)]
        found.append((env, args, output))
    return found


# a number, with the "<" or ">" of a bound ("<0.1 %", ">99.9 %")
NUMBER = re.compile(r"[<>]?-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _skeleton(text: str) -> tuple[str, list[str]]:
    """``text`` with every number replaced by ``#`` and runs of blanks made one space (a wider
    number shifts the columns and the wrapping), and the numbers in order."""
    return " ".join(NUMBER.sub("#", text).split()), NUMBER.findall(text)


def _close(shown: str, got: str) -> bool:
    """Whether the printed number ``got`` stands for the README's ``shown`` (module docstring)."""
    if not re.search(r"[.e]", shown + got):
        return shown == got
    a, b = (float(n.lstrip("<>")) for n in (shown, got))
    if a == 0.0 or b == 0.0:
        return a == b
    return abs(math.log10(a / b)) <= 1.0


ROW = re.compile(r"^(\s+)(\S+)(\s+)(PASS|WARN|FAIL)(\s+)([<>]?\d+(?:\.\d+)?) %(\s+)(\S+)$")
FINDING = re.compile(r"^((?:FAIL|WARN) (\w+)\[([^\]]+)\] max relative round-trip error )(\S+)( .*)$")
WARN, FAIL = 1e-4, 1e-2  # the roundtrip gate's limits


def _band(number: str) -> str:
    """A max relative error by the gate band it falls in (``nan`` and ``inf`` as themselves)."""
    try:
        value = float(number)
    except ValueError:
        return number
    if value != value or value == float("inf"):
        return number
    return "[below 1e-4]" if value <= WARN else "[1e-4 to 1e-2]" if value <= FAIL else "[above 1e-2]"


def _banded(text: str) -> str:
    """``text`` with each max relative error of a partly non-finite set replaced by its gate
    band (module docstring of this test): the largest error over the few finite samples of a
    set whose round trips mostly overflow is a sample at the edge of overflow, a rounding-level
    figure that differs between x86 CPUs (0.00551 on one, 0.000385 on another, same torch);
    what it means is which side of the gate's limits it falls on."""
    lines, audit, partly = text.splitlines(), "", set()
    for i, line in enumerate(lines):
        if line and not line.startswith(" "):
            audit = line.split()[0]
        row = ROW.match(line)
        if row and audit == "roundtrip" and row.group(6) not in ("0.0", "100.0"):
            partly.add(row.group(2))
            lines[i] = line[: row.start(8)] + _band(row.group(8))
        finding = FINDING.match(line)
        if finding and finding.group(2) == "roundtrip" and finding.group(3) in partly:
            lines[i] = finding.group(1) + _band(finding.group(4)) + finding.group(5)
    return "\n".join(lines)


def _differences(shown: str, got: str) -> list[str]:
    """What makes ``got`` another output than the README's ``shown``; empty when it is the same."""
    (form, numbers), (got_form, got_numbers) = _skeleton(_banded(shown)), _skeleton(_banded(got))
    if form != got_form:
        return ["the text differs, not only its numbers"]
    return [f"{a} -> {b}" for a, b in zip(numbers, got_numbers, strict=True) if not _close(a, b)]


SAMPLES = _samples()
# the deep flow's sample runs the default 200-step attack
MARKS = {1: pytest.mark.slow}


def test_the_readme_commands_are_pinned() -> None:
    assert len(SAMPLES) == 2, "expected the digits-affine (README) and digits-affine-deep (docs/attack.md) samples"
    assert len(_page_samples(README)) == 1, "the README shows the digits-affine sample"
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
    differences = _differences(output, result.stdout)
    assert not differences, f"README sample differs from the output ({differences}):\n" + result.stdout


def test_the_sample_comparison_lets_round_off_through_and_nothing_else() -> None:
    shown = "digits:test  PASS   0.0 %   4.33e-07\nFAIL 6.2 % [95 % 0.8 %, 20.8 %] of 32 points, 21:Coupling[21]"
    assert _differences(shown, shown) == []
    assert _differences(shown, shown.replace("4.33e-07", "3.81e-07").replace("% 0.8 %", "% <0.1 %")) == []
    assert _differences(shown, shown.replace("PASS", "FAIL")) == ["the text differs, not only its numbers"]
    assert _differences(shown, shown.replace("4.33e-07", "5.1e-05")) == ["4.33e-07 -> 5.1e-05"]
    assert _differences(shown, shown.replace("0.0 %", "0.3 %")) == ["0.0 -> 0.3"]
    assert _differences(shown, shown.replace("of 32", "of 31")) == ["32 -> 31"]
    assert _differences(shown, shown.replace("[21]", "[18]")) == ["21 -> 18"]


def test_a_partly_non_finite_set_s_max_error_is_compared_by_its_gate_band() -> None:
    """The README's gaussian row and finding (97.7 % non-finite) at two CPUs' figures compare
    equal; the same figure crossing the fail limit, or the same change on a set without
    non-finite samples, does not."""
    shown = (
        "roundtrip  set          status  non-finite  max rel err\n"
        "           digits:test  PASS         0.0 %     4.33e-07\n"
        "           gaussian     FAIL        97.7 %      0.00551\n"
        "WARN roundtrip[gaussian] max relative round-trip error 0.00551 (warns above\n"
    )
    assert _differences(shown, shown.replace("0.00551", "0.000385")) == []
    assert _differences(shown, shown.replace("0.00551", "0.0551")) == ["the text differs, not only its numbers"]
    assert _differences(shown, shown.replace("4.33e-07", "6.1e-05")) == ["4.33e-07 -> 6.1e-05"]


def test_readme_python_examples_run_as_written() -> None:
    """The ``>>>`` blocks of ``docs/api.md`` (the Python API) run and print what they show."""
    result = doctest.testfile(
        str(REPO / "docs" / "api.md"),
        module_relative=False,
        verbose=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.attempted >= 8, "docs/api.md lost its Python examples"
    assert result.failed == 0


def test_the_api_page_draws_the_whole_error_tree() -> None:
    """``docs/api.md``'s error tree is the class tree of ``innaudit.core.errors``: every
    subclass of ``InnauditError`` under its own parent, none missing (``DistributedError`` was)."""
    from innaudit.core import errors

    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    block = text.split("```text\nInnauditError", 1)[1].split("```", 1)[0]
    drawn: dict[str, str] = {}
    parents = ["InnauditError"]
    for line in block.splitlines()[1:]:
        match = re.match(r"^([│ ]*)[├└]── (\w+)", line)
        assert match, line
        depth = len(match.group(1)) // 4
        del parents[depth + 1 :]
        drawn[match.group(2)] = parents[depth]
        parents.append(match.group(2))
    classes = {
        name: cls.__mro__[1].__name__
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.InnauditError) and cls is not errors.InnauditError
    }
    assert drawn == classes


def test_every_relative_link_of_the_readme_and_docs_points_at_a_file() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken
    assert len(_page_samples(README)) + len(re.findall(r"\]\(docs/", README.read_text(encoding="utf-8"))) > 10
