"""The layout docs/design.md's map describes: imports go one way, and no product module imports itself back.

Imports are read from the source (every ``import`` and ``from ... import``, at module level or inside functions), so
a lazy import counts as much as any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("pipelines", "transforms", "schemas")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Product module -> the product modules it imports."""
    modules = {_module(p): p for package in PRODUCT for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def test_no_import_cycles_in_product_code():
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for child in sorted(graph[node]):
            # A package's __init__ importing its own submodules is the package, not a cycle.
            if child.startswith(node + "."):
                continue
            if state.get(child) == 1:
                cycles.append([*path[path.index(child) :], child] if child in path else [node, child])
            elif child not in state:
                visit(child, [*path, child])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_imports_go_one_way():
    graph = _imports()
    wrong = []
    for module, imported in graph.items():
        for target in imported:
            if module.startswith(("transforms", "schemas")) and target.startswith("pipelines"):
                wrong.append(f"{module} -> {target}: transforms/ and schemas/ never import pipelines/")
            if target.startswith("pipelines.release") and not module.startswith("pipelines.release"):
                wrong.append(f"{module} -> {target}: nothing imports the release tooling")
            if module == "pipelines.options" and target.startswith("pipelines."):
                wrong.append(f"{module} -> {target}: the option table depends on transforms only")
            if module == "pipelines.runners" and target in ("pipelines.spec", "pipelines.options", "pipelines.graph"):
                wrong.append(f"{module} -> {target}: runners come before the spec")
    assert wrong == []


def test_pipelines_shows_the_pipeline_and_two_tooling_subpackages():
    top = sorted(p.name for p in (ROOT / "pipelines").iterdir() if p.is_dir() and not p.name.startswith("__"))
    assert top == ["local_run", "release"]
    for name in ("setup.py", "pipelines", "transforms", "schemas", "templates", "tests", "cloudbuild.yaml"):
        assert (ROOT / name).exists(), name
