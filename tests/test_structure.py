"""The package's import graph: layered as the README says, with no circle, and no hidden imports.

Read from the source (``ast``), so it holds for every module, imported by a test or
not. Function-level imports of project modules are allowed only in the command-line
entry points (a quick command stays quick); anywhere else a function-level import is
a third-party module that is optional or heavy, with a comment saying why.

The layers are the rows of README.md's "The parts" table, read from the ground up: a
module may import only modules in rows above its own. Modules sharing a row may not
import each other (a row is one layer; when one needs the other, the table gives them
two rows, so the order is written down). A package named with a slash (``render/``)
is one entry: its submodules may import each other (the circle check still applies)
and import outside it only from rows above. Every module must be in the table, except
the package's own ``__init__`` (``celery -A mobius_preview``: it re-exports the top).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mobius_preview"
README = PACKAGE.parent / "README.md"
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


class _Tarjan:
    """Tarjan's strongly connected components, one module at a time."""

    def __init__(self, edges: dict[str, set[str]]) -> None:
        self.edges = edges
        self.index: dict[str, int] = {}
        self.low: dict[str, int] = {}
        self.stack: list[str] = []
        self.on_stack: set[str] = set()
        self.found: list[list[str]] = []

    def connect(self, v: str) -> None:
        self.index[v] = self.low[v] = len(self.index)
        self.stack.append(v)
        self.on_stack.add(v)
        for w in sorted(self.edges[v]):
            if w not in self.index:
                self.connect(w)
                self.low[v] = min(self.low[v], self.low[w])
            elif w in self.on_stack:
                self.low[v] = min(self.low[v], self.index[w])
        if self.low[v] == self.index[v]:
            component = self.pop_component(v)
            if len(component) > 1:
                self.found.append(sorted(component))

    def pop_component(self, v: str) -> list[str]:
        """The modules on the stack down to ``v``: one strongly connected component."""
        component = []
        while True:
            w = self.stack.pop()
            self.on_stack.discard(w)
            component.append(w)
            if w == v:
                return component


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    tarjan = _Tarjan(edges)
    for v in sorted(edges):
        if v not in tarjan.index:
            tarjan.connect(v)
    return tarjan.found


def readme_rows(text: str) -> list[list[str]]:
    """The first cell of each row of README's "The parts" table: its modules, top row first
    (``render/`` is given as ``mobius_preview.render``)."""
    section = re.search(r"^## The parts\n(.*?)(?=^##)", text, re.S | re.M)
    assert section, 'README.md has no "## The parts" section'
    rows = []
    for line in section.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] in ("module", "") or set(cells[0]) <= set("-: "):
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        rows.append([f"{TOP}.{name.rstrip('/').replace('/', '.')}" for name in names])
    return rows


def import_lines() -> dict[str, list[tuple[str, int]]]:
    """Each module's imports of other package modules, with the line that makes them."""
    return {
        name: [(t, node.lineno) for node, _ in _imports(name) for t in _targets(node, name) if t != name]
        for name in MODULES
    }


def _entry(module: str, rows: list[list[str]]) -> tuple[int, str] | None:
    """The row (0 = top) and entry of the table that hold ``module``."""
    for number, entries in enumerate(rows):
        for entry in entries:
            if module == entry or module.startswith(f"{entry}."):
                return number, entry
    return None


def layering_problems(imports: dict[str, list[tuple[str, int]]], rows: list[list[str]]) -> list[str]:
    """Every import against the table's order, every module missing from it, every stale entry."""
    problems = [
        f"{m} is in no row of README.md's table of parts: add it below the modules it imports"
        for m in sorted(imports) if m != TOP and _entry(m, rows) is None
    ]
    problems += [
        f"README.md's table of parts names `{entry.removeprefix(TOP + '.')}`, which is no module"
        for entries in rows for entry in entries
        if not any(m == entry or m.startswith(f"{entry}.") for m in imports)
    ]
    for importer, targets in sorted(imports.items()):
        here = _entry(importer, rows)
        for target, line in targets:
            there = _entry(target, rows)
            if here is None or there is None or here[1] == there[1]:
                continue
            if there[0] >= here[0]:
                where = "in the same row as" if there[0] == here[0] else "below"
                problems.append(f"{importer} (line {line}) imports {target}, which README.md's table of "
                                f"parts lists {where} it (row {there[0] + 1} vs {here[0] + 1})")
    return problems


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
    # Besides settings, errors and data: the object store and the request-forgery guard
    # (assets by URL), neither of which knows of Celery, Redis or the queue.
    allowed = {"mobius_preview.config", "mobius_preview.errors", "mobius_preview.data",
               "mobius_preview.objectstore", "mobius_preview.guard"}
    for name in MODULES:
        if not name.startswith("mobius_preview.render"):
            continue
        for node, _ in _imports(name):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(m.split(".")[0] in ("celery", "kombu", "redis") for m in modules), name
            outside = {t for t in _targets(node, name) if not t.startswith("mobius_preview.render")}
            assert outside <= allowed, (name, outside)


def test_the_layering_check_finds_what_breaks_the_order():
    """A module importing a later row, one importing its row-mate, one missing, one stale entry."""
    rows = readme_rows(
        "## The parts\n\n| module | holds |\n| --- | --- |\n| `errors`, `config` | a |\n"
        "| `render/` | b |\n| `tasks` | c |\n| `gone` | d |\n\n## Next\n"
    )
    assert rows == [[f"{TOP}.errors", f"{TOP}.config"], [f"{TOP}.render"], [f"{TOP}.tasks"], [f"{TOP}.gone"]]
    imports = {
        f"{TOP}.errors": [],
        f"{TOP}.config": [(f"{TOP}.errors", 3)],
        f"{TOP}.render": [(f"{TOP}.render.plan", 1)],
        f"{TOP}.render.plan": [(f"{TOP}.config", 2), (f"{TOP}.tasks", 9)],
        f"{TOP}.tasks": [(f"{TOP}.render", 4)],
        f"{TOP}.new": [],
    }
    assert layering_problems(imports, rows) == [
        f"{TOP}.new is in no row of README.md's table of parts: add it below the modules it imports",
        "README.md's table of parts names `gone`, which is no module",
        f"{TOP}.config (line 3) imports {TOP}.errors, which README.md's table of parts lists in the "
        "same row as it (row 1 vs 1)",
        f"{TOP}.render.plan (line 9) imports {TOP}.tasks, which README.md's table of parts lists "
        "below it (row 3 vs 2)",
    ]


def test_each_module_imports_only_modules_above_it_in_the_readme():
    rows = readme_rows(README.read_text(encoding="utf-8"))
    assert len(rows) > 10, rows
    problems = layering_problems(import_lines(), rows)
    assert problems == [], "\n".join(problems)
