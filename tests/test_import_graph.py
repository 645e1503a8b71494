"""flexassign has no import circle.

Two checks: the module-level import graph read from the source (AST) is acyclic, and
every module imports in a fresh interpreter whatever order the modules are imported
in (a circle shows up there as an ImportError on a partially initialised module).
"""

from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

import flexassign

ROOT = Path(flexassign.__file__).parent


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is package)}`` for every module under ``root``."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _module_level_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported (not ``if TYPE_CHECKING:``, not in defs)."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                found += _module_level_imports(node.body)
            found += _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody,
                          *(h.body for h in node.handlers)):
                found += _module_level_imports(block)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports at import time (most specific module)."""
    mods = _modules(root)
    pkg = root.name

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        edges: set[str | None] = set()
        for node in _module_level_imports(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                edges |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == pkg}
                continue
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != pkg:
                continue
            for a in node.names:  # `from pkg import submodule` depends on the submodule
                sub = f"{target}.{a.name}"
                edges.add(sub if sub in mods else resolve(target))
        graph[name] = {e for e in edges if e is not None and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return [*path[path.index(w):], w]
            if w not in state and (cycle := visit(w)) is not None:
                return cycle
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (cycle := visit(v)) is not None:
            return cycle
    return None


def test_flexassign_import_graph_is_acyclic() -> None:
    graph = import_graph(ROOT)
    assert len(graph) > 40  # the walk found the package's modules
    assert "flexassign.alignment.planner" in graph["flexassign.alignment"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_cycle_finder_finds_a_circle(tmp_path: Path) -> None:
    pkg = tmp_path / "circ"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import x\n")
    (pkg / "a.py").write_text("from .sub.b import y\nx = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import x\n"
        "def f():\n    from .. import a\ny = 2\n"
    )
    graph = import_graph(pkg)
    assert find_cycle(graph) is None  # TYPE_CHECKING and function-level imports ignored
    (pkg / "sub" / "b.py").write_text("from circ import a\ny = 2\n")
    assert find_cycle(import_graph(pkg)) == ["circ.a", "circ.sub.b", "circ.a"]


_IMPORT_ALL = """
import importlib, json, sys
done, skipped = [], []
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:  # an optional dependency that is not installed
        if (exc.name or "").split(".")[0] == "flexassign":
            raise
        skipped.append(name)
    else:
        done.append(name)
print(json.dumps({"done": done, "skipped": skipped}))
"""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_module_imports_first_in_any_order(seed: int) -> None:
    names = sorted(n for n in _modules(ROOT) if not n.endswith("__main__"))  # runs the CLI
    random.Random(seed).shuffle(names)
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, json.dumps(names)],
        capture_output=True, text=True, timeout=300, cwd=ROOT.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(report["done"] + report["skipped"]) == sorted(names)
    assert "flexassign.alignment.planner" in report["done"]
