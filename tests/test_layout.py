"""The package's layout: modules import each other in one direction only (no import cycle), and none
passes `MAX_LINES` lines unless `LONG_MODULES` names it with the reason."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "asl_tinyml"
MAX_LINES = 600  # past this a reader no longer keeps the whole module in mind: split it by job
# module -> why it may pass MAX_LINES (none does: motion, cli and export were split by job)
LONG_MODULES: dict[str, str] = {}


def package_modules() -> dict[str, Path]:
    """Dotted module name inside the package (`motion.features`, `cli.__init__`) -> its file."""
    return {p.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", "."): p for p in PACKAGE.rglob("*.py")}


def package_imports() -> dict[str, set[str]]:
    """module -> the package modules it imports (at the top or inside a function)."""
    modules = package_modules()
    graph = {}
    for name, path in modules.items():
        parts = name.split(".")
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                found |= {target, f"{target}.__init__"} | {f"{target}.{a.name}" for a in node.names}
        graph[name] = {m.removesuffix(".__init__") for m in found if m in modules} - {name.removesuffix(".__init__")}
    return {k.removesuffix(".__init__"): v for k, v in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_three_module_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package() -> None:
    graph = package_imports()
    assert graph["train"] >= {"engine", "preprocess"} and "engine" in graph["landmarks"]  # the graph is read
    assert cycles(graph) == []


def test_no_module_passes_the_line_limit_unless_named_with_a_reason() -> None:
    lines = {name: len(path.read_text().splitlines()) for name, path in package_modules().items()}
    assert lines["serve"] > 100 and "motion.features" in lines  # the modules are read
    too_long = {name: n for name, n in lines.items() if n > MAX_LINES and name not in LONG_MODULES}
    assert too_long == {}, f"over {MAX_LINES} lines: split by job, or name it in LONG_MODULES with the reason"
    stale = [name for name in LONG_MODULES if lines.get(name, 0) <= MAX_LINES]
    assert stale == [], "LONG_MODULES names modules that are no longer long: remove them"
    assert all(reason.strip() for reason in LONG_MODULES.values())
