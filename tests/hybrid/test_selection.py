from __future__ import annotations

import numpy as np
import pytest

from sentence_transformers_tp.hybrid.selection import candidate_settings, choose_fusion


def _synthetic(n_queries: int = 40, n_docs: int = 60, seed: int = 0):
    """Runs where BM25 finds the relevant document often, dense sometimes, and their errors are independent."""
    rng = np.random.default_rng(seed)
    doc_ids = [f"d{i:03d}" for i in range(n_docs)]
    query_ids = [f"q{i}" for i in range(n_queries)]
    qrels = {q: {doc_ids[i]: 1} for i, q in enumerate(query_ids)}
    runs = {}
    for name, signal in (("dense", 1.2), ("bm25", 2.0)):
        scores = rng.normal(size=(n_queries, n_docs))
        scores[np.arange(n_queries), np.arange(n_queries)] += signal
        order = np.argsort(-scores, axis=1)[:, :30]
        runs[name] = (order, np.take_along_axis(scores, order, 1).astype(np.float32))
    return runs, query_ids, qrels, doc_ids


def test_choice_is_never_below_bm25_on_tuning_queries() -> None:
    """The chosen setting scores at least BM25 alone on the tuning queries; its held-out score is reported."""
    runs, query_ids, qrels, doc_ids = _synthetic()
    choice = choose_fusion(runs, query_ids, qrels, doc_ids)
    assert choice.tuning_ndcg_at_10 >= choice.baselines["bm25"]["tuning"]
    assert choice.held_out_ndcg_at_10 is not None and choice.n_tuning == 20 and choice.n_held_out == 20
    assert choice.candidates[0] == (choice.setting.label, choice.tuning_ndcg_at_10)
    block = choice.to_preset()
    assert set(block) == {"channels", "fusion", "weights", "score"}
    assert set(block["weights"]) == set(block["channels"])
    assert block["score"]["bm25_ndcg_at_10"] == pytest.approx(choice.baselines["bm25"]["tuning"], abs=0.01)


def test_useless_dense_channel_gives_bm25_alone() -> None:
    """When fusion cannot beat BM25, the choice is BM25 alone (dense weight 0; ties keep the simpler setting)."""
    runs, query_ids, qrels, doc_ids = _synthetic()
    perfect = np.array([[q] + [d for d in range(60) if d != q][:29] for q in range(len(query_ids))])
    runs["bm25"] = (perfect, np.linspace(10, 1, 30)[None].repeat(len(query_ids), 0).astype(np.float32))
    choice = choose_fusion(runs, query_ids, qrels, doc_ids, held_out_fraction=0)
    assert choice.setting.channels == ("bm25",)
    assert choice.held_out_ndcg_at_10 is None


def test_choice_is_deterministic_and_the_split_is_seeded() -> None:
    """The same inputs and seed give the same choice; the tuning queries depend on the seed."""
    runs, query_ids, qrels, doc_ids = _synthetic()
    first = choose_fusion(runs, query_ids, qrels, doc_ids, seed=3)
    assert choose_fusion(runs, query_ids, qrels, doc_ids, seed=3).to_preset() == first.to_preset()


def test_candidates_cover_rules_weights_and_triples() -> None:
    """Candidates: each channel alone (BM25 first), pairs on the weight grid with both rules, weight triples."""
    settings = candidate_settings(["dense", "sparse", "bm25"])
    assert settings[0].channels == ("bm25",)
    pairs = [s for s in settings if len(s.channels) == 2]
    assert len(pairs) == 3 * 19 * 2
    triples = [s for s in settings if len(s.channels) == 3]
    assert len(triples) == 36 * 2
    assert all(abs(sum(s.weights.values()) - 1) < 1e-9 for s in settings)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"held_out_fraction": 1.0}, "held_out_fraction"), ({"fusions": ["max"]}, "unknown fusion")],
)
def test_bad_choice_settings_are_errors(kwargs, message) -> None:
    """Bad selection settings raise a clear error."""
    runs, query_ids, qrels, doc_ids = _synthetic()
    with pytest.raises(ValueError, match=message):
        choose_fusion(runs, query_ids, qrels, doc_ids, **kwargs)


def test_runs_of_the_wrong_length_are_an_error() -> None:
    """A run with another number of rows than queries is refused."""
    runs, query_ids, qrels, doc_ids = _synthetic()
    with pytest.raises(ValueError, match="rows for"):
        choose_fusion(runs, query_ids[:-1], qrels, doc_ids)


def test_explicit_held_out_queries() -> None:
    """held_out= names the held-out queries (a tuner's own split); the others are the tuning queries."""
    runs, query_ids, qrels, doc_ids = _synthetic()
    choice = choose_fusion(runs, query_ids, qrels, doc_ids, held_out=query_ids[:10])
    assert choice.n_held_out == 10 and choice.n_tuning == 30
    with pytest.raises(ValueError, match="not among the queries"):
        choose_fusion(runs, query_ids, qrels, doc_ids, held_out=["nope"])
    with pytest.raises(ValueError, match="every query is held out"):
        choose_fusion(runs, query_ids, qrels, doc_ids, held_out=query_ids)
