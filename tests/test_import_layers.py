"""The package's import graph: the model layer does not import the evaluation layer, and no file takes part in an
import cycle (function-local imports included, ``TYPE_CHECKING`` blocks excluded)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sentence_transformers_tp"

MODEL_LAYER = ("module.py", "model_card.py", "provenance.py", "records.py", "centering.py")

#: The backbone files, top first: each imports, of the package, only the files after it (registry -> conversion ->
#: cache store).
BACKBONE_STACK = ("backbones.py", "gguf_conversion.py", "cache_store.py")


def module_name(path: Path) -> str:
    """The dotted name of a package file (a package's ``__init__.py`` is the package itself)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names a file imports (modules and ``from`` names), at top level or inside functions, outside
    ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for sub in ast.walk(node)
    }
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def package_graph() -> dict[str, set[str]]:
    """File -> the package files its imports execute (each imported module and the packages above it, except the
    importer's own packages, which are already in ``sys.modules`` while it runs)."""
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        edges = set()
        for imported in imported_modules(path):
            parts = imported.split(".")
            edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in files)
        graph[name] = {edge for edge in edges if edge != name and not name.startswith(edge + ".")}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for edge in graph[node]:
            if edge not in index:
                visit(edge)
                low[node] = min(low[node], low[edge])
            elif edge in stack:
                low[node] = min(low[node], index[edge])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


@pytest.mark.parametrize("filename", MODEL_LAYER)
def test_model_layer_does_not_import_evaluation(filename):
    """module.py, model_card.py, provenance.py, records.py and centering.py import nothing from the evaluation layer."""
    imports = imported_modules(PACKAGE / filename)
    assert not sorted(name for name in imports if name.startswith("sentence_transformers_tp.evaluation"))


@pytest.mark.parametrize("filename", BACKBONE_STACK)
def test_backbone_files_import_one_way(filename):
    """backbones.py imports gguf_conversion.py and cache_store.py, gguf_conversion.py only cache_store.py, and
    cache_store.py no package file (function-local imports included)."""
    below = {module_name(PACKAGE / name) for name in BACKBONE_STACK[BACKBONE_STACK.index(filename) + 1 :]}
    assert package_graph()[module_name(PACKAGE / filename)] <= below


def test_package_has_no_import_cycle():
    """No set of package files imports each other, counting function-local imports and package __init__ files."""
    assert import_cycles(package_graph()) == []


def test_no_file_imports_another_files_private_names():
    """No package file imports a _private name (one leading underscore) from another package file."""
    private = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(PACKAGE.name)):
                private += [
                    f"{path.relative_to(PACKAGE)}: {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert private == []


def test_cycle_finder_sees_a_function_local_cycle():
    """The cycle finder reports a cycle that closes only through an import inside a function."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve_inside_subpackages():
    """A relative import in a subpackage file names the sibling module, not a top-level one."""
    imports = imported_modules(PACKAGE / "evaluation" / "transfer.py")
    assert "sentence_transformers_tp.evaluation.sts" in imports


def test_moved_names_stay_importable():
    """The moved backbone facts, ROLE_MODEL and add_evaluation_results are importable at their old and new homes."""
    from sentence_transformers_tp import provenance, records
    from sentence_transformers_tp.evaluation import add_evaluation_results, model_index, model_meta, variants

    assert model_meta.backbone_source is provenance.backbone_source
    assert model_meta.NAMED_BACKBONE_SOURCES is provenance.NAMED_BACKBONE_SOURCES
    assert variants.ROLE_MODEL == records.ROLE_MODEL == "model"
    assert add_evaluation_results is model_index.add_evaluation_results
