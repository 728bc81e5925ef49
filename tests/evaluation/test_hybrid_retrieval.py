"""Hybrid retrieval evaluation: one row per channel and the hybrid from shared encodings; MTEB's HybridSearch agrees."""

from __future__ import annotations

import pytest

from sentence_transformers_tp.evaluation.hybrid_retrieval import evaluate_hybrid_mteb, evaluate_hybrid_retrieval
from sentence_transformers_tp.evaluation.retrieval import evaluate_retrieval, load_beir
from tests.hybrid.helpers import WordHashModel, build_tiny_sparse_encoder

from ..conftest import build_backbone
from .test_retrieval import BEIR

pytest.importorskip("bm25s")


@pytest.fixture(scope="module")
def tiny_tp_model(tmp_path_factory):
    """A SentenceTransformer with a TP module (TP before layers 1-2) on a tiny random Llama."""
    from sentence_transformers import SentenceTransformer

    from sentence_transformers_tp.module import TokenPrependingTransformer

    path = build_backbone(tmp_path_factory.mktemp("hybrid-llama"), "llama")
    module = TokenPrependingTransformer(str(path), tp_start=1, tp_exit=3, output_layer=-1)
    model = SentenceTransformer(modules=[module], device="cpu")
    model.model_card_data.model_name = "tp-test/tiny-hybrid"
    return model


@pytest.fixture(scope="module")
def fixture_sparse_encoder(tmp_path_factory):
    """A tiny real SparseEncoder whose vocabulary covers the BEIR fixture."""
    data = load_beir(BEIR, "train")
    return build_tiny_sparse_encoder(
        tmp_path_factory.mktemp("hybrid-splade"), [*data.documents(), *data.queries.values()]
    )


def test_rows_per_channel_and_hybrid_share_one_encoding() -> None:
    """One row per channel and a hybrid row; each document is encoded once; the dense row equals evaluate_retrieval."""
    model = WordHashModel()
    result = evaluate_hybrid_retrieval(model, BEIR, "train", weights={"dense": 0.4, "bm25": 0.6}, model_name="m")
    labels = [label for label, _ in result.rows]
    assert labels == ["m dense", "m bm25", "m hybrid rsf dense 0.40 + bm25 0.60"]
    assert sum(len(texts) for kind, texts in model.calls if kind == "document") == 6
    assert result.setting_source == "given"
    alone = evaluate_retrieval(WordHashModel(), BEIR, "train")
    assert result.rows[0][1].tasks["beir"].metrics == pytest.approx(alone.tasks["beir"].metrics)
    hybrid = result.hybrid.to_dict()
    assert hybrid["settings"]["hybrid"] == {
        "channels": ["dense", "bm25"],
        "fusion": "rsf",
        "weights": {"dense": 0.4, "bm25": 0.6},
    }
    assert hybrid["tasks"]["beir"]["n_queries"] == 4  # q4 is judged 0 only: evaluated and scored 0, as MTEB does


def test_without_a_setting_the_fusion_is_tuned_with_a_held_out_check() -> None:
    """With no setting and no preset block, choose_fusion picks one on half the queries and records the held-out score."""
    result = evaluate_hybrid_retrieval(WordHashModel(), BEIR, "train", model_name="m")
    assert result.setting_source == "tuned" and result.choice is not None
    settings = result.hybrid.settings
    assert settings["hybrid_source"] == "tuned"
    assert {"ndcg_at_10", "held_out_ndcg_at_10", "bm25_ndcg_at_10"} <= set(settings["hybrid_tuning"])
    assert result.rows[-1][0].startswith("m hybrid")


def test_index_is_saved_and_reused(tmp_path) -> None:
    """index_path saves the index; a second run with the same corpus encodes nothing."""
    evaluate_hybrid_retrieval(WordHashModel(), BEIR, "train", fusion="rrf", index_path=tmp_path / "idx")
    again = WordHashModel()
    result = evaluate_hybrid_retrieval(again, BEIR, "train", fusion="rrf", index_path=tmp_path / "idx")
    assert not [texts for kind, texts in again.calls if kind == "document"]
    assert result.setting.fusion == "rrf"


@pytest.mark.parametrize(
    "weights",
    [{"dense": 0.4, "bm25": 0.6}, {"dense": 0.2, "sparse": 0.3, "bm25": 0.5}],
)
@pytest.mark.parametrize("fusion", ["rsf", "rrf"])
def test_mteb_hybrid_search_gives_the_same_ndcg(tiny_tp_model, fixture_sparse_encoder, fusion, weights) -> None:
    """MTEB's HybridSearch (MTEB's bm25s model + our encoders) gives the hybrid row's nDCG@10 on the fixture."""
    pytest.importorskip("mteb")
    sparse = fixture_sparse_encoder if "sparse" in weights else None
    ours = evaluate_hybrid_retrieval(tiny_tp_model, BEIR, "train", sparse_model=sparse, fusion=fusion, weights=weights)
    mteb_result = evaluate_hybrid_mteb(ours.setting, BEIR, "train", model=tiny_tp_model, sparse_model=sparse)
    scores = mteb_result.task_results[0].scores["train"][0]
    hybrid = ours.hybrid.tasks["beir"].metrics
    assert scores["ndcg_at_10"] * 100 == pytest.approx(hybrid["ndcg_at_10"], abs=1e-3)  # MTEB rounds to 5 decimals
    assert scores["recall_at_3"] * 100 == pytest.approx(hybrid["recall_at_3"], abs=1e-3)
