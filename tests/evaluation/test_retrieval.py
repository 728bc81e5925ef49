"""Retrieval evaluator: BEIR loading, hand-computed metrics, bounded-memory search, subsets, result schema."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sentence_transformers_tp.evaluation.report import validate_result_dict
from sentence_transformers_tp.evaluation.retrieval import (
    evaluate_retrieval,
    list_beir_splits,
    load_beir,
    ranking_metrics,
    resolve_beir_split,
    retrieval_table,
)

BEIR = Path(__file__).parent / "fixtures" / "beir"
"""Hand-made BEIR folder: 6 documents, 5 queries, qrels ``train`` (graded, one query judged 0 only) and ``test``."""

DOC_ANGLES = {"d1": 0, "d2": 20, "d3": 40, "d4": 60, "d5": 80, "d6": 100}
QUERY_ANGLES = {"q1": 0, "q2": 100, "q3": 45, "q4": 60, "q5": 80}

# Hand-computed on the train qrels with the angle encoder below (cosine = cos of the angle difference):
#   q1 (0 deg):   ranking d1 d2 d3 d4 d5 d6, relevant d2 (gain 2) and d4 (gain 1)
#   q2 (100 deg): ranking d6 ..., relevant d6 (rank 1)
#   q3 (45 deg):  ranking d3 d4 d2 d5 d1 d6, relevant d1 (rank 5)
#   q4 (60 deg) is judged 0 only: evaluated and scores 0 everywhere, as in MTEB; q5 has no train qrels.
NDCG10_Q1 = (2 / math.log2(3) + 1 / math.log2(5)) / (2 / math.log2(2) + 1 / math.log2(3))
NDCG10_Q3 = 1 / math.log2(6)
HAND = {  # q1, q2, q3, q4 (q4: 0)
    "ndcg_at_10": (NDCG10_Q1 + 1.0 + NDCG10_Q3 + 0) / 4,
    "ndcg_at_3": (2 / math.log2(3) / (2 + 1 / math.log2(3)) + 1.0 + 0.0 + 0) / 4,
    "mrr_at_10": (1 / 2 + 1 + 1 / 5 + 0) / 4,
    "mrr_at_3": (1 / 2 + 1 + 0 + 0) / 4,
    "recall_at_1": (0 + 1 + 0 + 0) / 4,
    "recall_at_3": (1 / 2 + 1 + 0 + 0) / 4,
    "recall_at_10": (1 + 1 + 1 + 0) / 4,
}


class AngleEncoder:
    """Deterministic fake encoder: each fixture text is the unit vector at its hand-chosen angle (degrees)."""

    def __init__(self) -> None:
        data = load_beir(BEIR, "train")
        self.angles = {doc: DOC_ANGLES[i] for i, doc in zip(data.doc_ids, data.documents())}
        for line in (BEIR / "queries.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            self.angles[row["text"]] = QUERY_ANGLES[row["_id"]]
        self.calls: list[tuple[str, list[str]]] = []

    def _vectors(self, texts: list[str]) -> np.ndarray:
        radians = np.radians([self.angles[t] for t in texts])
        return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32) * 3.0  # not normalised

    def encode_query(self, texts: list[str], **kwargs) -> np.ndarray:
        self.calls.append(("query", list(texts)))
        return self._vectors(texts)

    def encode_document(self, texts: list[str], **kwargs) -> np.ndarray:
        self.calls.append(("document", list(texts)))
        return self._vectors(texts)


def test_load_beir_reads_the_layout_and_keeps_judged_queries():
    """Splits come from qrels/; queries with a judgment are kept (also one judged 0 only, as in MTEB), those without
    are not; documents are title + text."""
    assert list_beir_splits(BEIR) == ["test", "train"]
    assert resolve_beir_split(BEIR) == "test"
    data = load_beir(BEIR, "train")
    assert list(data.queries) == ["q1", "q2", "q3", "q4"] and data.qrels["q1"] == {"d2": 2, "d4": 1}
    assert data.corpus_size == 6 and data.doc_ids[0] == "d1"
    docs = data.documents()
    assert docs[0] == "Guitars A man is playing a guitar on the stage."
    assert docs[2] == "A woman is slicing an onion in the kitchen."  # empty title: no leading space
    assert docs[5] == "The cat sleeps on the sofa all day long."  # no title key
    with pytest.raises(FileNotFoundError, match="qrels splits: test, train"):
        load_beir(BEIR, "dev")
    with pytest.raises(FileNotFoundError, match="not a BEIR folder"):
        load_beir(BEIR / "qrels")


def test_metrics_equal_the_hand_computed_values():
    """nDCG@k (graded gains, log2 discount), MRR@k and Recall@k equal hand-computed values on the fixture."""
    result = evaluate_retrieval(AngleEncoder(), BEIR, "train")
    task = result.tasks["beir"]
    for key, value in HAND.items():
        assert task.metrics[key] == pytest.approx(100 * value, abs=1e-6), key
    assert result.avg == pytest.approx(100 * HAND["ndcg_at_10"])
    assert task.per_query["q3"]["ndcg_at_10"] == pytest.approx(NDCG10_Q3)
    assert task.per_query["q4"] == {key: 0.0 for key in task.per_query["q1"]}
    assert (task.n_queries, task.n_docs, task.split) == (4, 6, "train")


def test_ranking_metrics_match_pytrec_eval_on_random_graded_rankings():
    """Our nDCG@k and Recall@k agree with pytrec_eval (MTEB's backend) on random graded qrels, incl. missing docs."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(0)
    docs = [f"doc{i}" for i in range(40)]
    qrels, run, rankings = {}, {}, {}
    for q in range(12):
        judged = rng.choice(len(docs) + 5, size=6, replace=False)
        qrels[f"q{q}"] = {f"doc{j}": int(rng.integers(0, 3)) for j in judged}  # doc40+ are not in the run
        qrels[f"q{q}"][docs[int(rng.integers(0, 40))]] = 2
        scores = rng.random(len(docs))
        run[f"q{q}"] = {d: float(s) for d, s in zip(docs, scores)}
        rankings[f"q{q}"] = [docs[i] for i in np.argsort(-scores)]
    means, _ = ranking_metrics(rankings, qrels, (1, 5, 10, 20))
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.1,5,10,20", "recall.1,5,10,20"})
    scores = evaluator.evaluate(run)
    for k in (1, 5, 10, 20):
        assert means[f"ndcg_at_{k}"] == pytest.approx(np.mean([s[f"ndcg_cut_{k}"] for s in scores.values()]))
        assert means[f"recall_at_{k}"] == pytest.approx(np.mean([s[f"recall_{k}"] for s in scores.values()]))


def test_queries_judged_zero_only_score_zero_like_mteb():
    """A query whose judgments are all 0 is scored 0 (not dropped) and one without judgments is skipped, so the means
    equal pytrec_eval's (MTEB 2.x's backend) over MTEB's query set: every query with at least one qrels row."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = {"a": {"d1": 1, "d3": 2}, "zero": {"d2": 0, "d4": 0}, "empty": {}}
    run = {qid: {"d1": 0.9, "d2": 0.8, "d3": 0.7, "d4": 0.1} for qid in ("a", "zero", "empty", "unjudged")}
    rankings = {qid: sorted(scores, key=scores.get, reverse=True) for qid, scores in run.items()}
    means, per_query = ranking_metrics(rankings, qrels, (1, 3))
    assert set(per_query) == {"a", "zero"}
    assert per_query["zero"] == {key: 0.0 for key in per_query["a"]}
    mteb_qrels = {qid: docs for qid, docs in qrels.items() if docs}  # mteb's _filter_queries_without_positives
    scores = pytrec_eval.RelevanceEvaluator(mteb_qrels, {"ndcg_cut.1,3", "recall.1,3"}).evaluate(run)
    assert set(scores) == {"a", "zero"}
    for k in (1, 3):
        assert means[f"ndcg_at_{k}"] == pytest.approx(np.mean([s[f"ndcg_cut_{k}"] for s in scores.values()]))
        assert means[f"recall_at_{k}"] == pytest.approx(np.mean([s[f"recall_{k}"] for s in scores.values()]))
    assert means["mrr_at_3"] == pytest.approx((1.0 + 0.0) / 2)


def test_search_routes_encoders_goes_longest_first_and_chunking_does_not_change_scores():
    """Queries go to encode_query, documents to encode_document longest first in chunks; small chunks and a small
    top-k give the same metrics as one big chunk."""
    encoder = AngleEncoder()
    big = evaluate_retrieval(encoder, BEIR, "train", chunk_size=1000).tasks["beir"].metrics
    assert [kind for kind, _ in encoder.calls] == ["query", "document"]
    assert encoder.calls[0][1] == [
        "Who is making music?",
        "Where does the cat sleep?",
        "What is the woman cutting?",
        "Is anybody playing a game?",
    ]
    lengths = [len(t) for t in encoder.calls[1][1]]
    assert lengths == sorted(lengths, reverse=True)

    encoder = AngleEncoder()
    small = evaluate_retrieval(encoder, BEIR, "train", chunk_size=2, k_values=(1, 3, 5)).tasks["beir"].metrics
    assert [kind for kind, _ in encoder.calls] == ["query", "document", "document", "document"]
    assert all(len(texts) <= 2 for kind, texts in encoder.calls if kind == "document")
    for key in ("ndcg_at_3", "mrr_at_3", "recall_at_1", "recall_at_5"):
        assert small[key] == pytest.approx(big[key])


def test_query_and_corpus_subsets_are_seeded_and_recorded():
    """limit/sample pick queries, corpus_sample keeps their relevant documents plus N seeded distractors, and the
    result records the subset."""
    data = load_beir(BEIR, "train")
    assert list(data.subset(limit=2).queries) == ["q1", "q2"]
    first = data.subset(sample=2, seed=3)
    assert len(first.queries) == 2 and first.queries == data.subset(sample=2, seed=3).queries
    sub = data.subset(limit=1, corpus_sample=1, corpus_seed=5)
    assert {"d2", "d4"} <= set(sub.doc_ids) and len(sub.doc_ids) == 3
    assert sub.doc_ids == data.subset(limit=1, corpus_sample=1, corpus_seed=5).doc_ids
    assert sub.corpus_size == 6
    with pytest.raises(ValueError, match="not both"):
        data.subset(limit=1, sample=1)

    result = evaluate_retrieval(AngleEncoder(), BEIR, "train", sample=2, sample_seed=1, corpus_sample=1)
    settings = result.settings
    assert settings["sample"] == 2 and settings["corpus_sample"] == 1 and settings["corpus_seed"] == 1
    assert settings["full_corpus"] is False
    entry = result.to_dict()["tasks"]["beir"]
    assert entry["full_corpus"] is False and entry["corpus_size"] == 6 and entry["n_queries"] == 2


def test_result_follows_the_report_schema_and_renders_tables():
    """to_dict is strict JSON valid under the report schema (score = nDCG@10 x 100) and the tables name the metrics."""
    result = evaluate_retrieval(AngleEncoder(), BEIR, "train", model_name="org/angles", config={"template": "x"})
    data = result.to_dict()
    validate_result_dict(data)
    json.dumps(data, allow_nan=False)
    assert data["kind"] == "retrieval" and data["metric"] == "ndcg_at_10" and data["model"] == "org/angles"
    entry = data["tasks"]["beir"]
    assert entry["score"] == entry["ndcg_at_10"] == pytest.approx(100 * HAND["ndcg_at_10"])
    assert entry["seconds_per_1000_docs"] is not None
    table = result.to_markdown()
    assert "nDCG@10" in table and "R@100" in table and "| org/angles | beir (train) | 50.75 |" in table
    sub = evaluate_retrieval(AngleEncoder(), BEIR, "train", limit=1, corpus_sample=1)
    assert "3 of 6" in retrieval_table([("subset", sub)])
