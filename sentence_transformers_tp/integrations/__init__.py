"""Integrations of Token Prepending models with LangChain, LlamaIndex and Ray.

Each framework lives in its own submodule, which imports the framework when the submodule itself is imported:

* :mod:`sentence_transformers_tp.integrations.langchain`: ``TokenPrependingEmbeddings``, a LangChain
  ``Embeddings`` (extra ``langchain``).
* :mod:`sentence_transformers_tp.integrations.llamaindex`: ``TokenPrependingEmbedding``, a LlamaIndex
  ``BaseEmbedding`` (extra ``llamaindex``).
* :mod:`sentence_transformers_tp.integrations.ray`: ``embed_dataset`` and the ``TokenPrependingEncoder`` actor class
  for embedding a Ray Dataset (extra ``ray``).

This package itself imports nothing heavy (no torch, sentence-transformers or framework): only the standard library.
:class:`ModelSpec`, the picklable description of which model to load that the integrations share, loads the model
lazily through :func:`sentence_transformers_tp.factory.load_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["ModelSpec", "missing_extra"]


def missing_extra(extra: str, error: ImportError) -> ImportError:
    """The error to raise when an integration's framework cannot be imported: it names the extra to install.

    Args:
        extra: The extra of ``sentence-transformers-tp`` that installs the framework (e.g. ``"langchain"``).
        error: The original import error.

    Returns:
        An ImportError whose message contains ``pip install "sentence-transformers-tp[<extra>]"`` (raise it
        ``from error``).
    """
    missing = getattr(error, "name", None) or "a dependency"
    return ImportError(
        f"The {extra} integration of sentence-transformers-tp needs {missing!r}, which could not be imported "
        f'({error}). Install it with: pip install "sentence-transformers-tp[{extra}]"',
        name=getattr(error, "name", None),
    )


@dataclass(frozen=True)
class ModelSpec:
    """Which Token Prepending model to load: a saved TP model, a backbone + template, or a preset.

    A spec is small and picklable, so it can be sent to worker processes or Ray actors, which load the model
    themselves (:meth:`load`) instead of receiving the weights.

    Args:
        model_name_or_path: A saved sentence-transformers-tp folder, or a backbone (hub id, local checkpoint,
            ``.gguf`` file or named offline backbone such as ``"smollm2"``). None: the preset's backbone, or
            ``"smollm2"`` without a preset.
        template: For a backbone: a built-in template name, a user template or a list of templates (default
            ``"prompteol"`` or the preset's default template). Must be None for a saved model.
        preset: For a backbone: a preset name or YAML path whose layer settings are used.
        tp_start: For a backbone: first decoder layer with Token Prepending (default from the preset / backbone).
        tp_exit: For a backbone: first layer after ``tp_start`` without Token Prepending.
        output_layer: For a backbone: the layer whose last-token state is the embedding.
        max_seq_length: Maximum prompt length in tokens (allowed for saved models too).
        device: Device to load the model on (default: sentence-transformers' choice).
        module_kwargs: For a backbone: further ``TokenPrependingTransformer`` arguments (``query_template``,
            ``document_template``, ``placeholder``, ``model_kwargs``...). For a saved model: only the loader dicts
            ``model_kwargs`` / ``processor_kwargs`` / ``config_kwargs`` (e.g. ``{"dtype": ...}``).
        revision: Hub revision (branch, tag or commit) of a hub id.
        cache_folder: HF cache folder for hub ids (default: huggingface_hub's).
        token: Hub token (left out of the spec's repr).
        trust_remote_code: Allow code from outside the installed packages (see
            :func:`sentence_transformers_tp.factory.load_model`).
    """

    model_name_or_path: str | None = None
    template: str | tuple[str, ...] | None = None
    preset: str | None = None
    tp_start: int | None = None
    tp_exit: int | None = None
    output_layer: int | None = None
    max_seq_length: int | None = None
    device: str | None = None
    module_kwargs: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None
    cache_folder: str | None = None
    token: bool | str | None = field(default=None, repr=False)
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.model_name_or_path is not None:
            object.__setattr__(self, "model_name_or_path", str(self.model_name_or_path))
        if self.template is not None and not isinstance(self.template, str):
            object.__setattr__(self, "template", tuple(self.template))

    @classmethod
    def coerce(cls, spec: ModelSpec | str | dict[str, Any] | None, **overrides: Any) -> ModelSpec:
        """A spec from a spec, a model name / path, or a dict of :class:`ModelSpec` fields.

        Args:
            spec: The spec (None: the default model).
            **overrides: Fields to set; None values are ignored.

        Returns:
            The spec.
        """
        overrides = {key: value for key, value in overrides.items() if value is not None}
        if isinstance(spec, ModelSpec):
            values = {name: getattr(spec, name) for name in spec.__dataclass_fields__}
        elif isinstance(spec, dict):
            values = dict(spec)
        else:
            values = {"model_name_or_path": spec}
        return cls(**{**values, **overrides})

    @classmethod
    def from_fields(cls, owner: Any, **values: Any) -> ModelSpec:
        """The spec described by an object that has the spec's fields as attributes (the embedding classes).

        Args:
            owner: An object with ``model_name_or_path``, ``template``, ... attributes.
            **values: Fields given here instead of read from ``owner``.

        Returns:
            The spec.
        """
        values = {**{name: getattr(owner, name) for name in cls.__dataclass_fields__ if name not in values}, **values}
        values["module_kwargs"] = dict(values["module_kwargs"] or {})
        return cls(**values)

    def load(self) -> SentenceTransformer:
        """Load the model with :func:`sentence_transformers_tp.factory.load_model`.

        Returns:
            The ``SentenceTransformer``.

        Raises:
            ValueError: If template or layer settings are given for a saved model.
        """
        from sentence_transformers_tp.factory import load_model

        template: str | Sequence[str] | None = self.template
        if isinstance(template, tuple):
            template = list(template)
        return load_model(
            self.model_name_or_path,
            template,
            preset=self.preset,
            device=self.device,
            tp_start=self.tp_start,
            tp_exit=self.tp_exit,
            output_layer=self.output_layer,
            max_seq_length=self.max_seq_length,
            revision=self.revision,
            cache_folder=self.cache_folder,
            token=self.token,
            trust_remote_code=self.trust_remote_code,
            **self.module_kwargs,
        )
