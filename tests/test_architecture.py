"""The layout of `pytest_mtmcs/` as docs/ARCHITECTURE.md draws it, checked on the source.

Imports are parsed with `ast` (function-level imports included; `if TYPE_CHECKING:` blocks left
out, since they never run). Every module belongs to a layer; a module may import its own layer and
the layers below it, never one above. Nothing below `harness/` and `cli/` imports pytest, and the
runtime import graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_mtmcs"

# Bottom to top. A module may import modules of its own layer or of a lower one.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        ("records", "errors", "defaults", "registry", "paths", "jsonl", "__init__", "__main__"),
    ),
    ("analysis", ("analysis",)),
    ("suite", ("suite",)),
    ("backends", ("backends",)),
    ("judges", ("judges",)),
    ("engine", ("engine",)),
    ("baseline", ("baseline",)),
    ("outcome", ("outcome",)),
    ("top", ("harness", "cli", "plugin", "testing", "training", "checkpoints")),
)
# `python -m pytest_mtmcs` runs the command line: the one upward import of the base layer.
ALLOWED = {("__main__", "cli")}
PYTEST_FREE = ("base", "analysis", "suite", "backends", "judges", "engine", "baseline", "outcome")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) or "__init__"


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports(path: Path) -> set[str]:
    """The modules `path` imports when it runs: pytest_mtmcs modules by dotted name (without the
    package prefix), other top-level packages by name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                found.add(
                    a.name.removeprefix("pytest_mtmcs.")
                    if a.name.startswith("pytest_mtmcs.")
                    else a.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "pytest_mtmcs" or node.module.startswith("pytest_mtmcs."):
                mod = node.module.removeprefix("pytest_mtmcs").lstrip(".")
                if mod:
                    found.add(mod)
                for a in node.names:  # `from pytest_mtmcs.x import y` may import module x.y
                    found.add(f"{mod}.{a.name}" if mod else a.name)
            else:
                found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "checkpoints" not in p.parts}


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    for i, (_, members) in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"module {module} is in no layer of docs/ARCHITECTURE.md")


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {i for i in imports(p) if i in mods and i != m} for m, p in mods.items()}


def test_every_module_has_a_layer() -> None:
    for m in modules():
        layer_of(m)


def test_the_parser_sees_function_level_imports() -> None:
    g = graph()
    assert "outcome.finish" in g["harness.controller"]  # imported inside a method
    assert "outcome.model" in g["outcome.gate"]


def test_no_module_imports_a_layer_above_its_own() -> None:
    wrong = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {i} ({LAYERS[layer_of(i)][0]})"
        for m, deps in sorted(graph().items())
        for i in sorted(deps)
        if layer_of(i) > layer_of(m) and (m, i.split(".")[0]) not in ALLOWED
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("layer", PYTEST_FREE)
def test_nothing_below_the_harness_imports_pytest(layer: str) -> None:
    mods = modules()
    users = [
        m
        for m, p in sorted(mods.items())
        if LAYERS[layer_of(m)][0] == layer and {"pytest", "_pytest", "xdist"} & imports(p)
    ]
    assert not users, f"{layer}: {users} import pytest"


def test_cli_imports_no_pytest() -> None:
    mods = modules()
    users = [
        m for m, p in mods.items() if m.startswith("cli") and {"pytest", "_pytest"} & imports(p)
    ]
    assert not users, users


def test_the_import_graph_has_no_cycle() -> None:
    g = graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                cycle = [*path[path.index(n) :], n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                dfs(n)
        path.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            dfs(m)


def test_at_most_a_few_modules_at_the_top() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 10, top
