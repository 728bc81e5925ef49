"""LangChain embeddings backed by a Token Prepending model.

Documents are embedded with ``SentenceTransformer.encode_document`` and queries with ``encode_query``, so a model
with separate ``query_template`` / ``document_template`` uses each where it belongs (the stock
``langchain_huggingface.HuggingFaceEmbeddings`` calls plain ``encode`` for both).

Example:
    .. code-block:: python

        from sentence_transformers_tp.integrations.langchain import TokenPrependingEmbeddings

        embeddings = TokenPrependingEmbeddings(model_name="path/to/saved-tp-model")  # or a hub id
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


#: ``model_kwargs`` keys (``SentenceTransformer`` arguments, as ``HuggingFaceEmbeddings`` passes them) that apply here.
LOADER_KWARGS = ("model_kwargs", "processor_kwargs", "config_kwargs")
MODEL_KWARGS = ("device", "revision", "token", "trust_remote_code", *LOADER_KWARGS)


class TokenPrependingEmbeddings(BaseModel, Embeddings):
    """LangChain ``Embeddings`` that embed with a Token Prepending ``SentenceTransformer``.

    The model is loaded when the object is created, from a saved TP model (a local folder or a hub id), a backbone
    + template, or a preset (see :func:`sentence_transformers_tp.factory.load_model`); :meth:`from_model` wraps an
    already loaded model. The arguments of ``langchain_huggingface.HuggingFaceEmbeddings`` that make sense for a TP
    model are accepted with the same meaning (``model_name`` / ``model``, ``cache_folder``, ``model_kwargs``,
    ``encode_kwargs``, ``query_encode_kwargs``, ``show_progress``); the others are refused with a one-line error.

    Args:
        model_name_or_path: A saved sentence-transformers-tp model (local folder or hub id), or a backbone (hub id,
            local checkpoint, ``.gguf`` file, named offline backbone such as ``"smollm2"``). None: the preset's
            backbone, or ``"smollm2"``. ``model_name=`` / ``model=`` (``HuggingFaceEmbeddings``' spellings) are the
            same argument.
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
        cache_folder: HF cache folder for hub ids (as ``HuggingFaceEmbeddings``; default: huggingface_hub's).
        model_kwargs: ``SentenceTransformer`` arguments, as ``HuggingFaceEmbeddings`` takes them: ``device``,
            ``revision``, ``token``, ``trust_remote_code`` (code from outside the installed packages; a TP model
            never needs it) and the loader dicts ``model_kwargs`` (e.g. ``{"dtype": torch.bfloat16}``),
            ``processor_kwargs``, ``config_kwargs``. Other keys are refused.
        batch_size: Batch size of ``encode``. Defaults to 32.
        normalize_embeddings: Return unit-length vectors. Defaults to False (the vectors of ``model.encode``).
        encode_kwargs: Further keyword arguments of ``encode_document`` (and of ``encode_query`` unless
            ``query_encode_kwargs`` is given), e.g. ``{"normalize_embeddings": True}``; they win over
            ``batch_size`` / ``normalize_embeddings``.
        query_encode_kwargs: Keyword arguments of ``encode_query`` used instead of ``encode_kwargs`` when not empty
            (as ``HuggingFaceEmbeddings``).
        show_progress: Show a progress bar while encoding. Defaults to False.
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
    cache_folder: str | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(default=32, gt=0)
    normalize_embeddings: bool = False
    encode_kwargs: dict[str, Any] = Field(default_factory=dict)
    query_encode_kwargs: dict[str, Any] = Field(default_factory=dict)
    show_progress: bool = False

    _client: SentenceTransformer = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        client = kwargs.pop("_client", None)  # set by from_model
        for alias in ("model_name", "model"):
            if alias in kwargs:
                value = kwargs.pop(alias)
                given = kwargs.get("model_name_or_path")
                if given is not None and str(given) != str(value):
                    raise ValueError(
                        f"{alias}={value!r} and model_name_or_path={given!r} name two models; give one of them."
                    )
                kwargs["model_name_or_path"] = value
        if kwargs.pop("multi_process", False):
            raise ValueError(
                "multi_process=True is not supported by TokenPrependingEmbeddings; encode with a pool of the "
                "SentenceTransformer instead (see 'Multi-process encoding' in docs/integrations.md)."
            )
        super().__init__(**kwargs)
        unknown = sorted(set(self.model_kwargs) - set(MODEL_KWARGS))
        if unknown:
            raise ValueError(
                f"model_kwargs {unknown} are not supported by TokenPrependingEmbeddings (it takes "
                f"{', '.join(MODEL_KWARGS)}); set templates with module_kwargs={{'query_template': ...}}."
            )
        device = self.model_kwargs.get("device")
        if device is not None and self.device is not None and str(device) != str(self.device):
            raise ValueError(f"device={self.device!r} and model_kwargs['device']={device!r} disagree; give one.")
        if "model_kwargs" in self.model_kwargs and "model_kwargs" in self.module_kwargs:
            raise ValueError("model_kwargs['model_kwargs'] and module_kwargs['model_kwargs'] both given; give one.")
        self._client = client if client is not None else self.model_spec().load()

    @property
    def model_name(self) -> str | None:
        """The model spec (``HuggingFaceEmbeddings``' name for ``model_name_or_path``)."""
        return self.model_name_or_path

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
        options = self.model_kwargs
        loaders = {key: options[key] for key in LOADER_KWARGS if key in options}
        return ModelSpec.from_fields(
            self,
            device=self.device if self.device is not None else options.get("device"),
            module_kwargs={**self.module_kwargs, **loaders},
            revision=options.get("revision"),
            token=options.get("token"),
            trust_remote_code=bool(options.get("trust_remote_code", False)),
        )

    @property
    def client(self) -> SentenceTransformer:
        """The wrapped ``SentenceTransformer``."""
        return self._client

    def _encode_kwargs(self, query: bool = False) -> dict[str, Any]:
        extra = self.query_encode_kwargs if query and self.query_encode_kwargs else self.encode_kwargs
        return {
            "batch_size": self.batch_size,
            "normalize_embeddings": self.normalize_embeddings,
            "show_progress_bar": self.show_progress,
            **extra,
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
        return self._client.encode_query([text], **self._encode_kwargs(query=True))[0].tolist()

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
