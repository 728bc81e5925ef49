"""MTEB leaderboard metadata for Token Prepending models: :func:`to_model_meta` (hub) and :func:`local_model_meta`.

``to_model_meta(model, name="org/repo", revision=...)`` builds the ``mteb.ModelMeta`` of a TP model **published on
the Hugging Face Hub** (``model.push_to_hub("org/repo")``), offline, the way upstream mteb runs it:

* ``name`` / ``revision``: the hub repository and commit the user gives (required: there is no default
  organisation and no invented revision; ``revision=None`` explicitly means "valid for every revision");
* ``loader``: mteb's own sentence-transformers loader (``SentenceTransformerEncoderWrapper``, what the deprecated
  ``sentence_transformers_loader`` calls) with ``loader_kwargs={"trust_remote_code": True}``, so
  ``meta.load_model()`` is ``SentenceTransformer(name, revision=revision, trust_remote_code=True)``: the saved TP
  settings come from the repository, and nothing refers to this package's functions or to local paths;
* ``n_parameters`` / ``n_embedding_parameters`` / ``memory_usage_mb`` / ``embed_dim`` / ``max_tokens`` from the loaded
  model; ``license``, ``languages`` and ``adapted_from`` from the backbone (its hub id; never a local path);
* ``training_datasets``: the data the settings were tuned on (TP itself trains nothing): the MTEB names of the tuning
  tasks recorded in the backbone's preset (``score.task``, e.g. STS-B dev -> ``STSBenchmark``, SciFact train ->
  ``SciFact``) when the model uses that preset's settings, else empty.

``local_model_meta(model)`` is the metadata of a model that lives only here (``st-tp evaluate --mteb`` without a
hub name): its automatic name (``sentence-transformers-tp/<backbone>-<template>-<tp>-L<n>``), a revision hashed from
backbone + settings (``tp-<hash>``), and :func:`load_tp_model`, a loader that rebuilds it from its settings. It
files local results apart per setting; it is not for the leaderboard.

``mteb`` is imported only when these functions run.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from sentence_transformers_tp.provenance import (
    NAMED_BACKBONE_SOURCES,
    backbone_card_language,
    backbone_key,
    backbone_license,
    backbone_source,
)

logger = logging.getLogger(__name__)

TP_CITATION = """@inproceedings{fu2025token,
  title={Token Prepending: A Training-Free Approach for Eliciting Better Sentence Embeddings from LLMs},
  author={Fu, Yuchen and Cheng, Zifeng and Jiang, Zhiwei and Wang, Zhonghui and Yin, Yafeng and Li, Zhengliang and Gu, Qing},
  booktitle={Proceedings of the 63rd Annual Meeting of the Association for Computational Linguistics},
  year={2025}
}"""
"""BibTeX of the Token Prepending paper (the method's citation in the metadata)."""

TUNING_TASK_NAMES: dict[str, str] = {
    "stsb": "STSBenchmark",
    "sickr": "SICK-R",
    "sts12": "STS12",
    "sts13": "STS13",
    "sts14": "STS14",
    "sts15": "STS15",
    "sts16": "STS16",
    "scifact": "SciFact",
}
"""MTEB dataset names of the tuning tasks a preset may record (``score.task``)."""

LOADER_SETTINGS_EXCLUDED: frozenset[str] = frozenset({"backbone_name"})
"""Module config keys not passed to the loader as settings (the backbone is passed separately)."""


def tp_module(model: Any) -> Any:
    """Return the TP module of a model (first module of a ``SentenceTransformer``, or the module itself).

    Args:
        model: A ``SentenceTransformer`` with a ``TokenPrependingTransformer`` first module, or the module.

    Returns:
        The module.

    Raises:
        ValueError: If the model has no TP module.
    """
    from .variants import tp_module as find

    return find(model)


def _tp_settings(module: Any) -> dict[str, Any]:
    """The module's own config keys (not those of the base ``Transformer``), without ``None`` values."""
    from sentence_transformers.base.modules import Transformer

    base = set(Transformer.config_keys)
    config = module.get_config_dict()
    return {k: v for k, v in config.items() if k not in base and k not in LOADER_SETTINGS_EXCLUDED and v is not None}


def tuning_datasets(module: Any) -> set[str]:
    """MTEB names of the datasets the module's settings were tuned on (from its backbone's preset).

    The module counts as tuned when its settings equal the preset's tuned ``combination`` (template, demonstrations,
    layers, CP layer) or the preset's entry for its template (template, TP band, output layer); every ``score``
    ``task`` recorded anywhere in that entry (e.g. STS-B dev, SciFact train) is returned.

    Args:
        module: The TP module.

    Returns:
        A set such as ``{"STSBenchmark"}``; empty when the settings are not a tuned preset's.
    """
    from sentence_transformers_tp.presets import find_preset_for_backbone
    from sentence_transformers_tp.templates import canonical_template_name

    preset = find_preset_for_backbone(str(module.backbone_name))
    if preset is None:
        return set()
    layers = (module.tp_start, module.tp_exit, module.output_layer)
    entry: Any = None
    combination = preset.combination
    if combination is not None and (
        module.template == combination.get("template")
        and layers == tuple(combination.get(key) for key in ("tp_start", "tp_exit", "output_layer"))
        and module.demonstrations == combination.get("demonstrations")
        and module.cp_layer == combination.get("cp_layer")
    ):
        entry = combination
    elif isinstance(module.template, str):
        template = canonical_template_name(module.template)
        values = preset.templates.get(template) if template is not None else None
        if values is not None and layers == tuple(values.get(key) for key in ("tp_start", "tp_exit", "output_layer")):
            entry = values
    entries = [entry] if entry is not None else []
    # Task settings (e.g. retrieval's query / document) count when they are the preset's tuned ones.
    tuned_tasks = preset.task_settings_config() or {}
    for task, values in (getattr(module, "task_settings", None) or {}).items():
        if tuned_tasks.get(task) == values:
            entries.append(preset.task_settings[task])
    names: set[str] = set()
    for task in _score_tasks(entries):
        key = str(task).strip().lower().replace("-", "").replace("_", "")
        names.add(TUNING_TASK_NAMES.get(key, str(task)))
    return names


def _score_tasks(entry: Any) -> Iterable[str]:
    if isinstance(entry, Mapping):
        score = entry.get("score")
        if isinstance(score, Mapping) and score.get("task"):
            yield str(score["task"])
        for key, value in entry.items():
            if key != "score":
                yield from _score_tasks(value)
    elif isinstance(entry, (list, tuple)):
        for value in entry:
            yield from _score_tasks(value)


def model_revision(module: Any) -> str:
    """A revision identifying backbone + TP settings: ``tp-`` and 12 hex digits of their hash.

    Args:
        module: The TP module.

    Returns:
        The same string for the same backbone name and settings on any machine.
    """
    payload = {"backbone": str(module.backbone_name), "settings": _tp_settings(module)}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return f"tp-{digest[:12]}"


def loader_kwargs(model: Any) -> dict[str, Any]:
    """The keyword arguments :func:`load_tp_model` needs to rebuild the model (plain JSON values).

    Args:
        model: The ``SentenceTransformer``.

    Returns:
        ``{"backbone": ..., "settings": {TP module settings}, "max_seq_length": ...}``.
    """
    module = tp_module(model)
    return {
        "backbone": str(module.backbone_name),
        "settings": json.loads(json.dumps(_tp_settings(module), default=str)),
        "max_seq_length": module.max_seq_length,
    }


def _meta_fields(
    model: Any, languages: list[str] | None, training_datasets: Iterable[str] | None, release_date: str | None
) -> dict[str, Any]:
    """The ``ModelMeta`` fields measured on the model and its backbone (everything but name, revision, loader)."""
    module = tp_module(model)
    parameters = list(model.parameters())
    n_parameters = sum(p.numel() for p in parameters)
    memory_mb = sum(p.numel() * p.element_size() for p in parameters) / 2**20
    embeddings = module.model.get_input_embeddings()
    max_tokens = module.max_seq_length or getattr(module.model.config, "max_position_embeddings", None)
    key = backbone_key(module)
    if languages is None and key in NAMED_BACKBONE_SOURCES:
        languages = NAMED_BACKBONE_SOURCES[key]["languages"]
    license_id = backbone_license(module)
    return {
        "release_date": release_date or datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        "languages": languages,
        "n_parameters": int(n_parameters),
        "n_embedding_parameters": int(embeddings.weight.numel()) if embeddings is not None else None,
        "memory_usage_mb": round(memory_mb, 1),
        "max_tokens": float(max_tokens) if max_tokens else None,
        "embed_dim": int(model.get_embedding_dimension()),
        "license": license_id,
        "open_weights": True if license_id is not None or backbone_source(module) is not None else None,
        "public_training_code": None,
        "public_training_data": None,
        "framework": ["Sentence Transformers", "PyTorch"],
        "similarity_fn_name": model.similarity_fn_name or "cosine",
        "use_instructions": True,
        "training_datasets": tuning_datasets(module) | set(training_datasets or ()),
        "adapted_from": backbone_source(module),
        "modalities": ["text"],
        "model_type": ["dense"],
        "citation": TP_CITATION,
    }


def check_hub_name(name: Any) -> str:
    """Check a hub repository name ``org/repo`` (the name a model is published and run under).

    Args:
        name: The candidate.

    Returns:
        The name.

    Raises:
        ValueError: Naming what is expected, for a missing name or one that is not ``org/repo``.
    """
    if not name:
        raise ValueError(
            "to_model_meta needs name='org/repo': the hub repository you publish the model to "
            "(model.push_to_hub('org/repo')); there is no default organisation"
        )
    if not isinstance(name, str) or name.count("/") != 1 or not all(name.split("/")) or os.path.isabs(name):
        raise ValueError(f"name must be a hub repository 'org/repo' (as for push_to_hub), got {name!r}")
    return name


def to_model_meta(
    model: Any,
    *,
    name: str | None = None,
    revision: str | None,
    release_date: str | None = None,
    languages: list[str] | None = None,
    training_datasets: Iterable[str] | None = None,
    **overrides: Any,
) -> Any:
    """Build the ``mteb.ModelMeta`` of a TP model published on the hub (offline; see the module docstring).

    Args:
        model: A ``SentenceTransformer`` whose first module is a ``TokenPrependingTransformer`` (as pushed).
        name: The hub repository ``org/repo`` the model is published to (required).
        revision: The hub commit of that repository (the hash in the URL ``push_to_hub`` returns), or ``None`` to
            declare the metadata valid for every revision; required, so that no revision is invented.
        release_date: ``YYYY-MM-DD`` (default: today, UTC).
        languages: ISO language-script codes (default: the named backbone's, else ``None``).
        training_datasets: Extra datasets the settings were tuned on (MTEB names), added to those the preset
            records.
        **overrides: Any other ``ModelMeta`` field (``contacts``, ``reference``, ``public_training_code``...).

    Returns:
        The validated ``mteb.ModelMeta``; its loader is mteb's own ``SentenceTransformerEncoderWrapper`` with
        ``trust_remote_code=True`` (upstream mteb runs it; the package must be installed where it runs).

    Raises:
        ValueError: If the model has no TP module, or ``name`` is missing or not ``org/repo``.
    """
    from mteb.models import ModelMeta, SentenceTransformerEncoderWrapper

    tp_module(model)
    name = check_hub_name(name)
    fields: dict[str, Any] = {
        "loader": SentenceTransformerEncoderWrapper,
        "loader_kwargs": {"trust_remote_code": True},
        "name": name,
        "revision": revision,
        "reference": f"https://huggingface.co/{name}",
        **_meta_fields(model, languages, training_datasets, release_date),
    }
    fields.update(overrides)
    return ModelMeta(**fields)


def local_model_meta(
    model: Any,
    *,
    name: str | None = None,
    revision: str | None = None,
    release_date: str | None = None,
    languages: list[str] | None = None,
    training_datasets: Iterable[str] | None = None,
    **overrides: Any,
) -> Any:
    """The ``mteb.ModelMeta`` of a model that is not on the hub (local MTEB runs; not for the leaderboard).

    Args:
        model: A ``SentenceTransformer`` whose first module is a ``TokenPrependingTransformer``.
        name: ``org/name`` (default: ``model.model_card_data.model_name``, the automatic per-setting name).
        revision: Model revision (default: :func:`model_revision`, a hash of backbone + settings).
        release_date: ``YYYY-MM-DD`` (default: today, UTC).
        languages: ISO language-script codes (default: the named backbone's, else ``None``).
        training_datasets: Extra datasets the settings were tuned on (MTEB names).
        **overrides: Any other ``ModelMeta`` field.

    Returns:
        The ``mteb.ModelMeta``; ``meta.load_model()`` rebuilds the model here with :func:`load_tp_model`.

    Raises:
        ValueError: If the model has no TP module, or it has no ``org/name`` name and none is given.
    """
    from mteb.models import ModelMeta

    module = tp_module(model)
    card = getattr(model, "model_card_data", None)
    name = name or getattr(card, "model_name", None)
    if not name or "/" not in name:
        raise ValueError(f"the model needs a name of the form 'org/name' for MTEB, got {name!r}; pass name=...")
    fields: dict[str, Any] = {
        "loader": load_tp_model,
        "loader_kwargs": loader_kwargs(model),
        "name": name,
        "revision": revision or model_revision(module),
        **_meta_fields(model, languages, training_datasets, release_date),
    }
    fields.update(overrides)
    return ModelMeta(**fields)


def model_meta_to_json(meta: Any) -> str:
    """Serialise a ``ModelMeta`` as MTEB does for ``model_meta.json`` (the loader by its name).

    Args:
        meta: The ``mteb.ModelMeta``.

    Returns:
        Indented JSON.
    """
    return json.dumps(meta.to_dict(), default=str, indent=4)


# -------------------------------------------------------------------------------------------------------- loading


@cache
def encoder_wrapper_class() -> type:
    """Return :class:`TokenPrependingEncoderWrapper` (built on first use; imports mteb).

    Returns:
        The class.
    """
    from mteb.models import SentenceTransformerEncoderWrapper
    from mteb.models.abs_encoder import AbsEncoder

    class TokenPrependingEncoderWrapper(SentenceTransformerEncoderWrapper):
        """MTEB's sentence-transformers wrapper around a TP model, carrying the model's own ``ModelMeta``.

        Retrieval queries go to ``encode_query``, documents to ``encode_document``, other tasks to ``encode``, as
        for any ``SentenceTransformer``. Unlike ``SentenceTransformerEncoderWrapper(model)`` it does not derive the
        metadata with ``ModelMeta.from_sentence_transformer_model`` (which calls the deprecated
        ``get_sentence_embedding_dimension``) but uses :func:`local_model_meta` (or the meta it is given).

        Args:
            model: The ``SentenceTransformer``.
            meta: Its metadata (default: :func:`local_model_meta` of the model).
        """

        def __init__(self, model: Any, meta: Any = None) -> None:
            self.model = model
            self.mteb_model_meta = meta if meta is not None else local_model_meta(model)
            prompts = getattr(model, "prompts", None) or None
            self.model_prompts, invalid = AbsEncoder.validate_task_to_prompt_name(
                prompts, raise_for_invalid_keys=False
            )
            if invalid:
                logger.warning("Prompts MTEB will ignore: %s", "; ".join(invalid))
            self.fps = self.max_frames = self.num_frames = self.target_sampling_rate = self.max_samples = None

    TokenPrependingEncoderWrapper.__module__ = __name__
    TokenPrependingEncoderWrapper.__qualname__ = "TokenPrependingEncoderWrapper"
    return TokenPrependingEncoderWrapper


def wrap_for_mteb(model: Any, meta: Any = None) -> Any:
    """Wrap a TP model for ``mteb.evaluate`` with its own ``ModelMeta`` (results are filed under its name/revision).

    Args:
        model: The ``SentenceTransformer``.
        meta: Its metadata (default: :func:`local_model_meta`; :func:`to_model_meta` for a published model).

    Returns:
        A :class:`TokenPrependingEncoderWrapper`.
    """
    return encoder_wrapper_class()(model, meta)


def load_tp_model(
    model_name: str,
    revision: str | None = None,
    device: str | None = None,
    *,
    backbone: str = "smollm2",
    settings: Mapping[str, Any] | None = None,
    max_seq_length: int | None = None,
    **kwargs: Any,
) -> Any:
    """MTEB loader of local TP models (:func:`local_model_meta`): rebuild the model and wrap it for MTEB.

    Args:
        model_name: The ``ModelMeta`` name; becomes ``model_card_data.model_name``.
        revision: The ``ModelMeta`` revision (recorded by MTEB; the model is rebuilt from its settings).
        device: Torch device.
        backbone: Backbone name, hub id, checkpoint or ``.gguf`` file.
        settings: ``TokenPrependingTransformer`` arguments (template, TP band, output layer, ...).
        max_seq_length: Prompt length limit.
        **kwargs: Further ``TokenPrependingTransformer`` arguments (e.g. ``model_kwargs``).

    Returns:
        A :class:`TokenPrependingEncoderWrapper`; the ``SentenceTransformer`` is its ``.model``.
    """
    from sentence_transformers import SentenceTransformer

    from sentence_transformers_tp.module import TokenPrependingTransformer

    options = {**dict(settings or {}), **kwargs}
    if max_seq_length is not None:
        options["max_seq_length"] = max_seq_length
    module = TokenPrependingTransformer(backbone, **options)
    model = SentenceTransformer(modules=[module], device=device)
    model.model_card_data.model_name = model_name
    return wrap_for_mteb(model, local_model_meta(model, name=model_name, revision=revision))


def __getattr__(name: str) -> Any:
    if name == "TokenPrependingEncoderWrapper":
        return encoder_wrapper_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NAMED_BACKBONE_SOURCES",
    "TP_CITATION",
    "TUNING_TASK_NAMES",
    "backbone_card_language",
    "backbone_key",
    "backbone_license",
    "backbone_source",
    "check_hub_name",
    "encoder_wrapper_class",
    "evaluate_to_results_folder",
    "load_tp_model",
    "loader_kwargs",
    "local_model_meta",
    "model_meta_to_json",
    "model_revision",
    "to_model_meta",
    "tuning_datasets",
    "wrap_for_mteb",
]


