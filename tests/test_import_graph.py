"""app/ has no import cycle: every module can be imported on its own, in any order.

The graph is read from the source (ast), not from a running interpreter. Imports inside
functions count: they run on first use, and a cycle through one breaks as soon as two of its
modules are imported from different entry points. Imports under ``if TYPE_CHECKING:`` do not
count (they never run). Two kinds of edge are left out on purpose: a package's ``__init__`` that
Python imports before a submodule (they hold docstrings only), and the registry's
``importlib.import_module`` of the modules that register models (a plugin hook, named in
``ADAPTER_MODULES``: the registry imports them, they never import it back at load time).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run, at module level or inside functions."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]
) -> set[str]:
    """The app modules one import statement loads."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    targets = {f"{base}.{alias.name}" for alias in node.names} & known
    if base in known and len(targets) < len(node.names):
        targets.add(base)
    return targets


def import_graph() -> dict[str, set[str]]:
    """``module -> app modules it imports`` for every ``.py`` file under app/."""
    paths = sorted(APP.rglob("*.py"))
    known = {_module_name(path) for path in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        module = _module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in _imports(tree):
            edges |= _targets(node, module, path.name == "__init__.py", known)
        graph[module] = edges - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "app.models.adapters.clip" in graph["app.models.adapters.backbones"]  # in a function
    assert "app.cli.command_support" in graph["app.cli.engines"]  # relative
    assert "app.models.adapters.vit" not in graph["app.models.base"]  # under TYPE_CHECKING


def test_find_cycle_reports_a_cycle_it_is_given():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_app_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in app/: " + " -> ".join(cycle or [])


def test_every_module_imports():
    """Every module of app/ imports, in a fresh interpreter: a name moved between modules breaks
    here, not first in the one command that imports it lazily."""
    modules = sorted(_module_name(path) for path in APP.rglob("*.py") if path.name != "__main__.py")
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run(
        [sys.executable, "-c", script, *modules],
        cwd=APP.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
