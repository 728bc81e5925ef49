from __future__ import annotations

import numpy as np
import pytest

from tests.hybrid.helpers import CORPUS, QUERIES

pytest.importorskip("bm25s")
pytest.importorskip("Stemmer")

from sentence_transformers_tp.hybrid.bm25 import BM25Channel  # noqa: E402


def test_bm25_channel_equals_mteb_bm25s_model() -> None:
    """The BM25 channel's run equals the run of MTEB's own bm25s model (English stopwords and stemmer)."""
    mteb = pytest.importorskip("mteb")
    from datasets import Dataset

    ids, texts = list(CORPUS), list(CORPUS.values())
    channel = BM25Channel()
    channel.index(texts)
    indices, scores = channel.search(QUERIES, 4)

    model = mteb.get_model("mteb/baseline-bm25s")
    metadata = mteb.get_task("SciFact").metadata
    corpus = Dataset.from_dict({"id": ids, "title": [""] * len(ids), "text": texts})
    model.index(corpus, task_metadata=metadata, hf_split="test", hf_subset="default", encode_kwargs={})
    queries = Dataset.from_dict({"id": [f"q{i}" for i in range(len(QUERIES))], "text": QUERIES})
    result = model.search(
        queries, task_metadata=metadata, hf_split="test", hf_subset="default", top_k=4, encode_kwargs={}
    )
    for q in range(len(QUERIES)):
        ours = {ids[i]: float(s) for i, s in zip(indices[q], scores[q])}
        assert ours == pytest.approx(result[f"q{q}"])


def test_bm25_stems_and_drops_stopwords() -> None:
    """'playing' matches 'plays' (English stemmer); a query of stopwords only scores every document 0."""
    channel = BM25Channel()
    channel.index(["she plays tennis", "the cat sleeps"])
    indices, scores = channel.search(["playing", "the of and"], 2)
    assert indices[0, 0] == 0 and scores[0, 0] > 0
    assert np.all(scores[1] == 0)


def test_bm25_save_load_round_trip(tmp_path) -> None:
    """A saved BM25 channel loads with its settings and returns the same run."""
    channel = BM25Channel(k1=1.2, b=0.5)
    channel.index(list(CORPUS.values()))
    channel.save(tmp_path / "bm25")
    loaded = BM25Channel.load(tmp_path / "bm25")
    assert loaded.settings == channel.settings
    for a, b in zip(channel.search(QUERIES, 3), loaded.search(QUERIES, 3)):
        np.testing.assert_array_equal(a, b)


def test_bm25_search_without_index_is_an_error() -> None:
    """Searching before indexing raises a clear error."""
    with pytest.raises(RuntimeError, match="no index"):
        BM25Channel().search(["q"], 1)
