"""The package's layers, held against its imports (every import: module level, in functions,
and under ``TYPE_CHECKING``): no module imports from a higher layer, and no import circle.

Layers, bottom to top (each may import its own layer without circles, and any lower one):
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "innaudit"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "core"),
    ("config",),
    ("verdict",),
    ("safeio", "model", "linalg"),
    ("zoo",),
    ("loading",),
    ("data",),
    ("audits",),
    ("run",),
    ("train", "render"),
    ("api", "report", "monitor", "remedies"),
    ("cli", "__main__", "__init__"),
)
"""Top-level names of ``innaudit`` (modules or packages), grouped by layer."""

ALLOWED_UPWARD: dict[tuple[str, str], str] = {}
"""Upward edges kept on purpose, with the reason (none)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every ``innaudit.*`` module ``path`` imports, resolved to absolute names: ``from X import
    y`` counts as importing ``X.y`` when that is a module, else ``X``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("innaudit")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("innaudit"):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: {m for m in _imports(path, modules) if m in modules and m != name} for name, path in paths.items()}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    top = _top(module)
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"innaudit.{top} is in no layer of tests/test_architecture.py; place it")


def test_every_module_has_a_layer() -> None:
    for module in _graph():
        _layer(module)


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = sorted(
        f"{a} -> {b}"
        for a, targets in _graph().items()
        for b in targets
        if _layer(b) > _layer(a) and (_top(a), _top(b)) not in ALLOWED_UPWARD
    )
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circle() -> None:
    graph = _graph()
    # a package's __init__ re-exporting its own modules is not a circle of the design
    edges = {
        a: {
            b
            for b in targets
            if not (a == b.rpartition(".")[0] and _is_package(a)) and (_top(a), _top(b)) not in ALLOWED_UPWARD
        }
        for a, targets in graph.items()
    }
    circle = _cycle(edges)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def _is_package(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").is_file()


RENDERER_READS = {
    "innaudit.core.results",
    "innaudit.core.metrics",
    "innaudit.core.errors",
    "innaudit.core.stats",
    "innaudit.verdict.report_json",
    "innaudit.verdict.diagnosis",
}
"""What a renderer may read besides ``innaudit.render``: the Report, its JSON form, the diagnosis."""


@pytest.mark.parametrize("module", ["innaudit.render.console", "innaudit.render.html"])
def test_renderers_import_only_the_report_layers(module: str) -> None:
    reached = {m for m in _graph()[module] if not m.startswith("innaudit.render")}
    assert reached <= RENDERER_READS, reached - RENDERER_READS


MAX_RUN_PARAMETERS = 5
"""The most parameters a function of ``innaudit/run/`` takes (what travels together is a record)."""


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs) if a.arg not in ("self", "cls")]
    return names + [f"*{a.arg}" for a in (args.vararg, args.kwarg) if a is not None]


def test_no_function_of_the_run_takes_more_than_five_parameters() -> None:
    wide = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}({', '.join(_parameters(node))})"
        for path in sorted((PACKAGE / "run").glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(_parameters(node)) > MAX_RUN_PARAMETERS
    ]
    assert not wide, wide


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def _documented_layers() -> list[tuple[list[str], list[str]]]:
    """The layer table of ``docs/architecture.md``: per row, its packages and the modules it
    names (``name`` within the row's one package, or ``package.name``)."""
    rows = []
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            rows.append((re.findall(r"`([\w.]+)`", cells[1]), re.findall(r"`([\w.]+)`", cells[2])))
    return rows


def _exists(dotted: str) -> bool:
    path = PACKAGE.parent / dotted.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_the_architecture_page_names_only_what_exists_and_every_layer() -> None:
    """Every package and module the layer table names exists, its rows are the layer test's
    layers in order, and the small packages' rows name every module they hold."""
    rows = _documented_layers()
    assert [tuple(p) for p, _ in rows] == [tuple(n for n in names if n != "_version") for names in LAYERS]
    for packages, modules in rows:
        for module in modules:
            dotted = module if "." in module else f"{packages[0]}.{module}"
            assert len(packages) == 1 or "." in module, (packages, module)
            assert _exists(f"innaudit.{dotted}"), f"docs/architecture.md names innaudit.{dotted}, which does not exist"
    complete = {"core", "config", "verdict", "run", "model", "safeio"}
    named = {m if "." in m else f"{p[0]}.{m}" for p, ms in rows for m in ms}
    for package in complete:
        held = {f"{package}.{f.stem}" for f in (PACKAGE / package).glob("*.py") if f.stem != "__init__"}
        assert held <= named, f"docs/architecture.md does not name {sorted(held - named)}"


def test_the_layer_test_lists_only_what_exists() -> None:
    for names in LAYERS:
        for name in names:
            assert _exists(f"innaudit.{name}"), f"LAYERS names innaudit.{name}, which does not exist"


OPTIONAL_ON_USE = {
    "safetensors",
    "zuko",
    "normflows",
    "FrEIA",
    "nflows",
    "pyro",
    "memcnn",
    "matplotlib",
    "skimage",
    "PIL",
    "pyarrow",
    "lightning",
    "transformers",
    "torch.distributed",
    "ctypes",
    "posix",
    "resource",
}
"""Libraries a function outside ``cli/`` may import on use: optional extras and platform
modules (``docs/architecture.md``, "Function-level imports")."""


def test_function_level_imports_outside_the_cli_are_optional_or_platform_libraries() -> None:
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    names = [a.name for a in inner.names]
                elif isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                    names = [inner.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    allowed = top == "innaudit" or any(name == o or name.startswith(o + ".") for o in OPTIONAL_ON_USE)
                    if not allowed:
                        found.append(f"{path.relative_to(PACKAGE.parent)}:{inner.lineno} {node.name} imports {name}")
    assert not found, "import these at module level:\n" + "\n".join(sorted(found))


def test_tests_import_their_helpers_from_tests_helpers_never_from_a_conftest() -> None:
    tests = PACKAGE.parent / "tests"
    found = [
        str(path.relative_to(tests))
        for path in tests.rglob("*.py")
        if path.name != "conftest.py" and re.search(r"^\s*from \S*conftest import", path.read_text(), re.M)
    ]
    assert not found, found
