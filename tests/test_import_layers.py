"""The model layer of the package does not import the evaluation layer (no import cycle through the model card)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sentence_transformers_tp"

MODEL_LAYER = ("module.py", "model_card.py", "provenance.py", "records.py")


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a file imports, at top level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(["sentence_transformers_tp", *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("filename", MODEL_LAYER)
def test_model_layer_does_not_import_evaluation(filename):
    """module.py, model_card.py, provenance.py and records.py import nothing from sentence_transformers_tp.evaluation."""
    imports = imported_modules(PACKAGE / filename)
    assert not sorted(name for name in imports if name.startswith("sentence_transformers_tp.evaluation"))


def test_moved_names_stay_importable():
    """The moved backbone facts, ROLE_MODEL and add_evaluation_results are importable at their old and new homes."""
    from sentence_transformers_tp import provenance, records
    from sentence_transformers_tp.evaluation import add_evaluation_results, model_index, model_meta, variants

    assert model_meta.backbone_source is provenance.backbone_source
    assert model_meta.NAMED_BACKBONE_SOURCES is provenance.NAMED_BACKBONE_SOURCES
    assert variants.ROLE_MODEL == records.ROLE_MODEL == "model"
    assert add_evaluation_results is model_index.add_evaluation_results
