from __future__ import annotations

import json

import numpy as np
import pytest

from sentence_transformers_tp.hybrid.fusion import fuse
from sentence_transformers_tp.hybrid.retriever import INDEX_FILE, HybridRetriever
from tests.hybrid.helpers import CORPUS, QUERIES, WordHashModel, WordSparseModel

pytest.importorskip("bm25s")


def _documents_encoded(model) -> int:
    return sum(len(texts) for kind, texts in model.calls if kind == "document")


def test_index_encodes_each_document_once_and_search_fuses() -> None:
    """index() encodes each document once per model channel; search() returns the rsf fusion of the channel runs."""
    dense, sparse = WordHashModel(), WordSparseModel()
    retriever = HybridRetriever(dense, sparse, chunk_size=4, weights={"dense": 0.5, "sparse": 0.2, "bm25": 0.3})
    retriever.index(CORPUS)
    assert _documents_encoded(dense) == len(CORPUS) and _documents_encoded(sparse) == len(CORPUS)
    hits = retriever.search(QUERIES, k=3)
    assert [doc for doc, _ in hits[0]][0] == "d1"
    assert hits[2][0][0] == "d5"
    runs = retriever.channel_runs(QUERIES)
    indices, scores = fuse(
        [runs[c] for c in ("dense", "sparse", "bm25")], [0.5, 0.2, 0.3], k=3, tie_key=retriever.tie_key
    )
    assert [[d for d, _ in row] for row in hits] == [[retriever.ids[i] for i in row] for row in indices]
    assert np.allclose([[s for _, s in row] for row in hits], scores)


def test_single_channel_returns_its_own_ranking() -> None:
    """With one channel, search() is that channel's ranking (its own scores)."""
    retriever = HybridRetriever(WordHashModel(), bm25=False).index(CORPUS)
    indices, scores = retriever.channel_runs(QUERIES[:1], 2)["dense"]
    assert retriever.search(QUERIES[0], k=2) == [
        [(retriever.ids[i], pytest.approx(float(s))) for i, s in zip(indices[0], scores[0])]
    ]


def test_rrf_fusion() -> None:
    """fusion='rrf' ranks by summed weight / (60 + rank)."""
    retriever = HybridRetriever(WordHashModel(), fusion="rrf").index(CORPUS)
    hits = retriever.search(QUERIES[0], k=len(CORPUS))[0]
    assert hits[0][0] == "d1"
    assert hits[0][1] == pytest.approx(0.5 / 61 + 0.5 / 61)


def test_saved_index_is_reused_without_encoding(tmp_path) -> None:
    """index(corpus, path=...) a second time loads the saved index: no document is encoded again; same results."""
    first = WordHashModel()
    path = tmp_path / "index"
    hits = HybridRetriever(first, WordSparseModel()).index(CORPUS, path=path).search(QUERIES, k=4)
    assert (path / INDEX_FILE).is_file() and (path / "dense.npy").is_file() and (path / "sparse.npz").is_file()
    second, sparse = WordHashModel(), WordSparseModel()
    again = HybridRetriever(second, sparse).index(CORPUS, path=path)
    assert _documents_encoded(second) == 0 and _documents_encoded(sparse) == 0
    assert again.search(QUERIES, k=4) == hits
    loaded = HybridRetriever.load(path, WordHashModel(), WordSparseModel(), corpus=CORPUS)
    assert loaded.search(QUERIES, k=4) == hits
    assert loaded.texts == list(CORPUS.values())


def test_saved_index_of_another_corpus_is_an_error(tmp_path) -> None:
    """A saved index built from another corpus is refused (clear error), unless overwrite=True rebuilds it."""
    path = tmp_path / "index"
    HybridRetriever(WordHashModel()).index(CORPUS, path=path)
    changed = {**CORPUS, "d6": "A different text."}
    with pytest.raises(ValueError, match="another corpus"):
        HybridRetriever(WordHashModel()).index(changed, path=path)
    with pytest.raises(ValueError, match="another corpus"):
        HybridRetriever.load(path, WordHashModel(), corpus=changed)
    model = WordHashModel()
    rebuilt = HybridRetriever(model).index(changed, path=path, overwrite=True)
    assert _documents_encoded(model) == len(changed)
    assert HybridRetriever.load(path, WordHashModel()).texts == rebuilt.texts


