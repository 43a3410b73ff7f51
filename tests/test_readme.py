"""The README's Python examples run as written (doctest of its ``>>>`` blocks)."""

from __future__ import annotations

import doctest

from .conftest import REPO


def test_readme_python_examples_run_as_written() -> None:
    result = doctest.testfile(str(REPO / "README.md"), module_relative=False, verbose=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8, "the README lost its Python examples"
    assert result.failed == 0