def evaluate_to_results_folder(
    model: Any,
    tasks: Iterable[Any],
    output_folder: str | os.PathLike,
    *,
    meta: Any = None,
    encode_kwargs: Mapping[str, Any] | None = None,
    show_progress_bar: bool = True,
) -> Any:
    """Run MTEB tasks and write the results in the layout of the MTEB results repository.

    The files are ``<output_folder>/results/<org>__<name>/<revision>/<Task>.json`` plus ``model_meta.json`` (and MTEB's
    ``run_settings.jsonl``) in that folder; ``mteb.ResultCache(output_folder).load_results(...)`` reads them back.
    Existing results of the same tasks are overwritten.

    Args:
        model: A TP ``SentenceTransformer``.
        tasks: MTEB task instances (e.g. the local STS or retrieval tasks).
        output_folder: Root of the results (created).
        meta: The model's metadata (default: :func:`local_model_meta`; pass :func:`to_model_meta` for a published
            model so the results are filed under its hub name and commit).
        encode_kwargs: Passed to ``mteb.evaluate`` (e.g. ``{"batch_size": 16}``).
        show_progress_bar: Show MTEB's progress bars.

    Returns:
        The ``ModelResult`` of ``mteb.evaluate``.
    """
    import mteb

    return mteb.evaluate(
        wrap_for_mteb(model, meta),
        list(tasks),
        cache=mteb.ResultCache(output_folder),
        overwrite_strategy="always",
        encode_kwargs=dict(encode_kwargs or {}),
        show_progress_bar=show_progress_bar,
    )