@pytest.mark.parametrize(
    ("kwargs", "differing"),
    [
        ({"dense_model": WordHashModel("another-model")}, "dense"),
        ({"bm25": {"k1": 0.9}}, "bm25"),
        ({"bm25": False}, "channels"),
        ({"sparse_model": WordSparseModel()}, "channels"),
    ],
)
def test_saved_index_with_other_settings_is_an_error(tmp_path, kwargs, differing) -> None:
    """A saved index built with another model, BM25 settings or channels is refused, naming what differs."""
    path = tmp_path / "index"
    HybridRetriever(WordHashModel()).index(CORPUS, path=path)
    settings = {"dense_model": WordHashModel(), **kwargs}
    with pytest.raises(ValueError, match=f"other settings.*{differing}"):
        HybridRetriever(**settings).index(CORPUS, path=path)


def test_load_checks_models(tmp_path) -> None:
    """load() needs the model of each model channel, refuses extra channels and another model."""
    path = tmp_path / "index"
    HybridRetriever(WordHashModel()).index(CORPUS, path=path)
    with pytest.raises(ValueError, match="pass the dense_model"):
        HybridRetriever.load(path)
    with pytest.raises(ValueError, match="no sparse channel"):
        HybridRetriever.load(path, WordHashModel(), WordSparseModel())
    with pytest.raises(ValueError, match="other settings"):
        HybridRetriever.load(path, WordHashModel("another-model"))
    with pytest.raises(FileNotFoundError, match="holds no hybrid index"):
        HybridRetriever.load(tmp_path / "missing", WordHashModel())


def test_damaged_saved_corpus_is_an_error(tmp_path) -> None:
    """A saved corpus file that no longer matches the recorded hash is refused."""
    path = tmp_path / "index"
    HybridRetriever(bm25=True).index(CORPUS, path=path)
    lines = (path / "corpus.jsonl").read_text().splitlines()
    lines[0] = json.dumps({"_id": "d1", "text": "edited"})
    (path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="damaged"):
        HybridRetriever.load(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bm25": False}, "at least one channel"),
        ({"fusion": "max"}, "unknown fusion"),
        ({"weights": {"dense": 1.0}}, "exactly the active channels"),
        ({"weights": {"bm25": 0.0}}, "not all zero"),
    ],
)
def test_bad_settings_are_errors(kwargs, message) -> None:
    """No channel, an unknown fusion and weights that do not fit the channels raise a clear error."""
    with pytest.raises(ValueError, match=message):
        HybridRetriever(**kwargs)


def test_bad_corpus_and_search_before_index_are_errors() -> None:
    """An empty corpus or duplicate ids raise; searching without an index raises."""
    retriever = HybridRetriever(WordHashModel())
    with pytest.raises(ValueError, match="empty"):
        retriever.index({})
    with pytest.raises(ValueError, match="duplicate"):
        retriever.index(["a", "b"], ids=["x", "x"])
    with pytest.raises(RuntimeError, match="no index"):
        retriever.search("query")


def test_real_sparse_encoder_channel(tiny_sparse_encoder) -> None:
    """A sentence-transformers SparseEncoder works as the sparse channel (dot product of its sparse vectors)."""
    retriever = HybridRetriever(sparse_model=tiny_sparse_encoder, bm25=False).index(CORPUS)
    indices, scores = retriever.channel_runs(QUERIES, 3)["sparse"]
    query = tiny_sparse_encoder.encode_query(QUERIES).to_dense()
    docs = tiny_sparse_encoder.encode_document(list(CORPUS.values())).to_dense()
    expected = (query @ docs.T).numpy()
    np.testing.assert_allclose(scores, np.take_along_axis(expected, indices, 1), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_a_folder_that_is_not_an_index_is_never_replaced(tmp_path) -> None:
    """Saving into a non-empty folder without an index (or onto a file) is refused; its content stays."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    model = WordHashModel()
    with pytest.raises(ValueError, match="not a hybrid index folder"):
        HybridRetriever(model).index(CORPUS, path=folder)
    assert not model.calls  # refused before encoding
    assert (folder / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a hybrid index folder"):
        HybridRetriever(WordHashModel()).index(CORPUS, path=tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    HybridRetriever(WordHashModel()).index(CORPUS, path=empty)
    assert (empty / "hybrid_index.json").is_file()
