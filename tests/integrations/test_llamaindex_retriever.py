"""LlamaIndex: the hybrid BaseRetriever and the BaseSparseEmbedding adapter (Qdrant local-mode hybrid search)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.hybrid.helpers import CORPUS, QUERIES, WordHashModel, WordSparseModel, build_tiny_sparse_encoder

pytest.importorskip("llama_index.core")
pytest.importorskip("bm25s")

from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402
from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding  # noqa: E402

from sentence_transformers_tp.hybrid import HybridRetriever  # noqa: E402
from sentence_transformers_tp.integrations.llamaindex_retriever import TokenPrependingHybridRetriever  # noqa: E402
from sentence_transformers_tp.integrations.llamaindex_sparse import TokenPrependingSparseEmbedding  # noqa: E402


def test_retriever_returns_nodes_with_ids_and_fused_scores() -> None:
    """retrieve() returns similarity_top_k nodes (id, text, fused score) in the hybrid retriever's order."""
    hybrid = HybridRetriever(WordHashModel()).index(CORPUS)
    retriever = TokenPrependingHybridRetriever(hybrid, similarity_top_k=3)
    assert isinstance(retriever, BaseRetriever)
    nodes = retriever.retrieve(QUERIES[0])
    assert [(n.node.node_id, n.score) for n in nodes] == hybrid.search(QUERIES[0], k=3)[0]
    assert nodes[0].node.get_content() == CORPUS["d1"]


@pytest.mark.asyncio
async def test_async_retrieve_matches() -> None:
    """aretrieve() gives the same nodes as retrieve()."""
    retriever = TokenPrependingHybridRetriever.from_texts(list(CORPUS.values()), WordHashModel(), ids=list(CORPUS))
    got = await retriever.aretrieve(QUERIES[2])
    assert [n.node.node_id for n in got] == [n.node.node_id for n in retriever.retrieve(QUERIES[2])]
    assert got[0].node.node_id == "d5"


def test_bad_top_k_is_an_error() -> None:
    """similarity_top_k below 1 is refused."""
    with pytest.raises(ValueError, match="similarity_top_k"):
        TokenPrependingHybridRetriever(HybridRetriever(WordHashModel()), similarity_top_k=0)


def test_sparse_embedding_equals_the_encoder_vectors(tmp_path) -> None:
    """The BaseSparseEmbedding adapter returns {dimension: weight} of encode_document / encode_query."""
    encoder = build_tiny_sparse_encoder(tmp_path / "splade", [*CORPUS.values(), *QUERIES])
    sparse = TokenPrependingSparseEmbedding.from_model(encoder, embed_batch_size=2)
    assert isinstance(sparse, BaseSparseEmbedding)
    texts = list(CORPUS.values())
    vectors = sparse.get_text_embedding_batch(texts)
    dense = encoder.encode_document(texts).to_dense().numpy()
    for row, vector in zip(dense, vectors):
        rebuilt = np.zeros_like(row)
        rebuilt[list(vector)] = list(vector.values())
        np.testing.assert_allclose(rebuilt, row, rtol=1e-6)
    query = sparse.get_query_embedding(QUERIES[0])
    expected = encoder.encode_query([QUERIES[0]]).to_dense().numpy()[0]
    assert sorted(query) == np.nonzero(expected)[0].tolist()
    indices, values = sparse.qdrant_query_fn([QUERIES[0]])
    assert dict(zip(indices[0], values[0])) == query


def test_qdrant_local_hybrid_search_with_dense_and_our_sparse_vectors() -> None:
    """qdrant-client in local mode (":memory:"): dense + our sparse vectors, prefetch both, fuse with RRF."""
    pytest.importorskip("qdrant_client")
    from qdrant_client import QdrantClient, models

    from sentence_transformers_tp.hybrid.encoders import encode_dense

    dense = WordHashModel()
    sparse = TokenPrependingSparseEmbedding.from_model(WordSparseModel())
    texts, ids = list(CORPUS.values()), list(CORPUS)
    client = QdrantClient(":memory:")
    vectors = encode_dense(dense, texts, "document").tolist()
    client.create_collection(
        "docs",
        vectors_config={"dense": models.VectorParams(size=len(vectors[0]), distance=models.Distance.COSINE)},
        sparse_vectors_config={"sparse": models.SparseVectorParams()},
    )
    doc_indices, doc_values = sparse.qdrant_doc_fn(texts)
    client.upsert(
        "docs",
        [
            models.PointStruct(
                id=i,
                vector={
                    "dense": vectors[i],
                    "sparse": models.SparseVector(indices=doc_indices[i], values=doc_values[i]),
                },
                payload={"doc_id": ids[i]},
            )
            for i in range(len(texts))
        ],
    )

    def hybrid_top(query: str) -> str:
        q_indices, q_values = sparse.qdrant_query_fn([query])
        response = client.query_points(
            "docs",
            prefetch=[
                models.Prefetch(query=encode_dense(dense, [query], "query")[0].tolist(), using="dense", limit=5),
                models.Prefetch(
                    query=models.SparseVector(indices=q_indices[0], values=q_values[0]), using="sparse", limit=5
                ),
            ],
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            limit=2,
            with_payload=True,
        )
        return response.points[0].payload["doc_id"]

    assert hybrid_top(QUERIES[0]) == "d1"
    assert hybrid_top(QUERIES[1]) == "d3"
