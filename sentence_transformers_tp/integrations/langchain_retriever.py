"""A LangChain ``BaseRetriever`` over the hybrid retriever (dense TP model, optional sparse model, BM25, fused).

Each hit is a ``Document`` with the document id (``Document.id`` and ``metadata["id"]``) and the fused score
(``metadata["score"]``). For Qdrant hybrid search, see
:mod:`sentence_transformers_tp.integrations.langchain_sparse`.

Example:
    .. code-block:: python

        from sentence_transformers_tp.hybrid import HybridRetriever
        from sentence_transformers_tp.integrations.langchain_retriever import TokenPrependingHybridRetriever

        hybrid = HybridRetriever.from_model(model).index({"d1": "A man plays a guitar.", "d2": "A dog runs."})
        retriever = TokenPrependingHybridRetriever(retriever=hybrid, k=4)
        docs = retriever.invoke("Who plays music?")

Needs the ``langchain`` and ``hybrid`` extras.
"""

from __future__ import annotations

from typing import Any

from sentence_transformers_tp.hybrid.retriever import HybridRetriever
from sentence_transformers_tp.integrations import missing_extra

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict, Field
except ImportError as error:  # pragma: no cover - depends on the environment
    raise missing_extra("langchain", error) from error

__all__ = ["TokenPrependingHybridRetriever"]


class TokenPrependingHybridRetriever(BaseRetriever):
    """A LangChain retriever backed by an indexed :class:`~sentence_transformers_tp.hybrid.retriever.HybridRetriever`.

    Args:
        retriever: The indexed hybrid retriever.
        k: Documents returned per query. Defaults to 4 (LangChain's usual default).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: HybridRetriever
    k: int = Field(default=4, gt=0)

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        model: Any = None,
        *,
        ids: list[str] | None = None,
        sparse_model: Any = None,
        path: str | None = None,
        k: int = 4,
        **kwargs: Any,
    ) -> TokenPrependingHybridRetriever:
        """Index texts and wrap the retriever (fusion from the backbone preset, see ``HybridRetriever.from_model``).

        Args:
            texts: Document texts.
            model: The dense TP model (None: no dense channel).
            ids: Document ids (default: positions).
            sparse_model: A ``SparseEncoder`` for the sparse channel.
            path: Index folder (saved, or reused for the same corpus).
            k: Documents per query.
            **kwargs: Further ``HybridRetriever`` arguments.

        Returns:
            The LangChain retriever.
        """
        hybrid = HybridRetriever.from_model(model, sparse_model, **kwargs)
        return cls(retriever=hybrid.index(list(texts), ids=ids, path=path), k=k)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.retriever.search([query], k=self.k)[0]
        positions = {doc_id: i for i, doc_id in enumerate(self.retriever.ids)} if hits else {}
        return [
            Document(
                id=doc_id,
                page_content=self.retriever.texts[positions[doc_id]],
                metadata={"id": doc_id, "score": score},
            )
            for doc_id, score in hits
        ]
