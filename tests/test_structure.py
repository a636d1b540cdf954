"""The package's import graph: layered, with no circle, and no hidden imports.

Read from the source (``ast``), so it holds for every module, imported by a test or
not. Function-level imports of project modules are allowed only in the command-line
entry points (a quick command stays quick); anywhere else a function-level import is
a third-party module that is optional or heavy, with a comment saying why.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mobius_preview"
TOP = "mobius_preview"
LAZY_ALLOWED = {"mobius_preview.cli", "mobius_preview.demo"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _targets(node: ast.Import | ast.ImportFrom, importer: str) -> list[str]:
    """The project modules an import statement loads (parent packages below the top too)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = _package_of(importer)
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        # ``from pkg import name``: name is a submodule, or something defined in pkg.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    found = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        found.append(name)
        # Importing a.b.c runs a.b's __init__ too, unless the importer is inside a.b
        # (then a.b is already being imported).
        parent = name.rpartition(".")[0]
        while parent and parent != TOP and not importer.startswith(f"{parent}."):
            found.append(parent)
            parent = parent.rpartition(".")[0]
    return [f for f in found if f and f != TOP]


def _imports(name: str) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of a module, and whether it sits inside a function."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    out: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                out.append((child, in_function))
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(tree, False)
    return out


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for node, _ in _imports(name):
            edges[name].update(t for t in _targets(node, name) if t != name)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def test_the_checker_finds_a_circle_and_a_lazy_import():
    """The checks below would catch the circle this package once had."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from .client import submit\n")
    node = tree.body[0].body[0]
    assert _targets(node, "mobius_preview.tasks") == ["mobius_preview.client"]


def test_no_module_imports_another_in_a_circle():
    edges = graph()
    assert edges["mobius_preview.tasks"] >= {"mobius_preview.accept", "mobius_preview.app"}
    assert cycles(edges) == []


def test_function_level_imports_are_entry_points_or_third_party_with_a_reason():
    problems = []
    for name, path in sorted(MODULES.items()):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node, in_function in _imports(name):
            if not in_function or name in LAZY_ALLOWED:
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            if _targets(node, name) or (isinstance(node, ast.ImportFrom) and node.level):
                problems.append(f"{where}: imports a project module inside a function")
            elif "#" not in lines[node.lineno - 1] and not lines[node.lineno - 2].strip().startswith("#"):
                problems.append(f"{where}: a function-level import without a comment saying why")
    assert problems == []


def test_render_knows_nothing_of_celery_or_the_queue():
    allowed = {"mobius_preview.config", "mobius_preview.errors", "mobius_preview.data"}
    for name in MODULES:
        if not name.startswith("mobius_preview.render"):
            continue
        for node, _ in _imports(name):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(m.split(".")[0] in ("celery", "kombu", "redis") for m in modules), name
            outside = {t for t in _targets(node, name) if not t.startswith("mobius_preview.render")}
            assert outside <= allowed, (name, outside)
