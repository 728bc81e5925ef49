"""A LlamaIndex ``BaseSparseEmbedding`` from a sentence-transformers ``SparseEncoder`` (Qdrant hybrid search).

:class:`TokenPrependingSparseEmbedding` returns ``{dimension: weight}`` dicts (LlamaIndex's ``SparseEmbedding``) of
``encode_query`` / ``encode_document``; with ``llama-index-vector-stores-qdrant`` they are Qdrant sparse vectors
(``QdrantVectorStore(..., enable_hybrid=True)`` takes ``sparse_doc_fn`` / ``sparse_query_fn`` returning
``(indices, values)`` lists, which :meth:`TokenPrependingSparseEmbedding.qdrant_doc_fn` /
:meth:`~TokenPrependingSparseEmbedding.qdrant_query_fn` give).

Example:
    .. code-block:: python

        from sentence_transformers_tp.integrations.llamaindex_sparse import TokenPrependingSparseEmbedding

        sparse = TokenPrependingSparseEmbedding.from_model(sparse_model)
        weights = sparse.get_query_embedding("Who plays music?")   # {token id: weight}

Needs the ``llamaindex`` extra.
"""

from __future__ import annotations

from typing import Any

from sentence_transformers_tp.hybrid.encoders import encode_sparse
from sentence_transformers_tp.inputs import check_texts
from sentence_transformers_tp.integrations import missing_extra

try:
    from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding, SparseEmbedding
    from pydantic import Field, PrivateAttr
except ImportError as error:  # pragma: no cover - depends on the environment
    raise missing_extra("llamaindex", error) from error

__all__ = ["TokenPrependingSparseEmbedding"]


class TokenPrependingSparseEmbedding(BaseSparseEmbedding):
    """LlamaIndex sparse embeddings from a sentence-transformers ``SparseEncoder``.

    Build it with :meth:`from_model`. Texts go through ``encode_document``, queries through ``encode_query``.

    Args:
        model_name: A name for the model (LlamaIndex metadata).
        embed_batch_size: Encode batch size. Defaults to 32.
        encode_kwargs: Further encode keyword arguments.
    """

    encode_kwargs: dict[str, Any] = Field(default_factory=dict)

    _model: Any = PrivateAttr()

    @classmethod
    def from_model(cls, model: Any, **kwargs: Any) -> TokenPrependingSparseEmbedding:
        """Wrap a loaded ``SparseEncoder``.

        Args:
            model: The ``SparseEncoder`` (or any model whose ``encode_query`` / ``encode_document`` return sparse
                vectors).
            **kwargs: Other fields (``model_name``, ``embed_batch_size``, ``encode_kwargs``).

        Returns:
            The sparse embedding.
        """
        card = getattr(model, "model_card_data", None)
        kwargs.setdefault("model_name", getattr(card, "model_name", None) or type(model).__name__)
        embedding = cls(**kwargs)
        embedding._model = model
        return embedding

    @classmethod
    def class_name(cls) -> str:
        return "TokenPrependingSparseEmbedding"

    def _encode(self, texts: list[str], kind: str) -> list[SparseEmbedding]:
        if not texts:
            return []
        check_texts(texts)
        matrix = encode_sparse(
            self._model, texts, kind, batch_size=self.embed_batch_size, encode_kwargs=self.encode_kwargs
        )
        out = []
        for row in range(matrix.shape[0]):
            start, end = matrix.indptr[row], matrix.indptr[row + 1]
            out.append(dict(zip(matrix.indices[start:end].tolist(), matrix.data[start:end].astype(float).tolist())))
        return out

    def _get_query_embedding(self, query: str) -> SparseEmbedding:
        return self._encode([query], "query")[0]

    async def _aget_query_embedding(self, query: str) -> SparseEmbedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> SparseEmbedding:
        return self._encode([text], "document")[0]

    async def _aget_text_embedding(self, text: str) -> SparseEmbedding:
        return self._get_text_embedding(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        return self._encode(list(texts), "document")

    def qdrant_doc_fn(self, texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        """Qdrant's ``sparse_doc_fn``: ``(indices, values)`` per document.

        Args:
            texts: The documents.

        Returns:
            Index lists and value lists, one per document.
        """
        vectors = self._get_text_embeddings(list(texts))
        return [list(v) for v in vectors], [list(v.values()) for v in vectors]

    def qdrant_query_fn(self, texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        """Qdrant's ``sparse_query_fn``: ``(indices, values)`` per query.

        Args:
            texts: The queries.

        Returns:
            Index lists and value lists, one per query.
        """
        vectors = self._encode(list(texts), "query")
        return [list(v) for v in vectors], [list(v.values()) for v in vectors]
