"""Reading a YAML config within a budget: size cap, alias expansion bounded, no duplicate keys.

``yaml.safe_load`` runs no code, but it happily builds what a small file describes: nine lines
of anchors and aliases (each level a list of ten aliases of the one above) describe 10^9
strings, and any later ``repr`` of that value or walk over it takes minutes and gigabytes.
:func:`read_yaml` therefore

1. refuses a file over :data:`MAX_BYTES`;
2. composes the node graph first (an alias is one shared node, so this is linear in the
   file's size) and counts the nodes the document would have once every alias is expanded,
   refusing more than :data:`MAX_NODES` (and a recursive alias);
3. constructs the Python value only then, with a loader that refuses a key given twice in one
   mapping (YAML says keys are unique; PyYAML silently keeps the last) and reports an
   impossible date (``2099-13-45``) with its line instead of crashing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from innaudit.core.errors import ConfigError, clean_text

__all__ = ["MAX_BYTES", "MAX_NODES", "read_yaml"]

MAX_BYTES = 4 << 20
"""Largest config file read (4 MiB); a real config is a few kilobytes."""

MAX_NODES = 100_000
"""Most YAML nodes a document may expand to (aliases counted once per use)."""


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys and reports bad dates as YAML errors."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode):
                if key_node.value in seen:
                    raise ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"the key {clean_text(key_node.value, 80)!r} is given twice",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node: ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError) as exc:
            raise ConstructorError(
                None, None, f"{clean_text(node.value, 40)!r} is not a date ({exc})", node.start_mark
            ) from None


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def expanded_size(root: Node, limit: int = MAX_NODES) -> int:
    """Nodes of ``root``'s document with every alias expanded, stopping once over ``limit``.

    Each distinct node's expanded size is computed once (post-order, no recursion), so a
    billion-node alias bomb costs as much as its few dozen distinct nodes.

    Raises:
        ConfigError: an alias refers to a node that contains it (an infinite document).
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            active.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if key in sizes:
            continue
        if key in active:
            raise ConfigError(
                "the YAML document refers to itself through an alias (an infinite value); expected a tree"
            )
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _describe(exc: yaml.YAMLError) -> str:
    """``problem at line L, column C`` for a marked YAML error, else its first line."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return clean_text(f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}", 300)
    return clean_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 300)


def read_yaml(path: Path) -> Any:
    """The YAML document of ``path`` as plain data, within the budget of the module docstring.

    Raises:
        ConfigError: the file cannot be read, is too big, expands too far, or is not valid YAML.
    """
    shown = clean_text(path, 300)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config file {shown!r} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"config file {shown} is over {MAX_BYTES >> 20} MiB; a config is a few kilobytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {shown} is not UTF-8 text; expected a YAML file") from None
    try:
        loader = _Loader(text)  # the reader refuses control characters here
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {shown} is not valid YAML: {_describe(exc)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = expanded_size(node)
        if size > MAX_NODES:
            raise ConfigError(
                f"config file {shown} expands to more than {MAX_NODES} YAML nodes "
                "(aliases of aliases, a 'billion laughs' document); expected a plain config"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {shown} is not valid YAML: {_describe(exc)}") from None
    except RecursionError:
        raise ConfigError(f"config file {shown} is nested too deeply; expected a plain config") from None
    finally:
        loader.dispose()
