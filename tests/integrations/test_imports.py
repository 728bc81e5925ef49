"""Lazy imports: the integrations package is light, and a missing framework names the extra to install."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from tests.integrations.conftest import doc_examples, doc_python_block_count

HEAVY = ["torch", "transformers", "sentence_transformers", "langchain_core", "llama_index", "ray", "pydantic"]


def test_integrations_package_imports_nothing_heavy():
    """Importing sentence_transformers_tp.integrations (and ModelSpec) loads no ML library or framework."""
    code = (
        "import json, sys\n"
        "from sentence_transformers_tp.integrations import ModelSpec, missing_extra\n"
        "ModelSpec('some/backbone', template=['a {sentence}'])\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    ("module", "extra", "framework"),
    [("langchain", "langchain", "langchain_core"), ("llamaindex", "llamaindex", "llama_index"), ("ray", "ray", "ray")],
)
def test_missing_framework_error_names_the_extra(monkeypatch, module, extra, framework):
    """Importing an integration without its framework raises ImportError with the extra's pip command."""
    monkeypatch.delitem(sys.modules, f"sentence_transformers_tp.integrations.{module}", raising=False)
    for name in [name for name in sys.modules if name == framework or name.startswith(framework + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, framework, None)
    with pytest.raises(ImportError, match=rf'pip install "sentence-transformers-tp\[{extra}\]"'):
        importlib.import_module(f"sentence_transformers_tp.integrations.{module}")


def test_every_docs_python_block_is_a_named_example():
    """Every Python block of docs/integrations.md is marked as a named example (so the tests can run it)."""
    in_docs = {name for name, (_, _, path) in doc_examples().items() if path.name == "integrations.md"}
    assert len(in_docs) == doc_python_block_count()
    assert in_docs == {
        "save",
        "langchain",
        "langchain-stock",
        "llamaindex",
        "llamaindex-stock",
        "multi-process",
        "ray",
    }
