"""LangChain embeddings backed by a Token Prepending model.

Documents are embedded with ``SentenceTransformer.encode_document`` and queries with ``encode_query``, so a model
with separate ``query_template`` / ``document_template`` uses each where it belongs (the stock
``langchain_huggingface.HuggingFaceEmbeddings`` calls plain ``encode`` for both).

Example:
    .. code-block:: python

        from sentence_transformers_tp.integrations.langchain import TokenPrependingEmbeddings

        embeddings = TokenPrependingEmbeddings(model_name_or_path="path/to/saved-tp-model")
        vectors = embeddings.embed_documents(["A man is playing a guitar.", "A dog runs in the park."])
        query = embeddings.embed_query("Who plays music?")

Needs the ``langchain`` extra: ``pip install "sentence-transformers-tp[langchain]"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sentence_transformers_tp.inputs import check_texts
from sentence_transformers_tp.integrations import ModelSpec, missing_extra
from sentence_transformers_tp.truncation import report_truncation

try:
    from langchain_core.embeddings import Embeddings
    from langchain_core.runnables.config import run_in_executor
    from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
except ImportError as error:  # pragma: no cover - depends on the environment
    raise missing_extra("langchain", error) from error

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["TokenPrependingEmbeddings"]


class TokenPrependingEmbeddings(BaseModel, Embeddings):
    """LangChain ``Embeddings`` that embed with a Token Prepending ``SentenceTransformer``.

    The model is loaded when the object is created, from a saved TP model, a backbone + template, or a preset
    (see :func:`sentence_transformers_tp.factory.load_model`); :meth:`from_model` wraps an already loaded model.

    Args:
        model_name_or_path: A saved sentence-transformers-tp folder, or a backbone (hub id, local checkpoint,
            ``.gguf`` file, named offline backbone such as ``"smollm2"``). None: the preset's backbone, or
            ``"smollm2"``.
        template: For a backbone: template name, user template or list of templates (default ``"prompteol"`` or
            the preset's). Must be None for a saved model.
        preset: For a backbone: a preset name or YAML path with the layer settings.
        tp_start: For a backbone: first decoder layer with Token Prepending.
        tp_exit: For a backbone: first layer after ``tp_start`` without Token Prepending.
        output_layer: For a backbone: the layer whose last-token state is the embedding.
        max_seq_length: Maximum prompt length in tokens.
        device: Device of the model (default: sentence-transformers' choice).
        module_kwargs: For a backbone: further ``TokenPrependingTransformer`` arguments (``query_template``,
            ``document_template``, ``model_kwargs``...).
        batch_size: Batch size of ``encode``. Defaults to 32.
        normalize_embeddings: Return unit-length vectors. Defaults to False (the vectors of ``model.encode``).
        encode_kwargs: Further keyword arguments of ``encode_query`` / ``encode_document`` (e.g.
            ``{"show_progress_bar": True}``).
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name_or_path: str | None = None
    template: str | list[str] | None = None
    preset: str | None = None
    tp_start: int | None = None
    tp_exit: int | None = None
    output_layer: int | None = None
    max_seq_length: int | None = None
    device: str | None = None
    module_kwargs: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(default=32, gt=0)
    normalize_embeddings: bool = False
    encode_kwargs: dict[str, Any] = Field(default_factory=dict)

    _client: SentenceTransformer = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        client = kwargs.pop("_client", None)  # set by from_model
        super().__init__(**kwargs)
        self._client = client if client is not None else self.model_spec().load()

    @classmethod
    def from_model(cls, model: SentenceTransformer, **kwargs: Any) -> TokenPrependingEmbeddings:
        """Wrap an already loaded TP model (nothing is loaded).

        Args:
            model: The ``SentenceTransformer``.
            **kwargs: Other fields (``batch_size``, ``normalize_embeddings``, ``encode_kwargs``...).

        Returns:
            The embeddings.
        """
        return cls(_client=model, **kwargs)

    def model_spec(self) -> ModelSpec:
        """The :class:`~sentence_transformers_tp.integrations.ModelSpec` described by the fields."""
        return ModelSpec.from_fields(self)

    @property
    def client(self) -> SentenceTransformer:
        """The wrapped ``SentenceTransformer``."""
        return self._client

    def _encode_kwargs(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "normalize_embeddings": self.normalize_embeddings,
            "show_progress_bar": False,
            **self.encode_kwargs,
            "convert_to_numpy": True,
            "convert_to_tensor": False,
        }

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents with ``encode_document`` (the model's document template).

        Args:
            texts: The documents.

        Returns:
            One vector per document.
        """
        texts = list(texts)
        if not texts:
            return []
        check_texts(texts)
        with report_truncation():
            return self._client.encode_document(texts, **self._encode_kwargs()).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed a query with ``encode_query`` (the model's query template).

        Args:
            text: The query.

        Returns:
            The vector.
        """
        return self._client.encode_query([text], **self._encode_kwargs())[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents in a worker thread, without blocking the event loop.

        Args:
            texts: The documents.

        Returns:
            One vector per document.
        """
        return await run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Embed a query in a worker thread, without blocking the event loop.

        Args:
            text: The query.

        Returns:
            The vector.
        """
        return await run_in_executor(None, self.embed_query, text)
