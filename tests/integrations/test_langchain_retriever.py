"""LangChain: the hybrid BaseRetriever and the langchain_qdrant sparse embeddings (Qdrant local-mode hybrid search)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.hybrid.helpers import CORPUS, QUERIES, WordHashModel, WordSparseModel, build_tiny_sparse_encoder

pytest.importorskip("langchain_core")
pytest.importorskip("bm25s")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402

from sentence_transformers_tp.hybrid import HybridRetriever  # noqa: E402
from sentence_transformers_tp.integrations.langchain_retriever import TokenPrependingHybridRetriever  # noqa: E402


def test_retriever_returns_documents_with_ids_and_fused_scores() -> None:
    """invoke() returns k Documents (text, id, fused score), in the hybrid retriever's order."""
    hybrid = HybridRetriever(WordHashModel()).index(CORPUS)
    retriever = TokenPrependingHybridRetriever(retriever=hybrid, k=3)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke(QUERIES[0])
    expected = hybrid.search(QUERIES[0], k=3)[0]
    assert all(isinstance(doc, Document) for doc in docs)
    assert [(doc.id, doc.metadata["score"]) for doc in docs] == expected
    assert docs[0].page_content == CORPUS["d1"] and docs[0].metadata["id"] == "d1"


@pytest.mark.asyncio
async def test_async_invoke_matches() -> None:
    """ainvoke() gives the same documents as invoke()."""
    retriever = TokenPrependingHybridRetriever(retriever=HybridRetriever(WordHashModel()).index(CORPUS), k=2)
    assert [d.id for d in await retriever.ainvoke(QUERIES[2])] == [d.id for d in retriever.invoke(QUERIES[2])]


def test_from_texts_indexes_and_saves(tmp_path) -> None:
    """from_texts() indexes the texts (ids given) and saves the index to path."""
    retriever = TokenPrependingHybridRetriever.from_texts(
        list(CORPUS.values()), WordHashModel(), ids=list(CORPUS), path=str(tmp_path / "idx"), k=1
    )
    assert retriever.invoke(QUERIES[2])[0].id == "d5"
    assert (tmp_path / "idx" / "hybrid_index.json").is_file()


def test_sparse_embeddings_equal_the_encoder_vectors(tmp_path) -> None:
    """The langchain_qdrant SparseEmbeddings adapter returns the SparseEncoder's non-zero dimensions and weights."""
    pytest.importorskip("langchain_qdrant")
    from langchain_qdrant import SparseEmbeddings

    from sentence_transformers_tp.integrations.langchain_sparse import TokenPrependingSparseEmbeddings

    encoder = build_tiny_sparse_encoder(tmp_path / "splade", [*CORPUS.values(), *QUERIES])
    sparse = TokenPrependingSparseEmbeddings(encoder)
    assert isinstance(sparse, SparseEmbeddings)
    vectors = sparse.embed_documents(list(CORPUS.values()))
    dense = encoder.encode_document(list(CORPUS.values())).to_dense().numpy()
    for row, vector in zip(dense, vectors):
        rebuilt = np.zeros_like(row)
        rebuilt[vector.indices] = vector.values
        np.testing.assert_allclose(rebuilt, row, rtol=1e-6)
    query = sparse.embed_query(QUERIES[0])
    assert sorted(query.indices) == np.nonzero(encoder.encode_query([QUERIES[0]]).to_dense().numpy()[0])[0].tolist()
    assert sparse.embed_documents([]) == []
    with pytest.raises(ValueError, match="Input 1 is of type int"):
        sparse.embed_documents(["ok", 3])


def test_qdrant_local_hybrid_search_with_dense_and_our_sparse_vectors() -> None:
    """QdrantVectorStore in local mode (":memory:", no server), RetrievalMode.HYBRID, dense + our sparse vectors."""
    pytest.importorskip("langchain_qdrant")
    pytest.importorskip("qdrant_client")
    from langchain_qdrant import QdrantVectorStore, RetrievalMode

    from sentence_transformers_tp.integrations.langchain import TokenPrependingEmbeddings
    from sentence_transformers_tp.integrations.langchain_sparse import TokenPrependingSparseEmbeddings

    store = QdrantVectorStore.from_texts(
        list(CORPUS.values()),
        embedding=TokenPrependingEmbeddings.from_model(WordHashModel()),
        sparse_embedding=TokenPrependingSparseEmbeddings(WordSparseModel()),
        retrieval_mode=RetrievalMode.HYBRID,
        location=":memory:",
        collection_name="hybrid-test",
        metadatas=[{"id": doc_id} for doc_id in CORPUS],
    )
    assert store.similarity_search(QUERIES[0], k=1)[0].metadata["id"] == "d1"
    assert store.similarity_search(QUERIES[2], k=1)[0].metadata["id"] == "d5"
    sparse_only = QdrantVectorStore(
        client=store.client,
        collection_name="hybrid-test",
        sparse_embedding=TokenPrependingSparseEmbeddings(WordSparseModel()),
        retrieval_mode=RetrievalMode.SPARSE,
    )
    hits = sparse_only.similarity_search_with_score(QUERIES[1], k=3)
    model = WordSparseModel()
    query = model.encode_query([QUERIES[1]]).to_dense()[0]
    for doc, score in hits:  # Qdrant's sparse score is the dot product of our vectors
        vector = model.encode_document([CORPUS[doc.metadata["id"]]]).to_dense()[0]
        assert score == pytest.approx(float(query @ vector), rel=1e-5)
