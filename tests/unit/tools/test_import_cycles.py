"""No import cycles between the project's modules.

A cycle makes a module's meaning depend on which side was imported first and
hides a layering mistake (bench/hotpaths.py and bench/paths.py had one).
Module-level imports only: an import inside a function is a deliberate,
lazy edge, and ``if TYPE_CHECKING:`` imports never run.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("domain", "runtime", "services", "gateway", "bench", "tools")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imported(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        # `from a.b import c` imports a.b, and a.b.c when c is a module.
        return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return []


def import_graph() -> dict[str, set[str]]:
    """Each module's project imports (module level)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            for target in _imported(node):
                while target and target not in modules:  # an attribute: its module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def test_the_project_has_no_import_cycles() -> None:
    try:
        TopologicalSorter(import_graph()).prepare()
    except CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None


def test_the_graph_sees_imports() -> None:
    """The check is not vacuous: known edges are in the graph."""
    graph = import_graph()
    assert "bench.hotpaths" in graph["bench.paths"]
    assert "runtime.service" in graph["services.risk.main"]
