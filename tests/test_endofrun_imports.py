"""The end-of-run modules form a line: session / merge -> finish -> aggregate, summary, report,
baseline_update -> outcome. Checked on the source (imports parsed with `ast`, function-level
imports included, `if TYPE_CHECKING:` blocks left out since they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_mtmcs"
END_OF_RUN = (
    "session",
    "merge",
    "finish",
    "aggregate",
    "summary",
    "report",
    "report_html",
    "baseline_update",
    "shards",
    "outcome",
)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) or "__init__"


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """The pytest_mtmcs modules `path` imports when it runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path)
    pkg = here.rsplit(".", 1)[0] if "." in here else ""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("pytest_mtmcs."):
                    found.add(a.name.removeprefix("pytest_mtmcs."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: max(0, len(pkg.split(".")) - node.level + 1)] if pkg else []
                mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("pytest_mtmcs"):
                mod = node.module.removeprefix("pytest_mtmcs").lstrip(".")
            else:
                mod = None
            if mod is not None:
                if mod:
                    found.add(mod)
                for a in node.names:  # `from pytest_mtmcs import options` imports a module
                    found.add(f"{mod}.{a.name}" if mod else a.name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}


def test_parser_sees_the_imports_it_should() -> None:
    g = graph()
    assert "finish" in g["session"]  # a function-level import
    assert "outcome" in g["aggregate"]
    assert "report" not in g["summary"]


def test_end_of_run_modules_form_no_cycle() -> None:
    g = graph()
    present = [m for m in END_OF_RUN if m in g]
    assert {"session", "finish", "aggregate", "summary", "report", "outcome"} <= set(present)
    sub = {m: g[m] & set(present) for m in present}
    state: dict[str, int] = {}
    path: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(sub[m]):
            if state.get(n) == 1:
                cycle = [*path[path.index(n) :], n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                dfs(n)
        path.pop()
        state[m] = 2

    for m in present:
        if m not in state:
            dfs(m)


def test_nothing_at_the_end_of_a_run_reaches_the_session() -> None:
    g = graph()
    for start in END_OF_RUN:
        if start == "session" or start not in g:
            continue
        seen, todo = {start}, [start]
        while todo:
            for n in g[todo.pop()]:
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        assert "session" not in seen, f"{start} imports the session (directly or through others)"
        assert "plugin" not in seen, f"{start} imports the pytest entry point"


def test_outcome_objects_depend_on_no_end_of_run_module() -> None:
    g = graph()
    assert not g["outcome"] & (set(END_OF_RUN) - {"outcome"})


def test_finish_and_what_it_calls_import_no_pytest() -> None:
    """No pytest object enters the end of a run: its modules do not even import pytest."""
    for name in (
        "finish",
        "aggregate",
        "summary",
        "report",
        "baseline_update",
        "outcome",
        "shards",
        "merge",
    ):
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        runtime = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Import) and any(a.name == "pytest" for a in n.names)
        ]
        guarded = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.If) and _is_type_checking(n)
            for c in ast.walk(n)
            if isinstance(c, ast.Import) and any(a.name == "pytest" for a in c.names)
        ]
        assert len(runtime) == len(guarded), f"{name} imports pytest"
