"""``TokenPrependingTransformer``: the sentence-transformers input module that embeds text with Token Prepending."""

from __future__ import annotations

import hashlib
import json
import operator
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sentence_transformers.base.modules import Transformer
from transformers.utils import logging

from sentence_transformers_tp import engine
from sentence_transformers_tp.backbones import quiet_unused_head_report, resolve_backbone
from sentence_transformers_tp.contrastive import CP_PROMPT
from sentence_transformers_tp.demonstrations import parse_demonstrations, to_config
from sentence_transformers_tp.engine import (
    Plan,
    capture_layers,
    check_decoder_only,
    find_decoder_layers,
    resolve_output_layer,
)
from sentence_transformers_tp.inputs import Features, check_texts
from sentence_transformers_tp.interventions import ForwardSettings
from sentence_transformers_tp.prefix_cache import (
    PrefixGroup,
    PrefixKVCache,
    group_rows,
    prefix_length,
    unsupported_reason,
)
from sentence_transformers_tp.presets import with_saved_settings
from sentence_transformers_tp.templates import (
    DEFAULT_PLACEHOLDER,
    USUAL_OUTPUT_LAYER,
    RenderedPrompt,
    canonical_template_name,
    clean_sentence,
    render,
    resolve_templates,
    template_names,
    with_demonstrations,
)
from sentence_transformers_tp.truncation import record_truncation, truncation_message

logger = logging.get_logger(__name__)

#: Version of the saved-model format; saved models require ``sentence-transformers-tp>=`` this version.
FORMAT_VERSION = "0.1.0"
PACKAGE_NAME = "sentence-transformers-tp"

_BATCH_INDEX_NOTE = (
    "(The index counts within the failing batch: SentenceTransformer.encode sorts inputs by length first; "
    "sentence_transformers_tp.inputs.check_texts(your_inputs) names the index in your own list.)"
)

_TEXT_MODALITY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}


