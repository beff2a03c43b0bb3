"""No module of fyntr imports one that imports it back, visibly or behind TYPE_CHECKING
(``from fyntr import limits`` counts as importing fyntr.limits)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(SRC).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    files = sorted(SRC.rglob("*.py"))
    known = {module_name(f) for f in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fyntr"):
                module = node.module or ""
                subs = {f"{module}.{a.name}" for a in node.names} & known
                deps |= subs or {module}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("fyntr")}
        graph[module_name(path)] = deps - {module_name(path)}
    return graph


def test_no_import_cycle() -> None:
    graph = import_graph()
    cycles = []

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            here = stack.pop()
            if here == goal:
                return True
            if here not in seen:
                seen.add(here)
                stack.extend(graph.get(here, ()))
        return False

    for module, deps in graph.items():
        cycles += [f"{module} -> {dep} -> ... -> {module}" for dep in deps if reaches(dep, module)]
    assert not cycles, "\n".join(sorted(cycles))
    assert "fyntr.net.server" not in graph["fyntr.net.inbound"]  # the protocols see state
