"""The command line: a thin click layer over the library.

Only this package imports click, writes to streams or writes files. Exit codes: 0 every audit
passed its gate; 1 a gate failed; 2 no trustworthy verdict (usage, config or load error, a
crashed audit, Ctrl-C). Torch is imported only inside commands, so ``--help`` is instant.

``app`` holds the click group and the entry point, ``output`` the report writing and progress
bars, ``run`` the ``run`` command, ``reports`` ``render`` / ``compare`` / ``--baseline``, and
``commands`` ``list``, ``explain``, ``init`` and ``train``, ``repair`` ``repair``.
"""

from __future__ import annotations

from innaudit.cli import commands, repair, reports, run  # noqa: F401  (registers the commands on the group)
from innaudit.cli.app import EXIT_HELP, cli, main

__all__ = ["EXIT_HELP", "cli", "main"]
