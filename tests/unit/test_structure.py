"""The shape of the code: common/ knows no service, tools do not import tests, no import cycle.

Read from the source (every ``import``, at module level or inside a function), so that an
import moved into a function to dodge a cycle still counts as the edge it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from common.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports, anywhere in it (relative imports resolved)."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def _graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    return {name: _imports(path, name) & set(modules) - {name} for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_common_has_no_import_cycle():
    graph = _graph("common")
    assert len(graph) > 20  # the reader found the package
    assert _cycles(graph) == []


@pytest.mark.parametrize("package", ["common"])
def test_common_imports_no_service_and_not_manage(package):
    forbidden = {f"{service}_svc" for service in SERVICES} | {"manage"}
    offenders = {
        name: sorted(i for i in _imports(path, name) if i.split(".")[0] in forbidden)
        for name, path in _modules(package).items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_tools_do_not_import_the_tests():
    offenders = {
        path.name: sorted(i for i in _imports(path, f"scripts.{path.stem}") if i.split(".")[0] == "tests")
        for path in sorted((ROOT / "scripts").glob("*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}
