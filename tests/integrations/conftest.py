"""Shared fixtures of the integration tests: tiny saved TP models, a tiny preset, and the examples of
``docs/integrations.md`` (run with tiny models substituted for ``"smollm2"`` / ``"tp-smollm2"``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.conftest import build_backbone

DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
README = Path(__file__).resolve().parents[2] / "README.md"

#: Layer settings of every tiny model (the tiny backbones have 4 decoder layers).
LAYERS = {"tp_start": 1, "tp_exit": 3, "output_layer": 3}

#: The query template of the asymmetric tiny model (its document template is PromptEOL).
QUERY_TEMPLATE = 'This question : "{sentence}" means in one word:"'

#: Tolerance of vector comparisons (float32 vectors of the same model through different code paths).
ATOL = 1e-5

TEXTS = ["A man is playing a guitar.", "The cat sleeps on the sofa?", 'He said "hi" to the dog', "x"]

_EXAMPLE = re.compile(r"<!-- example: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)```", re.DOTALL)
_BLOCK = re.compile(r"^```python\n", re.MULTILINE)


def unit(vectors: Any) -> np.ndarray:
    """Vectors (rows) scaled to unit length."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def max_diff(a: Any, b: Any) -> float:
    """Largest absolute difference between two arrays / nested lists of the same shape."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def doc_examples() -> dict[str, tuple[str, int, Path]]:
    """The named Python examples of docs/integrations.md and README.md: name -> (code, first line number, file)."""
    examples = {}
    for path in (DOCS, README):
        text = path.read_text(encoding="utf-8")
        for match in _EXAMPLE.finditer(text):
            line = text.count("\n", 0, match.start("code")) + 1
            examples[match["name"]] = (match["code"], line, path)
    return examples


def doc_python_block_count() -> int:
    """Number of Python blocks in docs/integrations.md (named or not)."""
    return len(_BLOCK.findall(DOCS.read_text(encoding="utf-8")))


def run_example(name: str, substitutions: dict[str, str]) -> dict[str, Any]:
    """Execute one docs / README example as a main script after replacing quoted names; return its namespace.

    Args:
        name: The example's name (``<!-- example: name -->`` before its block).
        substitutions: Quoted text to replace, e.g. ``{"tp-smollm2": "/tmp/model"}`` replaces ``"tp-smollm2"``.

    Returns:
        The globals of the executed code.
    """
    code, line, path = doc_examples()[name]
    for old, new in substitutions.items():
        code = code.replace(f'"{old}"', repr(str(new)))
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)
    return namespace


@pytest.fixture(scope="session")
def tp_backbone(tmp_path_factory) -> Path:
    """A tiny random Llama checkpoint (4 layers, hidden 32)."""
    return build_backbone(tmp_path_factory.mktemp("integrations") / "llama", "llama")


@pytest.fixture(scope="session")
def tiny_preset(tp_backbone, tmp_path_factory) -> Path:
    """A preset YAML file for the tiny backbone."""
    path = tmp_path_factory.mktemp("preset") / "tiny.yaml"
    data = {
        "name": "tiny-llama",
        "backbone": str(tp_backbone),
        "num_layers": 4,
        "status": "untested",
        "default_template": "prompteol",
        "templates": {"prompteol": dict(LAYERS)},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def substitutions(tp_backbone, tiny_preset) -> Callable[..., dict[str, str]]:
    """Builds the docs substitutions: tiny backbone, tiny preset, and the given saved model for "tp-smollm2"."""

    def build(saved: Path | str) -> dict[str, str]:
        return {"smollm2": str(tp_backbone), "llama-2-7b": str(tiny_preset), "tp-smollm2": str(saved)}

    return build


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory, substitutions) -> Path:
    """The saved TP model of the docs' "save" example (one PromptEOL template), built on the tiny backbone."""
    target = tmp_path_factory.mktemp("saved") / "tp-tiny"
    run_example("save", substitutions(target))
    return target


@pytest.fixture(scope="session")
def asymmetric_model_dir(tmp_path_factory, tp_backbone) -> Path:
    """A saved tiny TP model with a separate query template (documents and plain encode use PromptEOL)."""
    from sentence_transformers_tp.factory import build_model

    target = tmp_path_factory.mktemp("saved") / "tp-tiny-asymmetric"
    model = build_model(str(tp_backbone), "prompteol", query_template=QUERY_TEMPLATE, device="cpu", **LAYERS)
    model.save(str(target))
    return target


#: The simulated hub repo of the integration tests: ``main`` is the asymmetric tiny model, tag ``v1`` the symmetric.
HUB_REPO = "tp-org/tiny-tp"


@pytest.fixture
def hub_repo(tmp_path, monkeypatch, asymmetric_model_dir, saved_model_dir) -> str:
    """An offline HF cache (HF_HOME / HF_HUB_CACHE in tmp_path, HF_HUB_OFFLINE=1) holding :data:`HUB_REPO`."""
    from tests.hub_cache import add_snapshot, use_hub_cache

    cache = use_hub_cache(monkeypatch, tmp_path / "hf-home")
    add_snapshot(cache, HUB_REPO, asymmetric_model_dir, "a" * 40)
    add_snapshot(cache, HUB_REPO, saved_model_dir, "b" * 40, refs=("v1",))
    return HUB_REPO
