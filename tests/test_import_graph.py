"""The dependency rules of docs/DESIGN.md, checked on the import graph of the whole repository.

Every ``.py`` file is parsed with :mod:`ast`; every ``import`` statement counts, at module level
or inside a function (lazy imports) or under ``if TYPE_CHECKING``. Rules:

* ``app -> tiles, engine``; ``lab -> engine, tiles``; nothing in the product (``app``,
  ``engine``, ``tiles``, ``launch.py``, ``benchmarks``) imports ``lab``;
* ``tiles`` never imports ``engine`` or torch; ``engine`` never imports ``tiles``, rasterio or
  gradio;
* no import cycles between modules, in any package (a package's ``__init__`` importing its own
  submodules is not an edge back from them: Python runs the parent first).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".ci", "workspace", "node_modules", "__pycache__", ".venv", "venv"}
PRODUCT = ("app", "engine", "tiles", "launch", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _python_files() -> Iterator[Path]:
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO).parts
        if not any(part in SKIP_DIRS or part.startswith(".") for part in rel[:-1]):
            yield path


def _imports(path: Path, module: str, known: set[str]) -> Iterator[str]:
    """Every module ``path`` imports (resolved to a known module where one is named)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                package = package if is_package else package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                yield child if child in known else base


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in _python_files()}
    known = set(files)
    return {name: set(_imports(path, name, known)) for name, path in files.items()}


GRAPH = _graph()


def _top(module: str) -> str:
    return module.split(".")[0]


def _edges_from(packages: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    for module, targets in sorted(GRAPH.items()):
        if _top(module) in packages:
            yield from ((module, target) for target in sorted(targets))


def test_the_graph_sees_the_whole_repository():
    tops = {_top(m) for m in GRAPH}
    assert {"app", "engine", "tiles", "lab", "tests", "launch", "assets", "benchmarks"} <= tops
    assert len(GRAPH) > 150
    # lazy (function-local) imports are edges too
    assert "lab.synthetic" in GRAPH["lab.demo.build"]
    assert "tiles" in GRAPH["lab.demo.raster"]


def test_nothing_in_the_product_imports_lab():
    bad = [(m, t) for m, t in _edges_from(PRODUCT) if _top(t) == "lab"]
    assert not bad, f"the product must not import lab: {bad}"


def test_lab_uses_only_engine_and_tiles_of_the_project():
    bad = [(m, t) for m, t in _edges_from(("lab",)) if _top(t) in ("app", "tests", "launch")]
    assert not bad, bad


def test_tiles_never_imports_engine_or_torch():
    bad = [(m, t) for m, t in _edges_from(("tiles",)) if _top(t) in ("engine", "torch", "app")]
    assert not bad, bad


def test_engine_never_imports_tiles_rasterio_or_gradio():
    banned = ("tiles", "rasterio", "gradio", "app")
    bad = [(m, t) for m, t in _edges_from(("engine",)) if _top(t) in banned]
    assert not bad, bad


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue  # third-party or the standard library
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
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _without_parent_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges from a module to a package that contains it (``from engine import x`` inside
    ``engine.y`` names the package Python has already started importing)."""
    return {
        module: {t for t in targets if not module.startswith(t + ".")}
        for module, targets in graph.items()
    }


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"], ["e"]]


@pytest.mark.parametrize("package", ["app", "engine", "tiles", "lab", "tests"])
def test_no_import_cycles_within(package):
    graph = _without_parent_packages(GRAPH)
    inside = {
        m: {t for t in targets if _top(t) == package}
        for m, targets in graph.items()
        if _top(m) == package
    }
    cycles = _cycles(inside)
    assert not cycles, f"import cycles in {package}: {cycles}"


def test_no_import_cycles_between_packages():
    ours = {_top(m) for m in GRAPH}
    tops: dict[str, set[str]] = {top: set() for top in ours}
    for module, targets in GRAPH.items():
        tops[_top(module)].update(_top(t) for t in targets if _top(t) in ours - {_top(module)})
    assert not _cycles(tops), tops


def test_importing_the_product_loads_no_lab_module():
    """The same rule at run time (dynamic imports included): the app's and engine's modules
    imported, ``lab`` stays unloaded."""
    code = (
        "import sys, importlib, pkgutil, app, engine, tiles\n"
        "for pkg in (engine, tiles, app):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        "import engine.demo; engine.demo.read_demo_manifest()\n"
        "print(sorted(m for m in sys.modules if m == 'lab' or m.startswith('lab.')))\n"
    )
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
