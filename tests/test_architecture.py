"""The package's shape, pinned: subpackages in layers (each imports only the ones before it), no
import cycle (function-level imports included), no ML framework at module level where serving
imports it, no module reaching into another's private names. Each rule is checked on a bad
fixture first, so a rule that cannot fail would show."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import deepfake_cli
from tests.helpers import ASTRONAUT, ASTRONAUT_PROBABILITY, ASTRONAUT_VERDICT  # the default on examples/astronaut.mp4

PACKAGE = Path(deepfake_cli.__file__).parent
# The data's one-way trip: a subpackage may import only the ones before it (and the shared
# top-level helpers), so nothing but cli and train imports train, and no two import each other.
LAYERS = ("data", "faces", "nets", "scoring", "report", "serve", "train", "cli")
# Subpackages `predict` imports: no framework import may run when one of their modules is imported.
FRAMEWORK_FREE = ("data", "faces", "scoring", "serve")
FRAMEWORKS = ("tensorflow", "keras", "torch", "torchvision", "facenet_pytorch", "sklearn", "tf2onnx")


def package_sources() -> dict[str, str]:
    """{dotted module name under deepfake_cli ("data.store", "errors"): its source}."""
    sources = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        sources[".".join(parts) or "__init__"] = path.read_text()
    return sources


def _imports(tree: ast.AST, top_level_only: bool) -> list[tuple[str, int]]:
    """(imported name, line) of every import; with ``top_level_only``, those that run when the
    module is imported (not those inside functions)."""
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.append((child.module, child.lineno))
                found.extend((f"{child.module}.{a.name}", child.lineno) for a in child.names)
            visit(child)

    visit(tree)
    return found


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """{module: the package modules it imports anywhere (top level or in a function)}."""
    graph = {}
    for name, text in sources.items():
        targets = set()
        for imported, _ in _imports(ast.parse(text), top_level_only=False):
            if imported.startswith("deepfake_cli."):
                target = imported.removeprefix("deepfake_cli.")
                while target and target not in sources:  # "data.store.Store" -> "data.store"
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a subpackage from a later (or unknown) layer."""
    def layer(module: str) -> int | None:
        top = "cli" if module == "__main__" else module.split(".")[0]
        return LAYERS.index(top) if top in LAYERS else None

    bad = []
    for module, targets in sorted(graph.items()):
        mine = layer(module)
        for target in sorted(targets):
            theirs = layer(target)
            if theirs is None or module.split(".")[0] == target.split(".")[0]:
                continue  # shared helpers, and a subpackage's own modules
            if mine is None or theirs > mine:
                bad.append(f"{module} imports {target}")
    return bad


def framework_imports(sources: dict[str, str]) -> list[str]:
    """Module-level imports of an ML framework in the subpackages serving imports."""
    bad = []
    for name, text in sorted(sources.items()):
        if name.split(".")[0] not in FRAMEWORK_FREE:
            continue
        for imported, line in _imports(ast.parse(text), top_level_only=True):
            if imported.split(".")[0] in FRAMEWORKS:
                bad.append(f"{name}:{line} imports {imported}")
    return bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
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


BAD_FIXTURE = {
    "data.store": "import numpy\nfrom deepfake_cli.errors import DfdError\n",
    "serve.predict": "import keras\nfrom deepfake_cli.train.cnn import fit\n"
                     "def f():\n    import torch\n",
    "scoring.scorer": "from deepfake_cli.data.store import Store\nfrom deepfake_cli.scoring import metrics\n"
                      "try:\n    import sklearn.metrics\nexcept ImportError:\n    pass\n",
    "scoring.metrics": "def f():\n    from deepfake_cli.scoring.scorer import x\n",
    "train.cnn": "import keras\n",
    "errors": "",
}


