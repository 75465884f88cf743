"""The package's import graph has no cycles, function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import deepfake_cli

PACKAGE = Path(deepfake_cli.__file__).parent


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package modules that ``path`` imports anywhere in its code (top level or in a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("deepfake_cli.") and name.split(".")[1] in modules:
                found.add(name.split(".")[1])
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    return {name: imported_modules(PACKAGE / f"{name}.py", modules) - {name} for name in sorted(modules)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in graph:
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert graph["predict"] >= {"scoring", "bundle"}  # the walk does see the package's imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_serving_and_the_bundle_format_import_no_training_code():
    graph = import_graph()

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    training = {"cnn", "temporal", "training", "runtime"}
    assert reachable("predict") & training == set()
    assert reachable("scoring") & training == set()
    assert reachable("bundle") <= {"errors", "files", "models", "backbones", "efficientnet_lite"}
    assert "cnn" not in reachable("temporal") and "temporal" not in reachable("cnn")


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_definitions(tree: ast.Module) -> set[str]:
    """The _private names a module defines: top-level names, and methods and attributes of its classes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names.add(target.id)
                elif isinstance(target, ast.Attribute):
                    names.add(target.attr)
    return {n for n in names if is_private(n)}


def cross_module_private_uses(sources: dict[str, str]) -> list[str]:
    """Uses of a _private name defined in another package module: ``from deepfake_cli.m import _x``,
    or ``thing._x`` where only another module defines ``_x`` (``self._x`` and ``cls._x`` are the
    class's own business)."""
    trees = {name: ast.parse(text) for name, text in sources.items()}
    private = {name: private_definitions(tree) for name, tree in trees.items()}
    found = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deepfake_cli"):
                found += [f"{name}: from {node.module} import {a.name}" for a in node.names if is_private(a.name)]
            elif isinstance(node, ast.Attribute) and is_private(node.attr) and node.attr not in private[name]:
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                owners = sorted(other for other, names in private.items() if other != name and node.attr in names)
                if owners:
                    found.append(f"{name}:{node.lineno}: {ast.unparse(node)} (defined in {', '.join(owners)})")
    return found


def test_cross_module_private_uses_are_found():
    sources = {
        "store": "class Store:\n    def _read_segment(self):\n        return self._cache\n"
                 "    def read(self):\n        return self._read_segment()\n",
        "files": "def _json_safe(x):\n    return x\n__all__ = []\n",
        "evaluate": "from deepfake_cli.files import _json_safe\nfrom deepfake_cli.store import Store\n"
                    "def f(store):\n    return store._read_segment(), store.__class__\n",
    }
    assert cross_module_private_uses(sources) == [
        "evaluate: from deepfake_cli.files import _json_safe",
        "evaluate:4: store._read_segment (defined in store)",
    ]


def test_no_module_uses_another_modules_private_names():
    sources = {p.stem: p.read_text() for p in sorted(PACKAGE.glob("*.py"))}
    assert cross_module_private_uses(sources) == []


LONG_MODULE_LINES = 400
LONG_MODULE_REASON = "Why this is one long module:"


def test_a_long_module_says_why_it_is_one_module():
    long = {p.stem: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")
            if len(p.read_text().splitlines()) > LONG_MODULE_LINES}
    unexplained = [f"{name} ({lines} lines)" for name, lines in sorted(long.items())
                   if LONG_MODULE_REASON not in (ast.get_docstring(ast.parse((PACKAGE / f"{name}.py").read_text())) or "")]
    assert unexplained == [], f"split these, or give the reason in the docstring ({LONG_MODULE_REASON!r})"
