"""The packages' layering (docs/architecture.md): the pure packages (``wire``, ``sched``,
``policy``) import neither ``fyntr.net`` nor asyncio, and no import cycle exists between
fyntr's modules, counting imports inside functions and ``TYPE_CHECKING`` blocks too."""

from __future__ import annotations

import ast
from pathlib import Path

import fyntr

SRC = Path(fyntr.__file__).resolve().parent
PURE = ("fyntr.wire", "fyntr.sched", "fyntr.policy")
LOOP_MODULES = ("asyncio", "uvloop", "fyntr.net")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def imports(name: str) -> set[str]:
    """Every module ``name`` imports, wherever the import statement is."""
    tree = ast.parse(MODULES[name].read_text())
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return found


GRAPH = {name: {m for m in imports(name) if m in MODULES} for name in MODULES}


def test_every_module_is_found() -> None:
    assert {"fyntr.cli", "fyntr.net.server", "fyntr.wire.handshake"} <= set(MODULES)


def test_the_pure_packages_import_no_loop_and_no_net() -> None:
    offending = {
        name: sorted(m for m in imports(name) if m.startswith(LOOP_MODULES))
        for name in MODULES
        if name.startswith(PURE)
    }
    assert {name: found for name, found in offending.items() if found} == {}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or importing themselves
    (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    assert cycles(GRAPH) == []
    assert "fyntr.net.server" not in GRAPH["fyntr.net.front.inbound"]  # protocols see state


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["e"]]
