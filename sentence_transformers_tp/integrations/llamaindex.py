"""LlamaIndex embedding model backed by a Token Prepending model.

Texts (nodes) are embedded with ``SentenceTransformer.encode_document`` and queries with ``encode_query``, so a
model with separate ``query_template`` / ``document_template`` uses each where it belongs. Unlike the stock
``llama_index.embeddings.huggingface.HuggingFaceEmbedding``, no sentence-transformers prompt is involved (that class
overrides the ``query`` / ``text`` prompts with empty strings and calls plain ``encode``).

Example:
    .. code-block:: python

        from llama_index.core import Document, VectorStoreIndex

        from sentence_transformers_tp.integrations.llamaindex import TokenPrependingEmbedding

        embed_model = TokenPrependingEmbedding(model_name="path/to/saved-tp-model")  # or a hub id
        index = VectorStoreIndex.from_documents([Document(text="...")], embed_model=embed_model)
        nodes = index.as_retriever(similarity_top_k=1).retrieve("a question")

Needs the ``llamaindex`` extra: ``pip install "sentence-transformers-tp[llamaindex]"``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from sentence_transformers_tp.inputs import check_texts
from sentence_transformers_tp.integrations import ModelSpec, missing_extra
from sentence_transformers_tp.truncation import report_truncation

try:
    from llama_index.core.base.embeddings.base import Embedding
    from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.embeddings import BaseEmbedding
except ImportError as error:  # pragma: no cover - depends on the environment
    raise missing_extra("llamaindex", error) from error

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["TokenPrependingEmbedding"]

#: Loader dicts that ``HuggingFaceEmbedding`` passes on to ``SentenceTransformer`` (through ``**model_kwargs``).
LOADER_KWARGS = ("model_kwargs", "processor_kwargs", "config_kwargs")


def _one_value(name: str, value: Any, alias: str, kwargs: dict[str, Any]) -> Any:
    """``value``, or ``kwargs[alias]`` (popped) when only the alias is given; both given and different: an error."""
    if alias not in kwargs:
        return value
    other = kwargs.pop(alias)
    if value is not None and other is not None and str(value) != str(other):
        raise ValueError(f"{name}={value!r} and {alias}={other!r} disagree; give one of them.")
    return other if value is None else value


class TokenPrependingEmbedding(BaseEmbedding):
    """LlamaIndex ``BaseEmbedding`` that embeds with a Token Prepending ``SentenceTransformer``.

    The model is loaded when the object is created, from a saved TP model (a local folder or a hub id), a backbone
    + template, or a preset (see :func:`sentence_transformers_tp.factory.load_model`); :meth:`from_model` wraps an
    already loaded model. The arguments of ``llama_index.embeddings.huggingface.HuggingFaceEmbedding`` that make
    sense for a TP model are accepted with the same meaning (``model_name``, ``max_length``, ``query_instruction``,
    ``text_instruction``, ``normalize``, ``embed_batch_size``, ``cache_folder``, ``trust_remote_code``, ``device``,
    ``show_progress_bar``, and the ``SentenceTransformer`` arguments ``revision``, ``token``, ``model_kwargs``,
    ``processor_kwargs``, ``config_kwargs``); ``parallel_process`` / ``target_devices`` are refused.

    Args:
        model_name_or_path: A saved sentence-transformers-tp model (local folder or hub id), or a backbone (hub id,
            local checkpoint, ``.gguf`` file, named offline backbone such as ``"smollm2"``). None: the preset's
            backbone, or ``"smollm2"``. ``model_name=`` (``HuggingFaceEmbedding``'s spelling) is the same argument.
        template: For a backbone: template name, user template or list of templates (default ``"prompteol"`` or
            the preset's). Must be None for a saved model.
        preset: For a backbone: a preset name or YAML path with the layer settings.
        tp_start: For a backbone: first decoder layer with Token Prepending.
        tp_exit: For a backbone: first layer after ``tp_start`` without Token Prepending.
        output_layer: For a backbone: the layer whose last-token state is the embedding.
        max_seq_length: Maximum prompt length in tokens; ``max_length=`` is the same argument.
        device: Device of the model (default: sentence-transformers' choice).
        module_kwargs: For a backbone: further ``TokenPrependingTransformer`` arguments (``query_template``,
            ``document_template``, ``model_kwargs``...).
        normalize: Return unit-length vectors. Defaults to True (as LlamaIndex's ``HuggingFaceEmbedding``).
        query_instruction: Text put in front of the query template (as ``HuggingFaceEmbedding``'s query prompt);
            one with a ``{sentence}`` slot is a whole template instead.
        text_instruction: The same for texts (nodes).
        cache_folder: HF cache folder for hub ids (default: huggingface_hub's, not LlamaIndex's cache folder).
        trust_remote_code: Allow code from outside the installed packages (the backbone's custom modeling code); a
            TP model never needs it.
        show_progress_bar: Show a progress bar while encoding. Defaults to False.
        encode_kwargs: Further keyword arguments of ``encode_query`` / ``encode_document``.
        embed_batch_size: Texts per ``encode`` call (LlamaIndex batches nodes by this size). Defaults to 32.
        callback_manager: LlamaIndex callback manager.
        num_workers: LlamaIndex's number of workers for async batch embedding.
        revision: Hub revision (branch, tag or commit) of a hub id.
        token: Hub token (not stored in the fields).
        model_kwargs: Keyword arguments of ``AutoModel.from_pretrained`` (e.g. ``{"dtype": torch.bfloat16}``).
        processor_kwargs: Keyword arguments of the tokenizer's ``from_pretrained``.
        config_kwargs: Keyword arguments of ``AutoConfig.from_pretrained``.

    The reported ``model_name`` is the model spec (``model_name_or_path``, else the preset, else ``"smollm2"``); for
    :meth:`from_model` it may be given freely.
    """

    model_config = ConfigDict(extra="forbid")

    model_name_or_path: str | None = Field(default=None, description="Saved TP model or backbone.")
    template: str | list[str] | None = Field(default=None, description="Template(s) for a backbone.")
    preset: str | None = Field(default=None, description="Preset name or YAML path for a backbone.")
    tp_start: int | None = Field(default=None, description="First decoder layer with Token Prepending.")
    tp_exit: int | None = Field(default=None, description="First layer after tp_start without Token Prepending.")
    output_layer: int | None = Field(default=None, description="Layer whose last-token state is the embedding.")
    max_seq_length: int | None = Field(default=None, description="Maximum prompt length in tokens.")
    device: str | None = Field(default=None, description="Device of the model.")
    module_kwargs: dict[str, Any] = Field(default_factory=dict, description="Further module arguments.")
    normalize: bool = Field(default=True, description="Return unit-length vectors.")
    query_instruction: str | None = Field(default=None, description="Instruction in front of the query template.")
    text_instruction: str | None = Field(default=None, description="Instruction in front of the text template.")
    cache_folder: str | None = Field(default=None, description="HF cache folder for hub ids.")
    trust_remote_code: bool = Field(default=False, description="Allow code from outside the installed packages.")
    revision: str | None = Field(default=None, description="Hub revision of a hub id.")
    show_progress_bar: bool = Field(default=False, description="Show a progress bar.")
    encode_kwargs: dict[str, Any] = Field(default_factory=dict, description="Further encode arguments.")

    _client: SentenceTransformer = PrivateAttr()

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        embed_batch_size: int = 32,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        client = kwargs.pop("_client", None)  # set by from_model
        token = kwargs.pop("token", None)
        if kwargs.pop("parallel_process", False) or kwargs.pop("target_devices", None) is not None:
            raise ValueError(
                "parallel_process / target_devices are not supported by TokenPrependingEmbedding; encode with a pool "
                "of the SentenceTransformer instead (see 'Multi-process encoding' in docs/integrations.md)."
            )
        loaders = {key: kwargs.pop(key) for key in LOADER_KWARGS if kwargs.get(key) is not None}
        if "model_kwargs" in loaders and "model_kwargs" in kwargs.get("module_kwargs", {}):
            raise ValueError("model_kwargs and module_kwargs['model_kwargs'] both given; give one.")
        if client is None:
            model_name_or_path = _one_value("model_name_or_path", model_name_or_path, "model_name", kwargs)
            kwargs["model_name"] = str(model_name_or_path or kwargs.get("preset") or "smollm2")
        kwargs["max_seq_length"] = _one_value("max_seq_length", kwargs.get("max_seq_length"), "max_length", kwargs)
        if loaders:
            kwargs["module_kwargs"] = {**kwargs.get("module_kwargs", {}), **loaders}
        super().__init__(
            model_name_or_path=model_name_or_path,
            embed_batch_size=embed_batch_size,
            callback_manager=callback_manager,
            **kwargs,
        )
        self._client = client if client is not None else self.model_spec(token).load()

    @classmethod
    def class_name(cls) -> str:
        """The class name LlamaIndex records in serialized components."""
        return "TokenPrependingEmbedding"

    @classmethod
    def from_model(cls, model: SentenceTransformer, **kwargs: Any) -> TokenPrependingEmbedding:
        """Wrap an already loaded TP model (nothing is loaded).

        Args:
            model: The ``SentenceTransformer``.
            **kwargs: Other fields (``normalize``, ``embed_batch_size``, ``model_name``...).

        Returns:
            The embedding model.
        """
        kwargs.setdefault("model_name", str(getattr(model[0], "backbone_name", type(model[0]).__name__)))
        return cls(_client=model, **kwargs)

    def model_spec(self, token: bool | str | None = None) -> ModelSpec:
        """The :class:`~sentence_transformers_tp.integrations.ModelSpec` described by the fields.

        Args:
            token: Hub token (not a field, so that it is never serialized).

        Returns:
            The spec.
        """
        return ModelSpec.from_fields(self, token=token)

    @property
    def client(self) -> SentenceTransformer:
        """The wrapped ``SentenceTransformer``."""
        return self._client

    def _encode_kwargs(self, prompt: str | None) -> dict[str, Any]:
        return {
            "batch_size": self.embed_batch_size,
            "normalize_embeddings": self.normalize,
            "show_progress_bar": self.show_progress_bar,
            **({"prompt": prompt} if prompt else {}),
            **self.encode_kwargs,
            "convert_to_numpy": True,
            "convert_to_tensor": False,
        }

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._client.encode_query([query], **self._encode_kwargs(self.query_instruction))[0].tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        texts = list(texts)
        if not texts:
            return []
        check_texts(texts)
        with report_truncation():
            return self._client.encode_document(texts, **self._encode_kwargs(self.text_instruction)).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
