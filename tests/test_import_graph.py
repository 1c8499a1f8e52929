"""The package's shape: no module-level import circles, no module over 500 lines.

The import graph is read from the source with ``ast`` (nothing is imported): an edge ``a → b`` for every
``import``/``from … import`` that runs when ``a`` is imported. Imports inside functions and under
``if TYPE_CHECKING:`` do not count (they run later, or never). ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``. Importing ``pkg.sub`` also runs ``pkg/__init__``, but
that implicit edge is left out: a package re-exporting its submodules is not a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 500

ACYCLIC = ["kawa.ml", "kawa.portal", "kawa.store", "kawa.evaluation", "kawa.monitor", "kawa.retrain", "kawa.apps"]
"""Packages that must have no module-level import circle (extend the list to hold more packages to it)."""

LAYERED = [
    "kawa.ml", "kawa.portal", "kawa.store", "kawa.events", "kawa.apps", "kawa.evaluation", "kawa.monitor",
    "kawa.retrain",
]  # fmt: skip
"""Packages without a circle even counting imports inside functions: their modules form layers (in
``kawa.ml``: runs → mlflow adapter → tracking/registry → predictors), so no module calls back into one
that imports it."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "kawa").rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body: list[ast.stmt], *, deferred: bool = False) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements executed at import time: not in functions, not under ``if TYPE_CHECKING``.
    ``deferred``: imports inside functions too (the layering: who may call whom at all)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level_imports(node.body, deferred=deferred)
            yield from _module_level_imports(node.orelse, deferred=deferred)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _module_level_imports(block, deferred=deferred)
        elif isinstance(node, ast.With | ast.ClassDef | ast.For | ast.While):
            yield from _module_level_imports(node.body, deferred=deferred)
        elif deferred and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _module_level_imports(node.body, deferred=True)


def import_graph(*, deferred: bool = False) -> dict[str, set[str]]:
    modules = all_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _module_level_imports(tree.body, deferred=deferred):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join([*base, node.module] if node.module else base)
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            for target in targets:
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]  # `import kawa.x.y` with y a name: the module kawa.x
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def cycles_touching(package: str, graph: dict[str, set[str]] | None = None) -> list[list[str]]:
    found = cycles(graph if graph is not None else import_graph())
    return [c for c in found if any(m == package or m.startswith(package + ".") for m in c)]


def test_the_graph_sees_module_level_imports_only() -> None:
    # The walker itself: a circle through module-level imports is found; the same imports inside a function
    # or under TYPE_CHECKING are not edges.
    tree = ast.parse(
        "import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n"
        "def f():\n    import b\ntry:\n    import c\nexcept ImportError:\n    pass\n"
    )
    names = [n.names[0].name for n in _module_level_imports(tree.body) if isinstance(n, ast.Import)]
    assert names == ["os", "c"]
    deferred = [n.names[0].name for n in _module_level_imports(tree.body, deferred=True) if isinstance(n, ast.Import)]
    assert deferred == ["os", "b", "c"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_has_real_edges() -> None:
    graph = import_graph()
    assert "kawa.ml.mlflow.client" in graph["kawa.ml.registry"] or "kawa.ml.mlflow.models" in graph["kawa.ml.registry"]
    assert "kawa.ml.runs" in graph["kawa.ml.mlflow.run"]


@pytest.mark.parametrize("package", ACYCLIC)
def test_no_import_circle(package: str) -> None:
    assert cycles_touching(package) == []


@pytest.mark.parametrize("package", LAYERED)
def test_no_circle_even_through_deferred_imports(package: str) -> None:
    assert cycles_touching(package, import_graph(deferred=True)) == []


def test_the_mlflow_adapter_imports_neither_tracking_nor_registry() -> None:
    # Not even inside a function: tracking and registry import the adapter, never the reverse.
    adapter = {n: p for n, p in all_modules().items() if n.startswith("kawa.ml.mlflow")}
    assert "kawa.ml.mlflow.errors" in adapter
    for name, path in adapter.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
        assert not {m for m in imported if m.startswith(("kawa.ml.tracking", "kawa.ml.registry"))}, name


def test_no_module_over_500_lines() -> None:
    long = {name: n for name, p in all_modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (at most {MAX_LINES} lines): {long}"
