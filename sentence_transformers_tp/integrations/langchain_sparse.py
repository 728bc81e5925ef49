"""``langchain_qdrant`` sparse embeddings from a sentence-transformers ``SparseEncoder`` (Qdrant hybrid search).

:class:`TokenPrependingSparseEmbeddings` turns a ``SparseEncoder`` (e.g. the PromptReps sparse channel of a TP
backbone) into ``langchain_qdrant.SparseEmbeddings``: with a dense ``TokenPrependingEmbeddings`` it gives
``QdrantVectorStore`` hybrid search (``retrieval_mode=RetrievalMode.HYBRID``), in local mode
(``location=":memory:"`` or ``path=...``) or on a Qdrant server, the path for corpora that outgrow one machine.

Example:
    .. code-block:: python

        from langchain_qdrant import QdrantVectorStore, RetrievalMode

        from sentence_transformers_tp.integrations.langchain import TokenPrependingEmbeddings
        from sentence_transformers_tp.integrations.langchain_sparse import TokenPrependingSparseEmbeddings

        store = QdrantVectorStore.from_texts(
            texts,
            embedding=TokenPrependingEmbeddings.from_model(model),
            sparse_embedding=TokenPrependingSparseEmbeddings(sparse_model),
            retrieval_mode=RetrievalMode.HYBRID,
            location=":memory:",
            collection_name="docs",
        )
        docs = store.similarity_search("Who plays music?", k=4)

Needs ``langchain-qdrant`` (``pip install langchain-qdrant``).
"""

from __future__ import annotations

from typing import Any

from sentence_transformers_tp.hybrid.encoders import encode_sparse
from sentence_transformers_tp.inputs import check_texts

try:
    from langchain_qdrant.sparse_embeddings import SparseEmbeddings, SparseVector
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"TokenPrependingSparseEmbeddings needs langchain-qdrant ({error}). Install it with: pip install langchain-qdrant",
        name=getattr(error, "name", None),
    ) from error

__all__ = ["TokenPrependingSparseEmbeddings"]


class TokenPrependingSparseEmbeddings(SparseEmbeddings):
    """``langchain_qdrant.SparseEmbeddings`` from a sentence-transformers ``SparseEncoder``.

    Documents go through ``encode_document`` and queries through ``encode_query``; each vector becomes a
    ``SparseVector`` (its non-zero dimensions and weights), which Qdrant scores by dot product, as the
    ``SparseEncoder`` does.

    Args:
        model: The ``SparseEncoder`` (or any model whose ``encode_query`` / ``encode_document`` return sparse
            vectors).
        batch_size: Encode batch size. Defaults to 32.
        encode_kwargs: Further encode keyword arguments.
    """

    def __init__(self, model: Any, *, batch_size: int = 32, encode_kwargs: dict[str, Any] | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.encode_kwargs = dict(encode_kwargs or {})

    def _vectors(self, texts: list[str], kind: str) -> list[SparseVector]:
        if not texts:
            return []
        check_texts(texts)
        matrix = encode_sparse(self.model, texts, kind, batch_size=self.batch_size, encode_kwargs=self.encode_kwargs)
        vectors = []
        for row in range(matrix.shape[0]):
            start, end = matrix.indptr[row], matrix.indptr[row + 1]
            indices = matrix.indices[start:end].tolist()
            vectors.append(SparseVector(indices=indices, values=matrix.data[start:end].astype(float).tolist()))
        return vectors

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        """Sparse vectors of documents (``encode_document``).

        Args:
            texts: The documents.

        Returns:
            One ``SparseVector`` per document.
        """
        return self._vectors(list(texts), "document")

    def embed_query(self, text: str) -> SparseVector:
        """The sparse vector of a query (``encode_query``).

        Args:
            text: The query.

        Returns:
            The ``SparseVector``.
        """
        return self._vectors([text], "query")[0]
