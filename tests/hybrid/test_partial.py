from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse

from sentence_transformers_tp.hybrid.partial import PARTIAL_FILE, PartialIndex, partial_folder
from sentence_transformers_tp.hybrid.retriever import HybridRetriever
from tests.hybrid.helpers import CORPUS, QUERIES, WordHashModel, WordSparseModel

pytest.importorskip("bm25s")


class Interrupted(RuntimeError):
    """Raised by :class:`StopsAfter` to simulate a build killed part-way."""


def stops_after(calls: int) -> WordHashModel:
    """A dense model (the same fingerprint as any ``WordHashModel``) whose ``calls``-th document encode call fails."""
    model = WordHashModel()
    encode = model.encode_document

    def encode_document(texts, **kwargs):
        if sum(kind == "document" for kind, _ in model.calls) + 1 >= calls:
            raise Interrupted("killed")
        return encode(texts, **kwargs)

    model.encode_document = encode_document
    return model


def _documents_encoded(model) -> int:
    return sum(len(texts) for kind, texts in model.calls if kind == "document")


def test_interrupted_build_resumes_from_its_finished_chunks(tmp_path) -> None:
    """A build killed after two chunks encodes only the other documents when run again, with the same results."""
    path = tmp_path / "index"
    with pytest.raises(Interrupted):
        HybridRetriever(stops_after(3), chunk_size=2).index(CORPUS, path=path)
    assert not path.exists()
    assert len(list(partial_folder(path).glob("dense-*.npz"))) == 2
    model = WordHashModel()
    resumed = HybridRetriever(model, chunk_size=2).index(CORPUS, path=path)
    assert _documents_encoded(model) == len(CORPUS) - 4
    assert not partial_folder(path).exists()
    fresh = HybridRetriever(WordHashModel(), chunk_size=2).index(CORPUS)
    np.testing.assert_array_equal(resumed.dense_matrix, fresh.dense_matrix)
    assert resumed.search(QUERIES, k=4) == fresh.search(QUERIES, k=4)


def test_chunks_of_another_build_are_discarded(tmp_path) -> None:
    """Chunks left by a build of another corpus (or chunk size) are never used: the new build encodes everything."""
    path = tmp_path / "index"
    with pytest.raises(Interrupted):
        HybridRetriever(stops_after(3), chunk_size=2).index(CORPUS, path=path)
    model = WordHashModel()
    other = {**CORPUS, "d6": "A different last document."}
    built = HybridRetriever(model, chunk_size=2).index(other, path=path)
    assert _documents_encoded(model) == len(other)
    np.testing.assert_array_equal(built.dense_matrix, HybridRetriever(WordHashModel()).index(other).dense_matrix)
    with pytest.raises(Interrupted):
        HybridRetriever(stops_after(3), chunk_size=2).index(CORPUS, path=tmp_path / "second")
    model = WordHashModel()
    HybridRetriever(model, chunk_size=3).index(CORPUS, path=tmp_path / "second")
    assert _documents_encoded(model) == len(CORPUS)


def test_dense_and_sparse_channels_resume_separately(tmp_path) -> None:
    """With a dense and a sparse model, the finished dense chunks are kept when the sparse pass has not started."""
    path = tmp_path / "index"
    sparse = WordSparseModel()
    with pytest.raises(Interrupted):
        HybridRetriever(stops_after(2), sparse, chunk_size=4).index(CORPUS, path=path)
    assert _documents_encoded(sparse) == 0
    dense, sparse = WordHashModel(), WordSparseModel()
    resumed = HybridRetriever(dense, sparse, chunk_size=4).index(CORPUS, path=path)
    assert _documents_encoded(dense) == len(CORPUS) - 4 and _documents_encoded(sparse) == len(CORPUS)
    fresh = HybridRetriever(WordHashModel(), WordSparseModel(), chunk_size=4).index(CORPUS)
    assert (resumed.sparse_matrix != fresh.sparse_matrix).nnz == 0
    assert resumed.search(QUERIES, k=4) == fresh.search(QUERIES, k=4)


def test_partial_index_round_trips_each_channel_kind(tmp_path) -> None:
    """Stored chunks load back exactly: a dense array, a CSR matrix, and a (dense, sparse) pair of the joint pass."""
    partial = PartialIndex(tmp_path / ".index.partial", {"corpus_hash": "abc", "chunk_size": 2})
    dense = np.arange(6, dtype=np.float32).reshape(2, 3)
    sparse = scipy.sparse.csr_matrix(np.array([[0, 1.5, 0, 0], [2.0, 0, 0, 3.0]], dtype=np.float32))
    partial.save("dense", 0, dense)
    partial.save("sparse", 0, sparse)
    partial.save("joint", 1, (dense, sparse))
    assert partial.load("dense", 1) is None and partial.done() == 3
    np.testing.assert_array_equal(partial.load("dense", 0), dense)
    assert (partial.load("sparse", 0) != sparse).nnz == 0 and partial.load("sparse", 0).shape == (2, 4)
    joint_dense, joint_sparse = partial.load("joint", 1)
    np.testing.assert_array_equal(joint_dense, dense)
    assert (joint_sparse != sparse).nnz == 0
    assert json.loads((tmp_path / ".index.partial" / PARTIAL_FILE).read_text()) == {
        "chunk_size": 2,
        "corpus_hash": "abc",
    }
    again = PartialIndex(tmp_path / ".index.partial", {"corpus_hash": "abc", "chunk_size": 2})
    assert again.done() == 3
    PartialIndex(tmp_path / ".index.partial", {"corpus_hash": "other", "chunk_size": 2})
    assert again.load("dense", 0) is None


def test_damaged_chunk_is_an_error(tmp_path) -> None:
    """A stored chunk whose row count does not match its documents raises a one-line error, never a wrong index."""
    path = tmp_path / "index"
    with pytest.raises(Interrupted):
        HybridRetriever(stops_after(2), chunk_size=2).index(CORPUS, path=path)
    stored = next(partial_folder(path).glob("dense-*.npz"))
    np.savez(stored, dense=np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="holds 1 documents, not 2"):
        HybridRetriever(WordHashModel(), chunk_size=2).index(CORPUS, path=path)
