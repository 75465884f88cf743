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