class TokenPrependingTransformer(Transformer):
    """A decoder-only LLM that embeds sentences with a prompt template and Token Prepending (TP).

    Each sentence is cleaned, put into the prompt template(s) with one placeholder token right before the
    sentence, and run through the backbone. Before every decoder layer with index in ``[tp_start, tp_exit)`` the
    placeholder's hidden state is replaced by the last token's hidden state of the same layer input, so that the
    sentence tokens can attend to a summary of the whole sentence (Fu et al., ACL 2025). The sentence embedding is
    the last token's hidden state at ``output_layer``; layers after it are not computed and the LM head never
    runs. With several templates (MetaEOL), the embedding is the mean over the templates.

    The module writes ``sentence_embedding`` directly, so a ``SentenceTransformer(modules=[module])`` needs no
    pooling module.

    Args:
        model_name_or_path: The backbone: a Hugging Face hub id, a local checkpoint directory, a ``.gguf`` file, a
            saved sentence-transformers-tp folder, or a named offline backbone (``"smollm2"``, the default, or
            ``"gemma3-270m"``; see :mod:`sentence_transformers_tp.backbones`).
        template: A built-in template name (``"prompteol"``, ``"metaeol"``, ``"pretended_cot"``, ``"knowledge"``,
            ``"ck"``), a user template with a ``{sentence}`` slot (and optionally a ``{placeholder}`` slot), or a list
            of built-in names and user templates whose embeddings are averaged (a template ensemble, e.g.
            ``["pretended_cot", "knowledge"]``, which is ``"ck"``). Defaults to the tuned ``combination`` of the
            backbone's preset (template, demonstrations, TP, CP and output layer; settings passed here override its
            parts), or ``"prompteol"`` when the preset has none.
        tp_start: First decoder layer (0-based) whose input gets the placeholder replaced.
        tp_exit: First decoder layer after ``tp_start`` that runs without replacement; ``tp_exit <= tp_start`` turns
            TP off (the prompt then has no placeholder: the vanilla template).
        output_layer: The layer whose last-token state is the embedding, in Hugging Face ``hidden_states``
            indexing: 0 = embeddings, ``k`` = output of decoder layer ``k`` (not normalised), -1 = the final normed
            output, other negatives count from the end.

            Layer settings left as None come from the backbone's preset for the template (``configs/``, see
            :mod:`sentence_transformers_tp.presets`) when there is one; otherwise ``tp_start=1``,
            ``tp_exit=min(7, num_layers)`` and the template's usual output layer (-1 for PromptEOL, MetaEOL and user
            templates, -2 for Pretended CoT and Knowledge).
        demonstrations: In-context demonstrations put in front of every template (Jiang et al. 2023): a
            ``(sentence, word)`` pair, a :class:`~sentence_transformers_tp.demonstrations.Demonstration`, or a list of
            them (see :func:`~sentence_transformers_tp.demonstrations.parse_demonstrations`; the shipped pool is
            :data:`~sentence_transformers_tp.demonstrations.POOL`). Each is written in the template's own wording
            (for PromptEOL: ``This sentence : "A jockey riding a horse." means in one word:"Equestrian". ``); the
            placeholder stays before the query sentence. Defaults to none.
        cp_layer: Contrastive Prompting (Cheng et al. 2025; :mod:`sentence_transformers_tp.contrastive`): the
            decoder layer (0-based) whose attention-output-projection input at the last token is steered away from
            the auxiliary prompt's. None (the default) turns CP off.
        cp_alpha: CP scale in ``"ns"`` mode. Defaults to 1.0.
        cp_mode: ``"ns"`` (norm scaling, ``alpha * (main - aux)``) or ``"nr"`` (norm recovering). Defaults to
            ``"ns"``.
        cp_prompt: The CP auxiliary prompt template. Defaults to the "irrelevant information" prompt.
        placeholder: The text of the placeholder token, added to the tokenizer as a normal token. Defaults to
            ``"<PST>"``.
        query_template: Template used by ``encode_query`` (same forms as ``template``). Defaults to ``template``.
        document_template: Template used by ``encode_document``. Defaults to ``template``.
        task_settings: Settings per task, on the one loaded backbone: ``{task: {setting: value}}`` where a task is
            ``"query"`` (``encode_query``), ``"document"`` (``encode_document``), or any name passed as
            ``encode(..., task=name)``, such as an MTEB task type (``"STS"``, ``"Clustering"``, ``"Classification"``)
            or task name; MTEB selects them through ``model.prompts``, which the module fills in. A setting is one
            of ``template``, ``demonstrations`` (``[]`` for none; when missing, the module's), ``tp_start``,
            ``tp_exit``, ``output_layer``, ``cp_layer``, ``cp_alpha``, ``cp_mode``, ``max_seq_length``; the others
            stay the module's. ``query_template`` / ``document_template`` are shorthands for ``{"query":
            {"template": ...}}`` / ``{"document": {"template": ...}}``. When none of ``template``, the layer and
            booster settings, ``task_settings`` and the shorthands is given, the backbone's preset supplies its tuned
            ``task_settings`` (e.g. the retrieval settings of ``query`` and ``document``), if it has any.
        clean_sentences: Apply the paper's sentence cleaning (whitespace collapsed, final ``.`` added, ``"`` to
            ``'``, final ``?`` to ``.``). Defaults to True.
        padding_side: ``"left"`` (as the paper) or ``"right"``. Results do not depend on it, because position ids
            are derived from the attention mask. Defaults to ``"left"``.
        backbone_name: Human-readable name of the backbone, kept in the saved config (used for model names and the
            model card). Defaults to ``model_name_or_path``.
        cache_dir: Where GGUF backbones are dequantized to. Defaults to
            :func:`sentence_transformers_tp.backbones.default_cache_dir`.
        max_seq_length: Maximum number of tokens of a prompt; longer inputs have their sentence truncated, the
            template and the last token are always kept.
        prefix_cache: Compute the keys/values of each template's fixed beginning (the text before the placeholder)
            once and reuse them for every batch (:mod:`sentence_transformers_tp.prefix_cache`). Embeddings are
            unchanged (up to float rounding). It applies to inference (``torch.inference_mode()``, as ``encode``
            runs; eval mode) on backbones with plain or sliding-window attention, and is skipped with a logged
            reason on others. Weights are assumed frozen during inference (the cache is cleared when they are
            replaced, moved or modified in place). Defaults to True.
        model_kwargs: Keyword arguments for ``AutoModel.from_pretrained`` (e.g. ``{"dtype": torch.bfloat16}``).
        processor_kwargs: Keyword arguments for ``AutoTokenizer.from_pretrained``.
        config_kwargs: Keyword arguments for ``AutoConfig.from_pretrained``.
        **kwargs: Further :class:`~sentence_transformers.base.modules.Transformer` arguments (``backend``,
            ``processing_kwargs``...). ``modality_config`` is always plain text: a tokenizer's chat template is
            never applied.
    """

    config_keys: list[str] = [
        *Transformer.config_keys,
        "template",
        "query_template",
        "document_template",
        "placeholder",
        "tp_start",
        "tp_exit",
        "output_layer",
        "clean_sentences",
        "padding_side",
        "backbone_name",
        "prefix_cache",
        "demonstrations",
        "cp_layer",
        "cp_alpha",
        "cp_mode",
        "cp_prompt",
        "task_settings",
    ]

    @with_saved_settings
    def __init__(
        self,
        model_name_or_path: str = "smollm2",
        template: str | Sequence[str] | None = None,
        *,
        tp_start: int | None = None,
        tp_exit: int | None = None,
        output_layer: int | None = None,
        demonstrations: Any = None,
        cp_layer: int | None = None,
        cp_alpha: float | None = None,
        cp_mode: str | None = None,
        cp_prompt: str | None = None,
        placeholder: str = DEFAULT_PLACEHOLDER,
        query_template: str | Sequence[str] | None = None,
        document_template: str | Sequence[str] | None = None,
        task_settings: dict[str, dict[str, Any]] | None = None,
        clean_sentences: bool = True,
        padding_side: str = "left",
        backbone_name: str | None = None,
        cache_dir: str | None = None,
        max_seq_length: int | None = None,
        prefix_cache: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        if not isinstance(placeholder, str) or not placeholder.strip():
            raise ValueError(f"placeholder must be a non-empty string, got {placeholder!r}.")
        if template is None:
            # No template given: the backbone's tuned combination of boosters, if its preset has one.
            combination, preset_tasks = _preset_defaults(backbone_name or model_name_or_path)
            given = {
                "tp_start": tp_start,
                "tp_exit": tp_exit,
                "output_layer": output_layer,
                "demonstrations": demonstrations,
                "cp_layer": cp_layer,
                "cp_alpha": cp_alpha,
                "cp_mode": cp_mode,
            }
            chosen = {**combination, **{k: v for k, v in given.items() if v is not None}}
            # The preset's task settings (e.g. for retrieval) come only with the untouched default.
            untouched = all(v is None for v in (task_settings, query_template, document_template, *given.values()))
            if untouched:
                task_settings = preset_tasks
            template = chosen.get("template", "prompteol")
            tp_start, tp_exit, output_layer = chosen.get("tp_start"), chosen.get("tp_exit"), chosen.get("output_layer")
            demonstrations, cp_layer = chosen.get("demonstrations"), chosen.get("cp_layer")
            cp_alpha, cp_mode = chosen.get("cp_alpha"), chosen.get("cp_mode")
        cp_alpha = 1.0 if cp_alpha is None else cp_alpha
        cp_mode = "ns" if cp_mode is None else cp_mode
        cp_prompt = CP_PROMPT if cp_prompt is None else cp_prompt
        tp_start, tp_exit, output_layer = (
            None if value is None else self._layer_value(key, value)
            for key, value in (("tp_start", tp_start), ("tp_exit", tp_exit), ("output_layer", output_layer))
        )
        self.template = _as_config_value(template)
        self.query_template = _as_config_value(query_template) if query_template is not None else None
        self.document_template = _as_config_value(document_template) if document_template is not None else None
        # Validate all template specs early, before the (slow) backbone load.
        self._demonstrations = parse_demonstrations(demonstrations)
        self.demonstrations = to_config(self._demonstrations) or None
        self._templates = self._resolve_templates(self.template)
        self.task_settings = check_task_settings(task_settings)
        self._profiles = self._build_profiles()
        self.cp_layer = cp_layer
        self.cp_alpha = cp_alpha
        self.cp_mode = cp_mode
        self.cp_prompt = cp_prompt
        ForwardSettings(cp_layer=None, cp_alpha=cp_alpha, cp_mode=cp_mode, cp_prompt=cp_prompt).validate(1)

        self.backbone_name = backbone_name or model_name_or_path
        resolved = resolve_backbone(model_name_or_path, cache_dir=cache_dir)
        model_kwargs = _with_safe_attention(resolved, model_kwargs, config_kwargs)
        kwargs.pop("modality_config", None)
        kwargs.pop("module_output_name", None)
        kwargs.pop("unpad_inputs", None)
        with quiet_unused_head_report():  # the causal LM's head is not used: no "lm_head UNEXPECTED" report
            super().__init__(
                resolved,
                model_kwargs=model_kwargs,
                processor_kwargs=processor_kwargs,
                config_kwargs=config_kwargs,
                max_seq_length=max_seq_length,
                modality_config=_TEXT_MODALITY,
                module_output_name="sentence_embedding",
                unpad_inputs=False,
                **kwargs,
            )
        if self.tokenizer is None:
            raise ValueError(f"The backbone {model_name_or_path!r} has no text tokenizer.")
        check_decoder_only(self.model)
        self._layers = find_decoder_layers(self.model)

        self.placeholder = placeholder
        self.placeholder_id = self._add_placeholder_token(placeholder)
        self._placeholder_text_ids = self._plain_text_ids(placeholder)
        self.clean_sentences = clean_sentences
        self.padding_side = padding_side
        self._pad_id = self._choose_pad_id()
        self._tokenizer_lock = threading.Lock()
        self.prefix_cache = bool(prefix_cache)
        self._prefix_kv = PrefixKVCache()
        self._prefix_cache_problem: str | None = unsupported_reason(self.model)

        given = {"tp_start": tp_start, "tp_exit": tp_exit, "output_layer": output_layer}
        settings = {**self._default_layers(), **{k: v for k, v in given.items() if v is not None}}
        self.tp_start = settings["tp_start"]
        self.tp_exit = settings["tp_exit"]
        self.output_layer = settings["output_layer"]
        self._validate_layers()

    @classmethod
    def from_preset(cls, name_or_path: str, template: str | None = None, **kwargs: Any) -> TokenPrependingTransformer:
        """Build a module from a preset of ``configs/`` (or a preset YAML file).

        Args:
            name_or_path: A preset name (e.g. ``"llama-2-7b"``, ``"smollm2"``), a backbone name or alias of a
                preset, or the path of a preset YAML file.
            template: A built-in template name; defaults to the preset's ``default_template``.
            **kwargs: Further constructor arguments; ``tp_start``, ``tp_exit`` or ``output_layer`` given here
                override the preset, and ``model_name_or_path`` overrides the preset's backbone (e.g. a local copy).

        Returns:
            The module.
        """
        from sentence_transformers_tp.presets import get_preset

        preset = get_preset(name_or_path)
        template = template or preset.default_template
        settings = {**preset.settings(template), **{k: v for k, v in kwargs.items() if v is not None}}
        model_name_or_path = settings.pop("model_name_or_path", preset.backbone)
        settings.setdefault("backbone_name", preset.backbone)
        return cls(model_name_or_path, template, **settings)

    def _default_layers(self) -> dict[str, int]:
        """Layer settings used where the caller gave none: the backbone's preset for this template if there is
        one, else TP before layers 1-6 (the paper's default band) and the template's usual output layer."""
        from sentence_transformers_tp.presets import find_preset_for_backbone

        name = canonical_template_name(self.template) if isinstance(self.template, str) else None
        if name is not None:
            preset = find_preset_for_backbone(str(self.backbone_name))
            if preset is not None and name in preset.templates:
                logger.info(f"Using the {preset.name!r} preset ({preset.status}) for template {name!r}.")
                return preset.settings(name)
        return {"tp_start": 1, "tp_exit": min(7, self.num_layers), "output_layer": USUAL_OUTPUT_LAYER.get(name, -1)}

    # ------------------------------------------------------------------ setup helpers

    @property
    def num_layers(self) -> int:
        """Number of decoder layers of the backbone."""
        return len(self._layers)

    @staticmethod
    def _layer_value(key: str, value: Any) -> int:
        """``value`` as a plain int (numpy and other integer types accepted; bools and floats are not)."""
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise ValueError(f"{key} must be an integer (or None for the default), got {value!r}.")
        return operator.index(value)

    def _set_layer(self, key: str, value: Any) -> None:
        """Set a layer setting, validated against the backbone (and the other settings) once all are set."""
        value = self._layer_value(key, value)
        previous = self.__dict__.get(f"_{key}")
        self.__dict__[f"_{key}"] = value
        ready = all(f"_{name}" in self.__dict__ for name in ("tp_start", "tp_exit", "output_layer"))
        if ready and getattr(self, "_layers", None) is not None:
            try:
                self._validate_layers()
            except ValueError:
                self.__dict__[f"_{key}"] = previous
                raise

    @property
    def tp_start(self) -> int:
        """First decoder layer (0-based) whose input gets the placeholder replaced; validated when set."""
        return self.__dict__["_tp_start"]

    @tp_start.setter
    def tp_start(self, value: int) -> None:
        self._set_layer("tp_start", value)

    @property
    def tp_exit(self) -> int:
        """First layer after ``tp_start`` without replacement (``<= tp_start``: TP off); validated when set."""
        return self.__dict__["_tp_exit"]

    @tp_exit.setter
    def tp_exit(self, value: int) -> None:
        self._set_layer("tp_exit", value)

    @property
    def output_layer(self) -> int:
        """The ``hidden_states`` index of the embedding; validated when set."""
        return self.__dict__["_output_layer"]

    @output_layer.setter
    def output_layer(self, value: int) -> None:
        self._set_layer("output_layer", value)

    @property
    def tp_enabled(self) -> bool:
        """Whether Token Prepending is on (``tp_exit > tp_start``)."""
        return self.tp_exit > self.tp_start

    @property
    def templates(self) -> tuple[str, ...]:
        """The resolved default template strings (with ``{sentence}`` and ``{placeholder}`` slots)."""
        return self._templates

    def _validate_layers(self) -> None:
        self.forward_settings().validate(self.num_layers)
        resolve_output_layer(self.output_layer, self.num_layers)
        for task, profile in getattr(self, "_profiles", {}).items():
            try:
                self.forward_settings().replace(**profile.overrides).validate(self.num_layers)
                if profile.output_layer is not None:
                    resolve_output_layer(profile.output_layer, self.num_layers)
            except ValueError as error:
                raise ValueError(f"task_settings[{task!r}]: {error}") from None

    def _build_profiles(self) -> dict[str, TaskProfile]:
        """Resolve ``task_settings`` (and the ``query_template`` / ``document_template`` shorthands) per task."""
        shorthands = {"query": self.query_template, "document": self.document_template}
        entries = {**{task: {} for task, value in shorthands.items() if value is not None}, **self.task_settings}
        profiles = {}
        for task, values in entries.items():
            values = dict(values)
            if shorthands.get(task) is not None:
                values.setdefault("template", shorthands[task])
            template = values.pop("template", None)
            demonstrations = parse_demonstrations(values["demonstrations"]) if "demonstrations" in values else None
            if demonstrations is not None and template is None:
                template = self.template
            profiles[task.lower()] = TaskProfile(
                templates=self._resolve_templates(template, demonstrations) if template is not None else None,
                overrides={
                    k: values[k] for k in ("tp_start", "tp_exit", "cp_layer", "cp_alpha", "cp_mode") if k in values
                },
                output_layer=values.get("output_layer"),
                max_seq_length=values.get("max_seq_length"),
            )
        return profiles

    def _profile(self, prompt: str | None, task: str | None) -> tuple[str | None, TaskProfile | None]:
        """The prompt left after a task marker (see :data:`TASK_PROMPT_PREFIX`) and the task's settings, if any."""
        if prompt and prompt.startswith(TASK_PROMPT_PREFIX):
            task, prompt = prompt[len(TASK_PROMPT_PREFIX) :], None
        return prompt, self._profiles.get(task.lower()) if task else None

    def boosters(self) -> dict[str, Any]:
        """The template and boosters (demonstrations, Contrastive Prompting layer) as :meth:`set_boosters` takes them."""
        return {"template": self.template, "demonstrations": self.demonstrations, "cp_layer": self.cp_layer}

    def set_boosters(
        self, template: str | Sequence[str], demonstrations: Any = None, cp_layer: int | None = None
    ) -> None:
        """Switch the template, demonstrations and Contrastive Prompting layer on the loaded backbone (the query and
        document templates are kept). The new settings are validated before anything changes.

        Args:
            template: A template spec.
            demonstrations: Demonstrations (see the constructor), or None.
            cp_layer: CP layer, or None for no CP.
        """
        demos = parse_demonstrations(demonstrations)
        self.forward_settings().replace(cp_layer=cp_layer).validate(self.num_layers)
        saved = self._demonstrations
        self._demonstrations = demos
        try:
            templates = self._resolve_templates(template)
        except ValueError:
            self._demonstrations = saved
            raise
        self.template = _as_config_value(template)
        self._templates = templates
        self.demonstrations = to_config(demos) or None
        self.cp_layer = cp_layer

    def _resolve_templates(
        self, spec: str | Sequence[str], demonstrations: Sequence[Any] | None = None
    ) -> tuple[str, ...]:
        """Template strings of a spec, with the module's demonstrations (or the given ones) in front."""
        templates = resolve_templates(spec)
        demos = self._demonstrations if demonstrations is None else demonstrations
        if not demos:
            return templates
        return tuple(with_demonstrations(template, demos) for template in templates)

    def _add_placeholder_token(self, placeholder: str) -> int:
        """Add the placeholder to the tokenizer as a normal token and give it an embedding row; return its id."""
        tokenizer = self.tokenizer
        existing = placeholder in tokenizer.get_added_vocab()
        if not existing:
            tokenizer.add_tokens([placeholder])
        placeholder_id = tokenizer.convert_tokens_to_ids(placeholder)
        ids = tokenizer(placeholder, add_special_tokens=False)["input_ids"]
        if ids != [placeholder_id]:
            raise ValueError(
                f"The placeholder {placeholder!r} does not tokenize to a single token (got ids {ids}); choose another "
                f"placeholder text."
            )
        embeddings = self.model.get_input_embeddings()
        if placeholder_id >= embeddings.num_embeddings:
            self.model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            embeddings = self.model.get_input_embeddings()
        if not existing:
            # The initial value barely matters (TP_REFERENCE §1.2, Table 4); the mean of the other rows is a
            # deterministic choice of ordinary magnitude.
            with torch.no_grad():
                others = torch.cat([embeddings.weight[:placeholder_id], embeddings.weight[placeholder_id + 1 :]])
                embeddings.weight[placeholder_id] = others.float().mean(0).to(embeddings.weight.dtype)
        return placeholder_id

    def _plain_text_ids(self, text: str) -> list[int]:
        """Ids of ``text`` tokenized as ordinary text, bypassing the added-token match (used for user text that
        contains the placeholder's literal text)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            normalized = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
            pieces = backend.pre_tokenizer.pre_tokenize_str(normalized) if backend.pre_tokenizer else [(normalized,)]
            ids = [token.id for piece in pieces for token in backend.model.tokenize(piece[0])]
            if ids and self.placeholder_id not in ids:
                return ids
        # Fallback: one character at a time.
        ids = []
        for char in text:
            ids.extend(self.tokenizer(char, add_special_tokens=False)["input_ids"])
        return [i for i in ids if i != self.placeholder_id]

    def _choose_pad_id(self) -> int:
        tokenizer = self.tokenizer
        for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    # ------------------------------------------------------------------ sentence-transformers API

    def on_model_ready(self, model: Any) -> None:
        """Give the owning model a unique name (for MTEB result folders) and the TP model card."""
        from sentence_transformers_tp.model_card import install_model_card_data

        install_model_card_data(model, self)
        # MTEB picks prompts by task name / type: a marker prompt routes those tasks to their task_settings.
        prompts = getattr(model, "prompts", None)
        if isinstance(prompts, dict):
            for task in self.task_settings:
                if task.lower() not in ("query", "document"):
                    prompts.setdefault(task, TASK_PROMPT_PREFIX + task)

    def templates_for(self, prompt: str | None = None, task: str | None = None) -> tuple[str, ...]:
        """The templates used for a call.

        Args:
            prompt: A prompt from ``encode(prompt=...)`` / ``prompt_name``. One that contains ``{sentence}`` is a
                full template; any other non-empty prompt is an instruction put in front of the template.
            task: ``"query"`` or ``"document"`` (set by ``encode_query`` / ``encode_document``), or another key of
                ``task_settings``.

        Returns:
            The template strings.
        """
        prompt, profile = self._profile(prompt, task)
        templates = profile.templates if profile is not None and profile.templates is not None else self._templates
        if prompt:
            if "{sentence}" in prompt:
                return self._resolve_templates(prompt)
            return tuple(prompt + template for template in templates)
        return templates

    def preprocess(
        self,
        inputs: Sequence[str],
        prompt: str | None = None,
        task: str | None = None,
        *,
        settings: ForwardSettings | None = None,
        templates: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Render every input into its prompt(s) and tokenize.

        Args:
            inputs: The sentences.
            prompt: See :meth:`templates_for`.
            task: See :meth:`templates_for`.
            settings: The forward settings to prepare for (TP decides whether prompts get a placeholder, CP adds the
                auxiliary prompts). Defaults to the module's own (:meth:`forward_settings`).
            templates: Resolved template strings to use instead of :meth:`templates_for` (the tuner compares
                templates on one loaded backbone this way).
            **kwargs: Ignored (accepted for sentence-transformers compatibility).

        Returns:
            ``input_ids``, ``attention_mask`` (``(n_inputs * n_templates, seq_len)``), ``placeholder_positions``
            (-1 without TP), ``last_positions``, ``num_prompts`` (templates per input), ``settings``, for the prefix
            cache ``prefix_groups`` (rows grouped by their template prefix, with the remainders after it; see
            :func:`~sentence_transformers_tp.prefix_cache.group_rows`) and ``prefix_rest`` (rows without one), and
            with CP ``auxiliary``: the same keys for the auxiliary prompt (one row per input).

        Raises:
            ValueError: If an input is not a string (the message names its index), or ``max_seq_length`` is too
                small to hold a template.
        """
        check_texts(inputs, context=_BATCH_INDEX_NOTE)
        _, profile = self._profile(prompt, task)
        if settings is None:
            settings = self.forward_settings()
            if profile is not None:
                settings = settings.replace(**profile.overrides)
        settings.validate(self.num_layers)
        max_length = profile.max_seq_length if profile is not None and profile.max_seq_length else self.max_seq_length
        sentences = [clean_sentence(text) if self.clean_sentences else text for text in inputs]
        placeholder = self.placeholder if settings.tp_enabled else None
        templates = tuple(templates) if templates is not None else self.templates_for(prompt, task)
        truncated: set[int] = set()
        features = Features(self._prepare(sentences, templates, placeholder, truncated, max_length))
        features["settings"] = settings
        if profile is not None and profile.output_layer is not None:
            features["output_layer"] = profile.output_layer
        if settings.cp_enabled:
            cp_templates = resolve_templates(settings.cp_prompt)
            features["auxiliary"] = self._prepare(sentences, cp_templates, placeholder, truncated, max_length)
        # Counted by an active report_truncation block (one report per block), else one report for this call with
        # the count (instead of transformers' per-tokenizer "indexing errors" warning).
        if not record_truncation(len(truncated), len(inputs), max_length) and truncated:
            logger.warning(truncation_message(len(truncated), len(inputs), [max_length]))
        return features

    def _prepare(
        self,
        sentences: list[str],
        templates: Sequence[str],
        placeholder: str | None,
        truncated: set[int] | None = None,
        max_length: int | None = None,
    ) -> dict[str, Any]:
        """Tokenize every (cleaned) sentence in every template and collate (see :meth:`preprocess`); the indices of
        sentences that had to be truncated are added to ``truncated``."""
        prompts: list[tuple[str, str, RenderedPrompt]] = []
        for sentence in sentences:
            prompts.extend((template, sentence, render(template, sentence, placeholder)) for template in templates)
        # One tokenizer call for the whole batch (much less host work per batch than one call per prompt).
        encodings = self._tokenize([rendered.text for _, _, rendered in prompts])
        rows: list[list[int]] = []
        placeholder_positions: list[int] = []
        prefix_lengths: list[int] = []
        for index, ((template, sentence, rendered), encoding) in enumerate(zip(prompts, encodings)):
            cut: list[bool] = []
            ids, position, prefix = self._encode_prompt(
                template, sentence, placeholder, rendered, encoding, cut, max_length
            )
            if cut and truncated is not None:
                truncated.add(index // len(templates))
            rows.append(ids)
            placeholder_positions.append(position)
            prefix_lengths.append(prefix)
        return self._collate(rows, placeholder_positions, num_prompts=len(templates), prefix_lengths=prefix_lengths)

    def _tokenize(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids and character offsets of each text (special tokens added, no truncation, no padding)."""
        if not texts:
            return []
        with self._tokenizer_lock:
            # verbose=False: no "sequence length is longer than the specified maximum" warning; preprocess truncates
            # only the sentence itself and reports how many texts it cut.
            encoding = self.tokenizer(
                texts,
                add_special_tokens=True,
                return_offsets_mapping=True,
                truncation=False,
                padding=False,
                verbose=False,
            )
        return [
            (list(ids), [tuple(span) for span in offsets])
            for ids, offsets in zip(encoding["input_ids"], encoding["offset_mapping"])
        ]

    def _encode_prompt(
        self,
        template: str,
        sentence: str,
        placeholder: str | None,
        rendered: RenderedPrompt | None = None,
        encoding: tuple[list[int], list[tuple[int, int]]] | None = None,
        truncated: list[bool] | None = None,
        max_length: int | None = None,
    ) -> tuple[list[int], int, int]:
        """Tokenize one prompt exactly as the whole prompt string at once; truncate only the sentence.

        Args:
            template: The template.
            sentence: The (cleaned) sentence.
            placeholder: The placeholder text, or None without TP.
            rendered: The prompt already rendered from these, if at hand.
            encoding: Its tokenization (ids, offsets), if at hand.
            truncated: Gets ``True`` appended if the sentence had to be truncated.
            max_length: Token budget (default: ``max_seq_length``).

        Returns:
            The ids, the placeholder index (-1 for none) and the length of the cacheable template prefix.
        """
        max_length = max_length or self.max_seq_length
        while True:
            if rendered is None or encoding is None:
                rendered = render(template, sentence, placeholder)
                (encoding,) = self._tokenize([rendered.text])
            ids, offsets, position = self._fix_placeholders(*encoding, rendered)
            if max_length is None or len(ids) <= max_length:
                return ids, position, prefix_length(offsets, rendered.sentence_start, position)
            if not sentence:
                raise ValueError(
                    f"max_seq_length={max_length} is too small for the template: without any sentence the prompt "
                    f"already has {len(ids)} tokens."
                )
            if truncated is not None and not truncated:
                truncated.append(True)
            # Sentence tokens are those lying entirely inside the sentence span; keep as many as fit, cut the
            # sentence text after the last kept token and tokenize again (each round strictly shortens it).
            inside = [
                i
                for i, (start, end) in enumerate(offsets)
                if start >= rendered.sentence_start and end <= rendered.sentence_end and end > start
            ]
            budget = len(inside) - (len(ids) - max_length)
            cut = offsets[inside[budget - 1]][1] if budget > 0 else rendered.sentence_start
            shorter = sentence[: cut - rendered.sentence_start].rstrip()
            sentence = shorter if len(shorter) < len(sentence) else sentence[:-1]
            rendered = encoding = None

    def _fix_placeholders(
        self, ids: list[int], offsets: list[tuple[int, int]], rendered: RenderedPrompt
    ) -> tuple[list[int], list[tuple[int, int]], int]:
        """Find the template's placeholder token; re-encode placeholder text that came from the sentence."""
        placeholder_id = self.placeholder_id
        position = -1
        fixed_ids: list[int] = []
        fixed_offsets: list[tuple[int, int]] = []
        for token_id, span in zip(ids, offsets):
            if token_id == placeholder_id and rendered.sentence_start <= span[0] < rendered.sentence_end:
                # The sentence contains the placeholder's literal text: encode it as ordinary text.
                fixed_ids.extend(self._placeholder_text_ids)
                fixed_offsets.extend([span] * len(self._placeholder_text_ids))
                continue
            if token_id == placeholder_id and position < 0 and span[0] == rendered.placeholder_start:
                position = len(fixed_ids)
            elif token_id == placeholder_id:
                # Placeholder text in the template outside the placeholder slot: ordinary text as well.
                fixed_ids.extend(self._placeholder_text_ids)
                fixed_offsets.extend([span] * len(self._placeholder_text_ids))
                continue
            fixed_ids.append(token_id)
            fixed_offsets.append(span)
        if rendered.placeholder_start >= 0 and position < 0:
            raise ValueError(
                f"The placeholder {self.placeholder!r} was not found as one token in the prompt {rendered.text!r}."
            )
        return fixed_ids, fixed_offsets, position

    def _collate(
        self,
        rows: list[list[int]],
        placeholder_positions: list[int],
        num_prompts: int,
        prefix_lengths: list[int] | None = None,
    ) -> dict[str, Any]:
        lengths = [len(row) for row in rows]
        width = max(lengths, default=0)
        pad_id = self._pad_id
        left = self.padding_side == "left"
        # Padded Python lists first, then one tensor each: far less host work than filling tensors row by row.
        starts = [width - length if left else 0 for length in lengths]
        if left:
            padded = [[pad_id] * start + row for row, start in zip(rows, starts)]
            mask = [[0] * start + [1] * length for length, start in zip(lengths, starts)]
            last = torch.full((len(rows),), width - 1, dtype=torch.long)
        else:
            padded = [row + [pad_id] * (width - length) for row, length in zip(rows, lengths)]
            mask = [[1] * length + [0] * (width - length) for length in lengths]
            last = torch.tensor(lengths, dtype=torch.long) - 1
        input_ids = torch.tensor(padded, dtype=torch.long).reshape(len(rows), width)
        attention_mask = torch.tensor(mask, dtype=torch.long).reshape(len(rows), width)
        placeholder = torch.tensor(
            [position + start if position >= 0 else -1 for position, start in zip(placeholder_positions, starts)],
            dtype=torch.long,
        )
        features: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "placeholder_positions": placeholder,
            "last_positions": last,
            "num_prompts": num_prompts,
        }
        if prefix_lengths is not None:
            groups, rest = group_rows(rows, prefix_lengths, placeholder_positions, starts, self._pad_id)
            features["prefix_groups"] = groups
            features["prefix_rest"] = rest
        return features

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Embed a preprocessed batch at the output layer (see :meth:`embed`) into ``sentence_embedding``.

        Args:
            features: The output of :meth:`preprocess` (moved to the model's device).
            **kwargs: Ignored (accepted for sentence-transformers compatibility).

        Returns:
            ``features`` with ``sentence_embedding`` of shape ``(n_inputs, hidden_size)``.
        """
        features["sentence_embedding"] = self.embed(features)[:, 0]
        return features

    def forward_settings(self) -> ForwardSettings:
        """The module's current forward settings (TP band and Contrastive Prompting)."""
        return ForwardSettings(
            tp_start=self.tp_start,
            tp_exit=self.tp_exit,
            cp_layer=self.cp_layer,
            cp_alpha=self.cp_alpha,
            cp_mode=self.cp_mode,
            cp_prompt=self.cp_prompt,
        )

    def embed(self, features: dict[str, Any], layers: int | Sequence[int] | str | None = None) -> torch.Tensor:
        """The embeddings of a preprocessed batch at one, several or all layers: the one path every embedding of
        the package takes (``encode``, the tuner and the evaluators).

        The forward applies the interventions of ``features["settings"]`` (Token Prepending, Contrastive Prompting:
        :mod:`sentence_transformers_tp.interventions`), stops at the deepest requested layer, and, in inference
        (:meth:`prefix_cache_active`), runs every row on top of its template prefix's cached keys/values. With
        several templates per input (MetaEOL, ensembles) the embedding is the mean of their last-token states.

        Args:
            features: The output of :meth:`preprocess`.
            layers: None (the module's ``output_layer``, or the task's from ``task_settings``), ``"all"`` (``0 .. num_layers``), one layer or a list, in
                Hugging Face ``hidden_states`` indexing.

        Returns:
            ``(n_inputs, n_layers, hidden_size)`` float32 embeddings, layers in the requested order.
        """
        settings: ForwardSettings = features.get("settings") or self.forward_settings()
        capture = capture_layers(layers, features.get("output_layer", self.output_layer), self.num_layers)
        input_ids = features["input_ids"]
        num_prompts = int(features.get("num_prompts", 1))
        if input_ids.shape[0] == 0:
            dim = self.get_embedding_dimension()
            return torch.zeros((0, len(capture), dim), dtype=torch.float32, device=input_ids.device)
        auxiliary = None
        if settings.cp_enabled:
            if "auxiliary" not in features:
                raise ValueError("These features were not prepared for Contrastive Prompting: preprocess them again.")
            auxiliary = self._run_rows(features["auxiliary"], settings.auxiliary_plan())
            auxiliary = auxiliary.repeat_interleave(num_prompts, dim=0)
        states = self._run_rows(features, settings.plan(capture, auxiliary)).float()
        if num_prompts > 1:
            states = states.view(-1, num_prompts, *states.shape[1:]).mean(1)
        return states

    def prefix_cache_active(self, depth: int | None = None) -> bool:
        """Whether a forward now would use the prefix cache.

        It is used for inference, i.e. under ``torch.inference_mode()`` (as ``SentenceTransformer.encode`` and
        everything built on it runs), with the backbone in eval mode, ``prefix_cache`` on, a backbone that supports it
        and a forward that runs at least one decoder layer. Other calls (training, or a plain ``torch.no_grad()``
        forward) run every prompt whole, exactly as without the cache.

        Args:
            depth: Number of decoder layers the forward runs (defaults to what the output layer needs).

        Returns:
            True if the cache is used.
        """
        if not self.prefix_cache or not torch.is_inference_mode_enabled() or self.model.training:
            return False
        if self._prefix_cache_problem is not None:
            logger.warning_once(
                f"The prefix KV cache is off for {type(self.model).__name__}: {self._prefix_cache_problem}. "
                "Embeddings are computed without it (same results, slower for long templates)."
            )
            return False
        if depth is None:
            depth = resolve_output_layer(self.output_layer, self.num_layers)
        return depth > 0

    def clear_prefix_cache(self) -> None:
        """Drop the cached prefix keys/values (they are rebuilt on demand)."""
        self._prefix_kv.clear()

    def _run_rows(self, features: dict[str, Any], plan: Plan) -> torch.Tensor:
        """Run every row of preprocessed features through the engine with ``plan``; each prefix group runs on top of
        its cached prefix (built on first use) when the cache is active, other rows as they are.

        Args:
            features: Rows from :meth:`preprocess` (the main or the auxiliary prompts).
            plan: The engine plan (interventions restricted per sub-batch with :meth:`Plan.take`).

        Returns:
            Per row in batch order: the captured layer states ``(rows, n_capture, hidden)``, or the captured attention
            inputs ``(rows, d)`` for an auxiliary plan.
        """
        device = self.model.device
        input_ids = features["input_ids"].to(device)
        attention = plan.capture_attention_input is not None
        depth = plan.capture_attention_input + 1 if attention else max(plan.capture)

        def run(rows: torch.Tensor | None, **inputs: Any) -> torch.Tensor:
            captured = engine.run(self.model, self._layers, plan if rows is None else plan.take(rows), **inputs)
            return captured.attention_input if attention else captured.layers

        if "prefix_groups" not in features or not self.prefix_cache_active(depth):
            return run(
                None,
                input_ids=input_ids,
                attention_mask=features["attention_mask"].to(device),
                placeholder_positions=features["placeholder_positions"].to(device),
                last_positions=features["last_positions"].to(device),
            )
        groups: list[PrefixGroup] = features["prefix_groups"]
        context = self._prefix_kv.sync(self.model)
        results: list[tuple[torch.Tensor, torch.Tensor]] = []
        for group in groups:
            # The forward runs decoder layers 0..depth-1: those are the prefix layers needed.
            entry = self._prefix_kv.get_or_build(self.model, self._layers, group.prefix_ids, depth, context, device)
            group = group.to(device)
            n, p = group.input_ids.shape[0], group.prefix_length
            mask = group.attention_mask
            states = run(
                group.rows,
                input_ids=group.input_ids,
                attention_mask=torch.cat([mask.new_ones((n, p)), mask], dim=1),
                placeholder_positions=group.placeholder_positions,
                last_positions=group.last_positions,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0) + p,
                cache=entry.batch_cache(n, self.model.config),
            )
            results.append((group.rows, states))
        rest = features["prefix_rest"]
        if rest:
            rows = torch.tensor(rest, dtype=torch.long, device=device)
            states = run(
                rows,
                input_ids=input_ids[rows],
                attention_mask=features["attention_mask"].to(device)[rows],
                placeholder_positions=features["placeholder_positions"].to(device)[rows],
                last_positions=features["last_positions"].to(device)[rows],
            )
            results.append((rows, states))
        first = results[0][1]
        out = first.new_empty((input_ids.shape[0], *first.shape[1:]))
        for rows, states in results:
            out[rows.to(out.device)] = states.to(out.device)
        return out

    @classmethod
    def load_config(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        config_filename: str | None = None,
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
    ) -> dict[str, Any]:
        """Read the saved module config, refusing a missing or corrupted one instead of falling back to defaults.

        Args:
            model_name_or_path: The saved model (folder or hub id).
            subfolder: Sub-folder of the module.
            config_filename: Config file name (default ``sentence_bert_config.json``).
            token: Hub token.
            cache_folder: Hub cache folder.
            revision: Hub revision.
            local_files_only: Do not use the network.

        Returns:
            The config.

        Raises:
            ValueError: If the config is missing, is not valid JSON, or holds no TP settings.
        """
        filename = config_filename or cls.config_file_name
        where = os.path.join(str(model_name_or_path), subfolder, filename)
        advice = "Re-save the model, or rebuild it from its backbone (st-tp build or TokenPrependingTransformer(...))."
        try:
            config = super().load_config(
                model_name_or_path,
                subfolder=subfolder,
                config_filename=filename,
                token=token,
                cache_folder=cache_folder,
                revision=revision,
                local_files_only=local_files_only,
            )
        except json.JSONDecodeError as error:
            raise ValueError(f"{where} is not valid JSON ({error}). {advice}") from error
        if not config or "template" not in config:
            raise ValueError(
                f"{where} is missing or holds no TokenPrependingTransformer settings ('template', 'tp_start', ...), "
                f"so the model cannot be rebuilt as it was saved. {advice}"
            )
        return config

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Save backbone, tokenizer (with the placeholder) and TP config; declare the package requirement.

        Args:
            output_path: The folder.
            *args: Ignored.
            safe_serialization: Save weights as safetensors. Defaults to True.
            **kwargs: Ignored.
        """
        super().save(output_path, *args, safe_serialization=safe_serialization, **kwargs)
        add_requirement(output_path)

    def get_config_dict(self) -> dict[str, Any]:
        """The config saved in ``sentence_bert_config.json`` (Transformer keys plus the TP settings)."""
        config = super().get_config_dict()
        for key in ("query_template", "document_template", "demonstrations", "task_settings"):
            if not config.get(key):
                config.pop(key, None)
        return config

    def __repr__(self) -> str:
        settings = {
            "backbone": self.backbone_name,
            "architecture": self.model.__class__.__name__,
            "template": self.template,
            "tp_start": self.tp_start,
            "tp_exit": self.tp_exit,
            "tp_enabled": self.tp_enabled,
            "output_layer": self.output_layer,
            "num_layers": self.num_layers,
            "placeholder": self.placeholder,
            "max_seq_length": self.max_seq_length,
            "prefix_cache": self.prefix_cache,
        }
        if self.demonstrations:
            settings["demonstrations"] = self.demonstrations
        if self.cp_layer is not None:
            settings.update(cp_layer=self.cp_layer, cp_alpha=self.cp_alpha, cp_mode=self.cp_mode)
        if self.task_settings:
            settings["task_settings"] = self.task_settings
        if self.query_template is not None:
            settings["query_template"] = self.query_template
        if self.document_template is not None:
            settings["document_template"] = self.document_template
        return f"TokenPrependingTransformer({settings})"

    def model_slug(self) -> str:
        """A short unique name of backbone + template + TP settings, e.g. ``smollm2-prompteol-tp1-7-L-1``."""
        backbone = os.path.basename(os.path.normpath(str(self.backbone_name))) or "model"
        backbone = re.sub(r"\.gguf$", "", backbone, flags=re.IGNORECASE)
        backbone = re.sub(r"[^A-Za-z0-9._-]+", "-", backbone).strip("-").lower() or "model"
        template = template_label(self.template)
        extra = [template_label(t) for t in (self.query_template, self.document_template) if t is not None]
        if extra:
            template = "-".join([template, *extra])
        if self.demonstrations:
            payload = json.dumps(self.demonstrations)
            template += "-icl" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:6]
        if self.task_settings:
            payload = json.dumps(self.task_settings, sort_keys=True)
            template += "-tasks" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:6]
        tp = f"tp{self.tp_start}-{self.tp_exit}" if self.tp_enabled else "notp"
        cp = f"-cp{self.cp_layer}{self.cp_mode}{self.cp_alpha:g}" if self.cp_layer is not None else ""
        return f"{backbone}-{template}-{tp}{cp}-L{self.output_layer}"

    # ------------------------------------------------------------------ pickling (multi-process pools)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_tokenizer_lock", None)
        # The prefix cache holds device tensors and a lock; it is rebuilt on demand after unpickling.
        state.pop("_prefix_kv", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._tokenizer_lock = threading.Lock()
        self._prefix_kv = PrefixKVCache()


#: Families whose SDPA attention gave wrong, batch-dependent embeddings on CUDA (Gemma-3-270M, transformers 5.23;
#: docs/tuning.md): eager attention is their default unless the caller chooses one.
_EAGER_ATTENTION_FAMILIES = {"gemma2", "gemma3", "gemma3_text"}


def _with_safe_attention(
    model_name_or_path: str, model_kwargs: dict[str, Any] | None, config_kwargs: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Default ``attn_implementation="eager"`` for the families in :data:`_EAGER_ATTENTION_FAMILIES`."""
    if model_kwargs and "attn_implementation" in model_kwargs:
        return model_kwargs
    try:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(model_name_or_path, **(config_kwargs or {})).model_type
    except Exception:  # the real load reports any problem with the checkpoint
        return model_kwargs
    if model_type not in _EAGER_ATTENTION_FAMILIES:
        return model_kwargs
    logger.info(f"Using eager attention for {model_type} (SDPA gave wrong, batch-dependent embeddings on CUDA).")
    return {**(model_kwargs or {}), "attn_implementation": "eager"}


#: A prompt ``"<prefix><task>"`` selects ``task_settings[task]`` (how MTEB, which passes prompts by task name or type,
#: reaches per-task settings).
TASK_PROMPT_PREFIX = "st-tp-task:"
#: What a ``task_settings`` entry may set.
TASK_SETTING_KEYS = (
    "template",
    "demonstrations",
    "tp_start",
    "tp_exit",
    "output_layer",
    "cp_layer",
    "cp_alpha",
    "cp_mode",
    "max_seq_length",
)


@dataclass(frozen=True)
class TaskProfile:
    """The resolved settings of one task (None / missing: the module's own).

    Attributes:
        templates: Template strings.
        overrides: Forward settings (``tp_start``, ``tp_exit``, ``cp_*``).
        output_layer: Output layer.
        max_seq_length: Token budget of a prompt.
    """

    templates: tuple[str, ...] | None
    overrides: dict[str, Any]
    output_layer: int | None
    max_seq_length: int | None


def check_task_settings(task_settings: Any) -> dict[str, dict[str, Any]]:
    """Validate the shape of ``task_settings`` (values are checked against the backbone later).

    Args:
        task_settings: ``{task: {setting: value}}`` (see :class:`TokenPrependingTransformer`), or None.

    Returns:
        The settings in their config form (templates and demonstrations normalised).

    Raises:
        ValueError: Naming the task and the setting that is wrong.
    """
    if task_settings is None:
        return {}
    if not isinstance(task_settings, dict):
        raise ValueError(f"task_settings must be a dict of task -> settings, got {type(task_settings).__name__}.")
    out: dict[str, dict[str, Any]] = {}
    for task, values in task_settings.items():
        if not isinstance(task, str) or not task or not isinstance(values, dict):
            raise ValueError(f"task_settings[{task!r}] must map a task name to a dict of settings, got {values!r}.")
        unknown = sorted(set(values) - set(TASK_SETTING_KEYS))
        if unknown:
            raise ValueError(f"task_settings[{task!r}] has unknown settings {unknown}; allowed: {TASK_SETTING_KEYS}.")
        for key in ("tp_start", "tp_exit", "output_layer", "max_seq_length"):
            value = values.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"task_settings[{task!r}][{key!r}] must be an integer, got {value!r}.")
        if values.get("max_seq_length") is not None and values["max_seq_length"] < 1:
            raise ValueError(f"task_settings[{task!r}]['max_seq_length'] must be positive.")
        entry = {k: (_as_config_value(v) if k == "template" else v) for k, v in values.items()}
        if "demonstrations" in entry:
            # Parsed here so a bad entry fails early; stored in the config form ([] = none, not the module's).
            entry["demonstrations"] = to_config(parse_demonstrations(entry["demonstrations"]))
        out[task] = entry
    return out


def _preset_defaults(backbone: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]] | None]:
    """The tuned combination (constructor arguments, or ``{}``) and task settings (or None) of the backbone's
    preset."""
    from sentence_transformers_tp.presets import find_preset_for_backbone

    preset = find_preset_for_backbone(str(backbone))
    if preset is None:
        return {}, None
    settings, tasks = preset.combination_settings(), preset.task_settings_config()
    if settings:
        logger.info(f"Using the tuned combination of the {preset.name!r} preset: {settings}.")
    if tasks:
        logger.info(f"Using the task settings of the {preset.name!r} preset for {', '.join(sorted(tasks))}.")
    return settings or {}, tasks


def _as_config_value(template: str | Sequence[str]) -> str | list[str]:
    if isinstance(template, str):
        return template
    return list(template)


def template_label(template: str | Sequence[str]) -> str:
    """A short label for a template spec: the built-in name, or ``custom-<hash>`` for user templates.

    Args:
        template: A template spec as accepted by :func:`~sentence_transformers_tp.templates.resolve_templates`.

    Returns:
        The label.
    """
    names = template_names(template)
    if names is not None:
        return "+".join(names)
    payload = json.dumps(template if isinstance(template, str) else list(template))
    return "custom-" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:8]


def add_requirement(output_path: str) -> None:
    """Declare ``sentence-transformers-tp`` in ``config_sentence_transformers.json`` so that loading a saved model
    without the package installed fails with an install hint.

    Args:
        output_path: A saved model folder (nothing happens if it has no ``config_sentence_transformers.json``).
    """
    path = os.path.join(output_path, "config_sentence_transformers.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    config.setdefault("requirements", {})[PACKAGE_NAME] = {
        "specifier": f">={FORMAT_VERSION}",
        "reason": "the model uses the TokenPrependingTransformer module of sentence-transformers-tp",
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