def test_the_rules_fail_on_a_bad_fixture():
    graph = import_graph(BAD_FIXTURE)
    assert graph["scoring.scorer"] == {"data.store", "scoring.metrics"}
    assert layer_violations(graph) == ["serve.predict imports train.cnn"]
    assert framework_imports(BAD_FIXTURE) == ["scoring.scorer:4 imports sklearn.metrics",
                                              "serve.predict:1 imports keras"]
    assert find_cycle(graph) == ["scoring.scorer", "scoring.metrics", "scoring.scorer"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_top_level_holds_only_the_subpackages_and_a_few_shared_helpers():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py"))
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert packages == sorted(LAYERS)
    assert len(modules) <= 12, modules
    for package in packages:  # each states its one job
        assert ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())), package


def test_subpackages_import_only_earlier_layers():
    graph = import_graph(package_sources())
    assert graph["serve.predict"] >= {"scoring.scorer", "nets.bundle"}  # the walk does see the package's imports
    assert layer_violations(graph) == []


def test_the_package_has_no_import_cycle():
    graph = import_graph(package_sources())
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_serving_subpackages_import_no_framework_at_module_level():
    assert framework_imports(package_sources()) == []


def test_the_command_line_imports_no_framework_at_module_level():
    """`dfd --help` and the plain install's commands (tests/test_install.py) start without the [train]
    extra: a command imports a framework inside its function, after cli.common.require_extra."""
    sources = package_sources()
    bad = [f"{name}:{line} imports {imported}" for name, text in sorted(sources.items()) if name.split(".")[0] == "cli"
           for imported, line in _imports(ast.parse(text), top_level_only=True) if imported.split(".")[0] in FRAMEWORKS]
    assert bad == []


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
        "evaluate": "from deepfake_cli.files import _json_safe\nfrom deepfake_cli.data.store import Store\n"
                    "def f(store):\n    return store._read_segment(), store.__class__\n",
    }
    assert cross_module_private_uses(sources) == [
        "evaluate: from deepfake_cli.files import _json_safe",
        "evaluate:4: store._read_segment (defined in store)",
    ]


def test_no_module_uses_another_modules_private_names():
    sources = package_sources()
    assert cross_module_private_uses(sources) == []


LONG_MODULE_LINES = 400
LONG_MODULE_REASON = "Why this is one long module:"


def test_a_long_module_says_why_it_is_one_module():
    sources = package_sources()
    long = {name: len(text.splitlines()) for name, text in sources.items() if len(text.splitlines()) > LONG_MODULE_LINES}
    unexplained = [f"{name} ({lines} lines)" for name, lines in sorted(long.items())
                   if LONG_MODULE_REASON not in (ast.get_docstring(ast.parse(sources[name])) or "")]
    assert unexplained == [], f"split these, or give the reason in the docstring ({LONG_MODULE_REASON!r})"


def test_predict_on_the_default_model_loads_no_framework_and_no_training_code():
    """`dfd predict examples/astronaut.mp4` in a fresh process: the verdict the README shows, and
    no TensorFlow, Keras, PyTorch, scikit-learn or matplotlib, nothing of deepfake_cli.train."""
    import json
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import json, sys
        from deepfake_cli.cli import app
        try:
            app(["predict", {str(ASTRONAUT)!r}, "--json"], standalone_mode=False)
        finally:
            print(json.dumps(sorted(sys.modules)), file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [result] = json.loads(proc.stdout)  # --json: an array, whatever the number of inputs
    assert (result["verdict"], result["probability"]) == (ASTRONAUT_VERDICT,
                                                          pytest.approx(ASTRONAUT_PROBABILITY, abs=1e-6))
    modules = json.loads(proc.stderr.strip().splitlines()[-1])
    heavy = {"tensorflow", "keras", "torch", "sklearn", "matplotlib"}
    assert sorted(m for m in modules if m.split(".")[0] in heavy) == []
    assert "deepfake_cli.serve.predict" in modules
    assert sorted(m for m in modules if m.startswith("deepfake_cli.train")) == []
