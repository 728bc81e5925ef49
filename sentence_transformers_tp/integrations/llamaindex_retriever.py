"""A LlamaIndex ``BaseRetriever`` over the hybrid retriever (dense TP model, optional sparse model, BM25, fused).

Each hit is a ``NodeWithScore`` whose ``TextNode`` has the document id as ``id_`` and the document text; the score is
the fused score. For Qdrant hybrid search, see :mod:`sentence_transformers_tp.integrations.llamaindex_sparse`.

Example:
    .. code-block:: python

        from sentence_transformers_tp.hybrid import HybridRetriever
        from sentence_transformers_tp.integrations.llamaindex_retriever import TokenPrependingHybridRetriever

        hybrid = HybridRetriever.from_model(model).index({"d1": "A man plays a guitar.", "d2": "A dog runs."})
        retriever = TokenPrependingHybridRetriever(hybrid, similarity_top_k=4)
        nodes = retriever.retrieve("Who plays music?")

Needs the ``llamaindex`` and ``hybrid`` extras.
"""

from __future__ import annotations

from typing import Any

from sentence_transformers_tp.hybrid.retriever import HybridRetriever
from sentence_transformers_tp.integrations import missing_extra

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as error:  # pragma: no cover - depends on the environment
    raise missing_extra("llamaindex", error) from error

__all__ = ["TokenPrependingHybridRetriever"]


class TokenPrependingHybridRetriever(BaseRetriever):
    """A LlamaIndex retriever backed by an indexed :class:`~sentence_transformers_tp.hybrid.retriever.HybridRetriever`.

    Args:
        retriever: The indexed hybrid retriever.
        similarity_top_k: Nodes returned per query. Defaults to 2 (LlamaIndex's usual default).
        **kwargs: Passed to ``BaseRetriever`` (``callback_manager``, ``verbose``...).
    """

    def __init__(self, retriever: HybridRetriever, similarity_top_k: int = 2, **kwargs: Any) -> None:
        if similarity_top_k < 1:
            raise ValueError(f"similarity_top_k must be positive, got {similarity_top_k}")
        super().__init__(**kwargs)
        self.retriever = retriever
        self.similarity_top_k = similarity_top_k

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        model: Any = None,
        *,
        ids: list[str] | None = None,
        sparse_model: Any = None,
        path: str | None = None,
        similarity_top_k: int = 2,
        **kwargs: Any,
    ) -> TokenPrependingHybridRetriever:
        """Index texts and wrap the retriever (fusion from the backbone preset, see ``HybridRetriever.from_model``).

        Args:
            texts: Document texts.
            model: The dense TP model (None: no dense channel).
            ids: Document ids (default: positions).
            sparse_model: A ``SparseEncoder`` for the sparse channel.
            path: Index folder (saved, or reused for the same corpus).
            similarity_top_k: Nodes per query.
            **kwargs: Further ``HybridRetriever`` arguments.

        Returns:
            The LlamaIndex retriever.
        """
        hybrid = HybridRetriever.from_model(model, sparse_model, **kwargs)
        return cls(hybrid.index(list(texts), ids=ids, path=path), similarity_top_k=similarity_top_k)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.retriever.search([query_bundle.query_str], k=self.similarity_top_k)[0]
        positions = {doc_id: i for i, doc_id in enumerate(self.retriever.ids)} if hits else {}
        return [
            NodeWithScore(node=TextNode(id_=doc_id, text=self.retriever.texts[positions[doc_id]]), score=score)
            for doc_id, score in hits
        ]
