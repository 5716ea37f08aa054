"""The package's layout rules, read from its source with ``ast`` (no imports executed).

- Models are leaves: nothing in ``faceweave.models`` imports the stages that use the models
  (``analysis``, ``pipeline``, ``serve``, ``cli``).
- No import circle between modules of ``faceweave/`` — lazy imports inside functions count too (they are
  circles all the same, only deferred); imports under ``if TYPE_CHECKING:`` do not (they never run).
- No module is so long that it cannot be read in one sitting.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "faceweave"
MAX_MODULE_LINES = 600
FORBIDDEN_FOR_MODELS = ("faceweave.analysis", "faceweave.pipeline", "faceweave.serve", "faceweave.cli")


def module_name(path: Path, root: Path) -> str:
    """``faceweave/ops/warp.py`` → ``faceweave.ops.warp``; a package's ``__init__.py`` → the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(node: ast.AST) -> Iterable[ast.AST]:
    """Every node below ``node`` except those inside ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if _is_type_checking_block(child):
            assert isinstance(child, ast.If)
            for other in child.orelse:
                yield other
                yield from _walk_runtime(other)
            continue
        yield child
        yield from _walk_runtime(child)


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that the source at ``path`` imports (top level or inside functions)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()

    def resolve(candidate: str) -> None:
        # `from a.b import c` names module a.b.c when that module exists, else an attribute of a.b.
        while candidate and candidate not in known:
            candidate = candidate.rpartition(".")[0]
        if candidate:
            found.add(candidate)

    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = name.split(".") if is_package else name.split(".")[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                resolve(f"{base}.{alias.name}")
    found.discard(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = package_modules(root)
    known = set(modules)
    return {name: imported_modules(path, name, known) for name, path in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _is_ancestor_package(package: str, module: str) -> bool:
    return module.startswith(package + ".")


def cycles_between_modules(graph: dict[str, set[str]]) -> list[list[str]]:
    # A package's __init__ that re-exports its own submodules, imported by them only through the parent
    # package being executed first, is Python's import mechanics, not a circle: drop the edges from a
    # submodule to one of its ancestor packages before looking for circles.
    pruned = {m: {t for t in targets if not _is_ancestor_package(t, m)} for m, targets in graph.items()}
    return import_cycles(pruned)


def forbidden_model_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module == "faceweave.models" or module.startswith("faceweave.models.")
        for target in targets
        if any(target == f or target.startswith(f + ".") for f in FORBIDDEN_FOR_MODELS)
    )


# --- the rules on the real package -------------------------------------------------------------------


def test_models_are_leaves() -> None:
    assert forbidden_model_imports(import_graph(PACKAGE_ROOT)) == []


def test_no_import_circles() -> None:
    assert cycles_between_modules(import_graph(PACKAGE_ROOT)) == []


def test_no_module_too_long_to_read() -> None:
    too_long = {
        module_name(p, PACKAGE_ROOT): n
        for p in PACKAGE_ROOT.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


# --- the checker itself must catch what it is for --------------------------------------------------------


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "faceweave"


@pytest.fixture
def fake_package(tmp_path: Path) -> Path:
    return _write_tree(
        tmp_path,
        {
            "faceweave/__init__.py": "",
            "faceweave/models/__init__.py": "",
            "faceweave/models/net.py": "import torch\nfrom faceweave.ops.crops import crop\n",
            "faceweave/ops/__init__.py": "",
            "faceweave/ops/crops.py": "def crop(): ...\n",
            "faceweave/analysis/__init__.py": "",
            "faceweave/analysis/detect.py": "from faceweave.models.net import x\n",
        },
    )


def test_checker_accepts_a_clean_tree(fake_package: Path) -> None:
    graph = import_graph(fake_package)
    assert graph["faceweave.models.net"] == {"faceweave.ops.crops"}
    assert forbidden_model_imports(graph) == []
    assert cycles_between_modules(graph) == []


@pytest.mark.parametrize(
    "statement",
    [
        "from faceweave.analysis.detect import crop\n",
        "from faceweave.analysis import detect\n",
        "import faceweave.pipeline\n",
        "def lazy():\n    from faceweave.serve import app\n",
        "from ..cli import main\n",
    ],
)
def test_checker_catches_a_forbidden_model_import(fake_package: Path, statement: str) -> None:
    (fake_package / "faceweave_unused.txt").write_text("")
    for extra in ("pipeline", "serve", "cli"):
        target = fake_package / extra
        target.mkdir(exist_ok=True)
        (target / "__init__.py").write_text("")
    (fake_package / "serve" / "app.py").write_text("")
    (fake_package / "cli.py").write_text("")
    (fake_package / "models" / "bad.py").write_text(statement)
    found = forbidden_model_imports(import_graph(fake_package))
    assert len(found) == 1 and found[0].startswith("faceweave.models.bad imports faceweave.")


def test_checker_catches_a_lazy_circle_but_not_a_type_checking_one(fake_package: Path) -> None:
    (fake_package / "api.py").write_text("def run():\n    from faceweave.pipeline_image import go\n")
    (fake_package / "pipeline_image.py").write_text("def go():\n    from faceweave.api import Result\n")
    assert cycles_between_modules(import_graph(fake_package)) == [["faceweave.api", "faceweave.pipeline_image"]]
    (fake_package / "pipeline_image.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from faceweave.api import Result\n"
    )
    assert cycles_between_modules(import_graph(fake_package)) == []
