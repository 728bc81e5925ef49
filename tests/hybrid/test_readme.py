"""The README's Hybrid retrieval section: its examples run on a tiny backbone and its command line parses."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.conftest import build_backbone
from tests.integrations.conftest import README, run_example

pytest.importorskip("bm25s")


@pytest.fixture(scope="module")
def tp_backbone(tmp_path_factory):
    """A tiny random Llama checkpoint standing in for "smollm2"."""
    return build_backbone(tmp_path_factory.mktemp("readme-hybrid") / "llama", "llama")


TEXTS = {"The Eiffel Tower is in Paris.", "Bread needs flour, water and yeast.", "Cats sleep most of the day."}


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Hybrid retrieval\n")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_hybrid_example_indexes_saves_and_searches(tp_backbone, tmp_path) -> None:
    """The HybridRetriever example indexes three documents, saves the index and returns k=2 (id, score) hits."""
    namespace = run_example("readme-hybrid", {"smollm2": tp_backbone, "hybrid-index": tmp_path / "index"})
    hits = namespace["hits"]
    assert len(hits) == 2 and {doc for doc, _ in hits} <= {"d1", "d2", "d3"}
    assert (tmp_path / "index" / "hybrid_index.json").is_file()


def test_readme_hybrid_framework_examples(tp_backbone) -> None:
    """The LangChain and LlamaIndex examples return two of their documents."""
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    docs = run_example("readme-hybrid-langchain", {"smollm2": tp_backbone})["docs"]
    assert len(docs) == 2 and {doc.page_content for doc in docs} <= TEXTS
    nodes = run_example("readme-hybrid-llamaindex", {"smollm2": tp_backbone})["nodes"]
    assert len(nodes) == 2 and {node.node.get_content() for node in nodes} <= TEXTS


def test_readme_qdrant_example(tp_backbone) -> None:
    """The Qdrant example (local mode, dense + PromptReps sparse vectors, hybrid mode) returns two documents."""
    pytest.importorskip("langchain_qdrant")
    hits = run_example("readme-hybrid-qdrant", {"smollm2": tp_backbone})["hits"]
    assert len(hits) == 2 and {hit.page_content for hit in hits} <= TEXTS


def test_readme_hybrid_command_line_parses() -> None:
    """The section's st-tp command line parses with the current CLI."""
    from sentence_transformers_tp.cli import build_parser

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", _section(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("st-tp "):
                commands.append(shlex.split(line)[1:])
    assert commands
    for argv in commands:
        args = build_parser().parse_args(argv)
        assert args.command == "evaluate" and args.hybrid
