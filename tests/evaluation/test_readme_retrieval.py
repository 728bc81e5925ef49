"""The README's Retrieval section: its LangChain example runs and its command lines parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ..conftest import build_backbone

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Retrieval\n")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_retrieval_example_runs(tmp_path):
    """The LangChain retriever example runs on a tiny backbone and returns k=2 of its documents, embedded with
    encode_document / encode_query."""
    pytest.importorskip("langchain_core")
    match = re.search(r"<!-- example: readme-retrieval -->\n```python\n(.*?)```", _section(), re.S)
    assert match is not None
    backbone = build_backbone(tmp_path / "llama", "llama")
    code = match.group(1).replace('"smollm2"', repr(str(backbone)))
    namespace: dict = {"__name__": "__main__"}
    exec(compile(code, str(README), "exec"), namespace)
    hits = namespace["hits"]
    texts = {"The Eiffel Tower is in Paris.", "Bread needs flour, water and yeast.", "Cats sleep most of the day."}
    assert len(hits) == 2 and {hit.page_content for hit in hits} <= texts


def test_readme_retrieval_command_lines_parse():
    """Every st-tp command line of the section parses with the current CLI."""
    from sentence_transformers_tp.cli import build_parser

    parser = build_parser()
    blocks = re.findall(r"```bash\n(.*?)```", _section(), re.S)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("st-tp "):
                commands.append(shlex.split(line)[1:])
    assert len(commands) == 3  # the MTEB commands moved to "Publishing to the hub" (tests/test_model_card.py)
    for argv in commands:
        args = parser.parse_args(argv)
        assert args.command in ("evaluate", "mteb-meta", "tune-retrieval")
