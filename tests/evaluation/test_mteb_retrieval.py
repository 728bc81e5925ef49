"""The local MTEB retrieval task: offline, same data and subsets, same nDCG@10 as ``evaluate_retrieval``."""

from __future__ import annotations

import numpy as np
import pytest

from sentence_transformers_tp.evaluation.model_meta import wrap_for_mteb
from sentence_transformers_tp.evaluation.mteb_retrieval import local_retrieval_task
from sentence_transformers_tp.evaluation.retrieval import evaluate_retrieval, load_beir

from ..conftest import build_backbone
from .test_retrieval import BEIR, HAND, AngleEncoder


@pytest.fixture(scope="module")
def tiny_tp_model(tmp_path_factory):
    """A SentenceTransformer with a TP module (TP before layers 1-2) on a tiny random Llama."""
    from sentence_transformers import SentenceTransformer

    from sentence_transformers_tp.module import TokenPrependingTransformer

    path = build_backbone(tmp_path_factory.mktemp("retrieval-llama"), "llama")
    module = TokenPrependingTransformer(str(path), tp_start=1, tp_exit=3, output_layer=-1)
    model = SentenceTransformer(modules=[module], device="cpu")
    model.model_card_data.model_name = "tp-test/tiny-retrieval"
    return model


def _mteb_angle_model():
    """The fixture's angle encoder as an MTEB encoder (MTEB hands it the texts it would give any model)."""
    from mteb.models import ModelMeta
    from mteb.models.abs_encoder import AbsEncoder

    angles = AngleEncoder()

    class AngleMTEB(AbsEncoder):
        mteb_model_meta = ModelMeta.create_empty({"name": "tp-test/angles", "revision": "1"})

        def __init__(self) -> None:
            self.prompt_types: list[str] = []

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            self.prompt_types.append(str(prompt_type.value))
            return angles._vectors([text for batch in inputs for text in batch["text"]])

    return AngleMTEB()


def test_task_metadata_split_and_revision():
    """The task is a Retrieval task named Local<dataset> with nDCG@10 as main score; the revision names the subset."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    task = local_retrieval_task(BEIR, "train", limit=2, corpus_sample=1)
    assert isinstance(task, AbsTaskRetrieval)
    assert task.metadata.name == "Localbeir" and task.metadata.main_score == "ndcg_at_10"
    assert task.metadata.type == "Retrieval" and task.eval_splits == ["train"]
    assert task.metadata.revision.startswith("local-train-") and task.metadata.revision.endswith(
        "-first2-corpus1-seed0"
    )
    assert local_retrieval_task(BEIR).eval_splits == ["test"]
    assert local_retrieval_task(BEIR, name="LocalSciFact").metadata.name == "LocalSciFact"
    task.load_data()
    split = task.dataset["default"]["train"]
    data = load_beir(BEIR, "train").subset(2, corpus_sample=1)
    assert split["queries"]["id"] == ["q1", "q2"] and split["corpus"]["id"] == data.doc_ids


def test_mteb_gives_the_hand_computed_ndcg():
    """mteb.evaluate on the local task, with the deterministic angle encoder, reproduces the hand-computed nDCG@10,
    and it routes queries and documents as query/document prompt types."""
    import mteb

    model = _mteb_angle_model()
    result = mteb.evaluate(model, [local_retrieval_task(BEIR, "train")], cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["train"][0]
    assert scores["main_score"] == pytest.approx(HAND["ndcg_at_10"], abs=1e-5)
    assert scores["mrr_at_10"] == pytest.approx(HAND["mrr_at_10"], abs=1e-5)
    assert scores["recall_at_3"] == pytest.approx(HAND["recall_at_3"], abs=1e-5)
    assert model.prompt_types == ["query", "document"]


@pytest.mark.parametrize("subset", [{}, {"sample": 2, "sample_seed": 1, "corpus_sample": 2}])
def test_mteb_and_evaluate_retrieval_agree_on_a_tp_model(tiny_tp_model, subset):
    """A TP model gets the same nDCG@10, MRR@10 and Recall@10 from mteb.evaluate and from evaluate_retrieval,
    on the full fixture and on a seeded query/corpus subset."""
    import mteb

    ours = evaluate_retrieval(tiny_tp_model, BEIR, "train", batch_size=4, **subset).tasks["beir"]
    task = local_retrieval_task(BEIR, "train", **subset)
    model = wrap_for_mteb(tiny_tp_model)  # its own ModelMeta; mteb.evaluate(tiny_tp_model, ...) scores the same
    result = mteb.evaluate(model, [task], cache=None, show_progress_bar=False, encode_kwargs={"batch_size": 4})
    scores = result.task_results[0].scores["train"][0]
    assert result.model_name == "tp-test/tiny-retrieval"
    assert 100 * scores["ndcg_at_10"] == pytest.approx(ours.ndcg_at_10, abs=1e-3)
    assert 100 * scores["mrr_at_10"] == pytest.approx(ours.metrics["mrr_at_10"], abs=1e-3)
    assert 100 * scores["recall_at_10"] == pytest.approx(ours.metrics["recall_at_10"], abs=1e-3)
    assert np.isfinite(ours.ndcg_at_10) and ours.n_queries == (2 if subset else 4)
