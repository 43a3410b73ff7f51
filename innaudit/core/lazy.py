"""Public names imported on first use (PEP 562, https://peps.python.org/pep-0562/): a package's
``__getattr__`` that imports the module a name lives in only when the name is first read, so
importing the package stays cheap (``innaudit --help`` never imports torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(namespace: MutableMapping[str, Any], table: Mapping[str, str], package: str) -> Callable[[str], Any]:
    """The module-level ``__getattr__`` of ``package``: a name of ``table`` (name -> module) is
    imported from its module on first use and kept in ``namespace`` (the package's
    ``globals()``), so later reads do not come back here; any other name raises
    :class:`AttributeError` as a module does."""

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
