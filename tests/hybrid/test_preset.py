from __future__ import annotations

import pytest

from sentence_transformers_tp.hybrid import preset as preset_module
from sentence_transformers_tp.hybrid import retriever as retriever_module
from sentence_transformers_tp.hybrid.preset import backbone_of, preset_fusion, validate_fusion_block
from sentence_transformers_tp.hybrid.retriever import HybridRetriever
from sentence_transformers_tp.presets import load_preset_file, save_preset
from tests.hybrid.helpers import WordHashModel, WordSparseModel


def test_validate_fusion_block_orders_channels_and_drops_records() -> None:
    """A valid block comes back with channels in fusion order, float weights, default rrf_k, records dropped."""
    block = {"channels": ["bm25", "dense"], "fusion": "rsf", "weights": {"bm25": 0.7, "dense": 0.3}, "score": {}}
    assert validate_fusion_block(block) == {
        "channels": ["dense", "bm25"],
        "fusion": "rsf",
        "weights": {"dense": 0.3, "bm25": 0.7},
        "rrf_k": 60,
    }


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ([], "must be a mapping"),
        ({"channels": ["dense"], "weights": {"dense": 1}, "extra": 1}, "unknown keys"),
        ({"channels": ["colbert"], "weights": {"colbert": 1}}, "channels"),
        ({"channels": ["dense", "dense"], "weights": {"dense": 1}}, "twice"),
        ({"channels": ["dense"], "fusion": "max", "weights": {"dense": 1}}, "fusion"),
        ({"channels": ["dense", "bm25"], "weights": {"dense": 1}}, "one weight per channel"),
        ({"channels": ["dense", "bm25"], "weights": {"dense": -1, "bm25": 2}}, "non-negative"),
        ({"channels": ["dense"], "weights": {"dense": 1}, "rrf_k": -1}, "rrf_k"),
    ],
)
def test_validate_fusion_block_rejects_bad_blocks(block, message) -> None:
    """A malformed hybrid block is a clear error naming the key."""
    with pytest.raises(ValueError, match=message):
        validate_fusion_block(block, "x.yaml")


def test_preset_fusion_without_backbone_or_block() -> None:
    """A model without a TP backbone, or a backbone without a preset, has no tuned fusion."""
    assert backbone_of(WordHashModel()) is None
    assert preset_fusion(WordHashModel()) is None
    assert preset_fusion("no-such-backbone-xyz") is None


def test_preset_fusion_reads_the_hybrid_block(tmp_path, monkeypatch) -> None:
    """preset_fusion reads and validates the 'hybrid' block of the backbone's preset; the preset keeps it on save."""
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\nbackbone: p\ntemplates: {prompteol: {tp_start: 1, tp_exit: 1, output_layer: -1}}\n"
        "hybrid: {channels: [dense, bm25], fusion: rrf, weights: {dense: 0.25, bm25: 0.75}}\n"
    )
    found = load_preset_file(path)
    monkeypatch.setattr(preset_module, "find_preset_for_backbone", lambda name: found)
    assert preset_fusion("p")["weights"] == {"dense": 0.25, "bm25": 0.75}
    assert preset_module.HYBRID_KEY == "hybrid"
    saved = save_preset(found, tmp_path / "copy.yaml")
    assert load_preset_file(saved).hybrid == found.hybrid


def test_from_model_uses_the_tuned_fusion(monkeypatch) -> None:
    """HybridRetriever.from_model takes channels, rule and weights from the preset; explicit weights win."""
    block = {"channels": ["dense", "bm25"], "fusion": "rrf", "weights": {"dense": 0.2, "bm25": 0.8}, "rrf_k": 10}
    monkeypatch.setattr(retriever_module, "preset_fusion", lambda model: block)
    retriever = HybridRetriever.from_model(WordHashModel(), WordSparseModel())
    assert retriever.channels == ["dense", "bm25"] and retriever.fusion == "rrf" and retriever.rrf_k == 10
    assert retriever.weights == {"dense": 0.2, "bm25": 0.8}
    explicit = HybridRetriever.from_model(WordHashModel(), weights={"dense": 0.5, "bm25": 0.5})
    assert explicit.weights == {"dense": 0.5, "bm25": 0.5} and explicit.fusion == "rsf"
    block["channels"], block["weights"] = ["sparse", "bm25"], {"sparse": 0.5, "bm25": 0.5}
    with pytest.raises(ValueError, match="pass sparse_model"):
        HybridRetriever.from_model(WordHashModel())


def test_from_model_without_a_tuned_fusion_says_so(monkeypatch) -> None:
    """Without a preset block and without weights, from_model warns that the channels get equal weights."""
    messages = []
    monkeypatch.setattr(retriever_module, "preset_fusion", lambda model: None)
    monkeypatch.setattr(retriever_module.logger, "warning_once", messages.append)
    retriever = HybridRetriever.from_model(WordHashModel())
    assert retriever.weights == {"dense": 0.5, "bm25": 0.5}
    assert len(messages) == 1 and "equal weights" in messages[0]
    HybridRetriever.from_model(WordHashModel(), weights={"dense": 0.3, "bm25": 0.7})
    assert len(messages) == 1
