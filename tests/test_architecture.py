"""The house rules, checked on the source: layers, import cycles, where mlflow may be imported,
and function length.

Imports are read from the syntax tree, all of them: module level, inside functions (lazy) and
under `if TYPE_CHECKING:`, since each is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("generative", "anomaly", "pipelines")  # each may import only the ones before it
MLFLOW_MODULES_AT_MOST = 6
LONGEST_FUNCTION = 50  # lines, outside benchmarks/


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (relative ones resolved)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + [base]).strip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """First-party module -> the first-party modules it imports (a package counts as its
    `__init__`)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        targets = set()
        for imported in imported_names(path):
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = frozenset(targets)
    return graph


def strongly_connected(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module: each is an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            if component:
                cycles.append(sorted([node, *component]))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles() -> None:
    assert strongly_connected(import_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert strongly_connected(graph) == [["a", "b", "c"]]


def test_layers_import_only_downwards() -> None:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = [
        f"{source} imports {target}"
        for source, targets in import_graph().items()
        for target in targets
        if rank[target.split(".")[0]] > rank[source.split(".")[0]]
    ]
    assert upward == []


def test_mlflow_is_imported_in_few_modules() -> None:
    users = [
        name
        for name, path in modules().items()
        if any(n == "mlflow" or n.startswith("mlflow.") for n in imported_names(path))
    ]
    assert len(users) <= MLFLOW_MODULES_AT_MOST, users


def test_the_store_folder_is_not_a_package() -> None:
    assert not (ROOT / "mlflow" / "__init__.py").exists()


@pytest.mark.parametrize("folder", [*LAYERS, "tests"])
def test_functions_are_short(folder: str) -> None:
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := node.end_lineno - node.lineno + 1) > LONGEST_FUNCTION
    ]
    assert long == []
