"""The shape of the code: common/ knows no service and is layered by concern, tools do not
import tests, no import cycle.

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


def _nodes(tree: ast.AST, *, runtime: bool) -> list[ast.AST]:
    """The nodes of ``tree``; with ``runtime``, without ``if TYPE_CHECKING:`` blocks."""
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        if runtime and isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def _imports(path: Path, module: str, *, runtime: bool = False) -> set[str]:
    """Every module ``path`` imports, anywhere in it (relative imports resolved); with
    ``runtime``, leaving out the imports made for annotations only (``TYPE_CHECKING``)."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _nodes(ast.parse(path.read_text(), str(path)), runtime=runtime):
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


# common/ by concern, bottom up: a module may import its own package and the layers below,
# never a layer above (docs/architecture.md, "The code's layout").
LAYERS = [
    ("common.services", "common.errors", "common.admin"),  # the base any app may use
    ("common.observability",),
    ("common.messaging",),
    ("common.web",),
    ("common.settings",),  # assembles every service's configuration from all of the above
    ("tools",),  # operator tools spanning the four services
]


def _layer(module: str) -> int | None:
    for number, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return number
    return None


def test_the_layer_finder_places_modules():
    assert _layer("common.messaging.consumer") == 2
    assert _layer("common.messagingx") is None
    assert _layer("tools.audit") == 5


def test_common_is_layered_by_concern():
    modules = {**_modules("common"), **_modules("tools")}
    assert all(_layer(name) is not None for name in modules if name not in ("common",)), [
        name for name in modules if _layer(name) is None and name != "common"
    ]
    upward = {}
    for name, path in modules.items():
        own = _layer(name)
        if own is None:
            continue
        above = sorted(
            i for i in _imports(path, name, runtime=True) if i in modules and (_layer(i) or 0) > own
        )
        if above:
            upward[name] = above
    assert upward == {}


def test_nothing_in_common_imports_the_tools():
    offenders = {
        name: sorted(i for i in _imports(path, name) if i.split(".")[0] == "tools")
        for name, path in _modules("common").items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


@pytest.mark.parametrize("package", ["common", "tools"])
def test_common_imports_no_service_and_not_manage(package):
    forbidden = {f"{service}_svc" for service in SERVICES} | {"manage"}
    offenders = {
        name: sorted(i for i in _imports(path, name) if i.split(".")[0] in forbidden)
        for name, path in _modules(package).items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_tools_do_not_import_the_tests():
    paths = sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "tools").glob("*.py"))
    offenders = {
        path.name: sorted(
            i for i in _imports(path, f"{path.parent.name}.{path.stem}") if i.split(".")[0] == "tests"
        )
        for path in paths
    }
    assert {name: found for name, found in offenders.items() if found} == {}
