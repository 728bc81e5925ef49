"""``TokenPrependingTransformer``: the sentence-transformers input module that embeds text with Token Prepending."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import torch
from sentence_transformers.base.modules import Transformer
from transformers.utils import logging

from sentence_transformers_tp.backbones import quiet_unused_head_report, resolve_backbone
from sentence_transformers_tp.engine import (
    Plan,
    capture_layers,
    check_decoder_only,
    find_decoder_layers,
    resolve_output_layer,
)
from sentence_transformers_tp.inputs import Features, check_texts
from sentence_transformers_tp.interventions import ForwardSettings
from sentence_transformers_tp.model_card import install_model_card_data
from sentence_transformers_tp.prefix_cache import PrefixKVCache, unsupported_reason
from sentence_transformers_tp.presets import get_preset, resolve_settings
from sentence_transformers_tp.prompting import Prompter, add_placeholder_token
from sentence_transformers_tp.runner import plan_depth, run_rows
from sentence_transformers_tp.saved import hub_options
from sentence_transformers_tp.saving import (
    REBUILD_ADVICE,
    add_requirement,
    check_saved_config,
    load_arguments,
    with_safe_attention,
)
from sentence_transformers_tp.setting_scope import TASK_PROMPT_PREFIX, SettingScope
from sentence_transformers_tp.settings import MODULE_KEYS, TASK_SETTING_KEYS, Setting, template_label
from sentence_transformers_tp.templates import DEFAULT_PLACEHOLDER, clean_sentence, resolve_templates
from sentence_transformers_tp.truncation import record_truncation, truncation_message

__all__ = [
    "TASK_PROMPT_PREFIX",
    "TASK_SETTING_KEYS",
    "TokenPrependingTransformer",
    "template_label",
]

logger = logging.get_logger(__name__)

_BATCH_INDEX_NOTE = (
    "(The index counts within the failing batch: SentenceTransformer.encode sorts inputs by length first; "
    "sentence_transformers_tp.inputs.check_texts(your_inputs) names the index in your own list.)"
)

_TEXT_MODALITY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}

#: The module arguments that are not a :class:`Setting` and that a saved folder restores, with their defaults.
_MODULE_DEFAULTS = {
    "placeholder": DEFAULT_PLACEHOLDER,
    "clean_sentences": True,
    "padding_side": "left",
    "prefix_cache": True,
}


class TokenPrependingTransformer(SettingScope, Transformer):
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
        layer_span: Consecutive layers ending at ``output_layer`` whose last-token states are averaged (float32)
            into the embedding, starting at layer 1 or later. Defaults to 1 (the output layer alone).
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
            ``tp_exit``, ``output_layer``, ``layer_span``, ``cp_layer``, ``cp_alpha``, ``cp_mode``, ``max_seq_length``;
            the others stay the module's. ``query_template`` / ``document_template`` are shorthands for ``{"query":
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
            :func:`sentence_transformers_tp.cache_store.default_cache_dir`.
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
        "layer_span",
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

    def __init__(
        self,
        model_name_or_path: str = "smollm2",
        template: str | Sequence[str] | None = None,
        *,
        tp_start: int | None = None,
        tp_exit: int | None = None,
        output_layer: int | None = None,
        layer_span: int | None = None,
        demonstrations: Any = None,
        cp_layer: int | None = None,
        cp_alpha: float | None = None,
        cp_mode: str | None = None,
        cp_prompt: str | None = None,
        placeholder: str | None = None,
        query_template: str | Sequence[str] | None = None,
        document_template: str | Sequence[str] | None = None,
        task_settings: dict[str, dict[str, Any]] | None = None,
        clean_sentences: bool | None = None,
        padding_side: str | None = None,
        backbone_name: str | None = None,
        cache_dir: str | None = None,
        max_seq_length: int | None = None,
        prefix_cache: bool | None = None,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        given = {key: value for key, value in locals().items() if key in self.config_keys}
        given.update({key: kwargs.pop(key) for key in Transformer.config_keys if key in kwargs})
        hub = hub_options(config_kwargs, model_kwargs, processor_kwargs)
        resolved = resolve_settings(model_name_or_path, given, keys=self.config_keys, hub=hub)
        arguments = {**_MODULE_DEFAULTS, **{k: v for k, v in resolved.arguments.items() if v is not None}}
        if arguments["padding_side"] not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {arguments['padding_side']!r}.")
        if not isinstance(arguments["placeholder"], str) or not arguments["placeholder"].strip():
            raise ValueError(f"placeholder must be a non-empty string, got {arguments['placeholder']!r}.")
        self.query_template = _as_config_value(arguments.get("query_template"))
        self.document_template = _as_config_value(arguments.get("document_template"))
        # Everything that can be checked without the backbone is checked before its (slow) load.
        early = Setting.from_config({k: v for k, v in arguments.items() if k in MODULE_KEYS})
        early.validate(None)
        self.configure_tasks(early, arguments.get("task_settings"))

        self.backbone_name = arguments.get("backbone_name") or model_name_or_path
        path = resolve_backbone(model_name_or_path, cache_dir=cache_dir)
        model_kwargs = with_safe_attention(path, model_kwargs, config_kwargs)
        for key in ("modality_config", "module_output_name", "unpad_inputs"):
            arguments.pop(key, None)
        transformer_kwargs = {k: v for k, v in arguments.items() if k in Transformer.config_keys}
        with quiet_unused_head_report():  # the causal LM's head is not used: no "lm_head UNEXPECTED" report
            super().__init__(
                path,
                model_kwargs=model_kwargs,
                processor_kwargs=processor_kwargs,
                config_kwargs=config_kwargs,
                max_seq_length=max_seq_length,
                modality_config=_TEXT_MODALITY,
                module_output_name="sentence_embedding",
                unpad_inputs=False,
                **transformer_kwargs,
                **kwargs,
            )
        if self.tokenizer is None:
            raise ValueError(f"The backbone {model_name_or_path!r} has no text tokenizer.")
        check_decoder_only(self.model)
        self._layers = find_decoder_layers(self.model)
        self.placeholder = arguments["placeholder"]
        self.placeholder_id = add_placeholder_token(self.tokenizer, self.model, self.placeholder)
        self.prompting = Prompter(self.tokenizer, self.placeholder, self.placeholder_id, arguments["padding_side"])
        self.clean_sentences = bool(arguments["clean_sentences"])
        self.prefix_cache = bool(arguments["prefix_cache"])
        self._prefix_kv = PrefixKVCache()
        self._prefix_cache_problem: str | None = unsupported_reason(self.model)
        self.set_setting(resolved.setting(self.num_layers))

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        backend: str = "torch",
        init_defaults: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TokenPrependingTransformer:
        """Load a saved module (how ``SentenceTransformer(path)`` builds it), as ``Transformer.load`` does: the saved
        config (:meth:`load_config`) becomes the constructor's arguments (:func:`~sentence_transformers_tp.saving.
        load_arguments`: keys this version does not know are dropped with a warning; the caller's loader keyword
        arguments win over the hub arguments, which win over the saved ones). The arguments are those of
        ``Transformer.load``; ``**kwargs`` are ignored.

        Returns:
            The module.
        """
        config = cls.load_config(
            model_name_or_path,
            subfolder=subfolder,
            token=token,
            cache_folder=cache_folder,
            revision=revision,
            local_files_only=local_files_only,
        )
        hub = {
            "subfolder": subfolder,
            "token": token,
            "cache_dir": cache_folder,
            "revision": revision,
            "local_files_only": local_files_only,
            "trust_remote_code": trust_remote_code,
        }
        loader = {"model_kwargs": model_kwargs, "processor_kwargs": processor_kwargs, "config_kwargs": config_kwargs}
        arguments = load_arguments(config, cls.config_keys, hub, loader, init_defaults)
        arguments["backend"] = backend
        return cls(model_name_or_path=model_name_or_path, **arguments)

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
        preset = get_preset(name_or_path)
        template = template or preset.default_template
        settings = {**preset.settings(template), **{k: v for k, v in kwargs.items() if v is not None}}
        model_name_or_path = settings.pop("model_name_or_path", preset.backbone)
        settings.setdefault("backbone_name", preset.backbone)
        return cls(model_name_or_path, template, **settings)

    # ------------------------------------------------------------------ the setting

    @property
    def num_layers(self) -> int:
        """Number of decoder layers of the backbone."""
        return len(self._layers)

    @property
    def decoder_layers(self) -> Sequence[torch.nn.Module]:
        """The backbone's decoder layers, in order."""
        return self._layers

    @property
    def padding_side(self) -> str:
        """``"left"`` or ``"right"``: where prompts are padded."""
        return self.prompting.padding_side

    @padding_side.setter
    def padding_side(self, value: str) -> None:
        if value not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {value!r}.")
        self.prompting.padding_side = value

    @property
    def max_seq_length(self) -> int | None:
        """The module's token budget of a prompt (longer inputs have their sentence truncated)."""
        return self.tokenizer.model_max_length if self.tokenizer is not None else None

    @max_seq_length.setter
    def max_seq_length(self, value: int | None) -> None:
        if value is not None and getattr(self, "prompting", None) is not None:
            Setting(max_seq_length=value).validate(None)
            self.check_budget(value)
        self.tokenizer.model_max_length = value

    def check_budget(self, max_length: int) -> None:
        """Check that a token budget holds every template of the module and its task settings with an empty
        sentence.

        Args:
            max_length: The budget.

        Raises:
            ValueError: If a prompt has more tokens than ``max_length`` even without a sentence.
        """
        tasks = self.tasks_on(self.own_setting).values()
        for setting in [self.own_setting, *(setting for setting in tasks if setting.max_seq_length is None)]:
            placeholder = self.placeholder if setting.tp_enabled else None
            for template in setting.templates():
                self.prompting.encode_prompt(template, "", placeholder, max_length=max_length)

    # ------------------------------------------------------------------ sentence-transformers API

    def on_model_ready(self, model: Any) -> None:
        """Give the owning model a unique name (for MTEB result folders) and the TP model card."""
        install_model_card_data(model, self)
        # MTEB picks prompts by task name / type: a marker prompt routes those tasks to their task_settings.
        prompts = getattr(model, "prompts", None)
        if isinstance(prompts, dict):
            for task in self.task_settings:
                if task.lower() not in ("query", "document"):
                    prompts.setdefault(task, TASK_PROMPT_PREFIX + task)

    def preprocess(
        self,
        inputs: Sequence[str],
        prompt: str | None = None,
        task: str | None = None,
        *,
        setting: Setting | None = None,
        settings: ForwardSettings | None = None,
        templates: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Render every input into its prompt(s) and tokenize.

        Args:
            inputs: The sentences.
            prompt: See :meth:`call_setting`.
            task: See :meth:`call_setting`.
            setting: The setting to prepare for (templates, TP, CP, output layer, token budget); defaults to the
                task's (:meth:`task_settings_for`).
            settings: Forward settings (TP band, CP) replacing those of the setting (older form of ``setting``).
            templates: Resolved template strings replacing those of :meth:`templates_for` (older form of
                ``setting``).
            **kwargs: Ignored (accepted for sentence-transformers compatibility).

        Returns:
            ``input_ids``, ``attention_mask`` (``(n_inputs * n_templates, seq_len)``), ``placeholder_positions``
            (-1 without TP), ``last_positions``, ``num_prompts`` (templates per input), ``settings``,
            ``output_layer``, ``layer_span``, for the prefix cache ``prefix_groups`` (rows grouped by their template
            prefix, with the remainders after it; see :func:`~sentence_transformers_tp.prefix_cache.group_rows`) and
            ``prefix_rest`` (rows without one), and with CP ``auxiliary``: the same keys for the auxiliary prompt (one
            row per input).

        Raises:
            ValueError: If an input is not a string (the message names its index), a setting is invalid, or the
                token budget is too small to hold a template.
        """
        check_texts(inputs, context=_BATCH_INDEX_NOTE)
        setting, call_templates = self.call_setting(prompt, task, setting)
        templates = call_templates if templates is None else templates
        if settings is not None:
            setting = setting.replace(**dataclasses.asdict(settings))
        setting.validate(self.num_layers)
        forward = setting.forward_settings()
        max_length = setting.max_seq_length or self.max_seq_length
        sentences = [clean_sentence(text) if self.clean_sentences else text for text in inputs]
        placeholder = self.placeholder if forward.tp_enabled else None
        templates = tuple(templates)
        truncated: set[int] = set()
        features = Features(self.prompting.prepare(sentences, templates, placeholder, truncated, max_length))
        features["settings"] = forward
        features["output_layer"] = setting.output_layer
        features["layer_span"] = setting.layer_span
        if forward.cp_enabled:
            cp_templates = resolve_templates(forward.cp_prompt)
            features["auxiliary"] = self.prompting.prepare(sentences, cp_templates, placeholder, truncated, max_length)
        # Counted by an active report_truncation block (one report per block), else one report for this call with
        # the count (instead of transformers' per-tokenizer "indexing errors" warning).
        if not record_truncation(len(truncated), len(inputs), max_length) and truncated:
            logger.warning(truncation_message(len(truncated), len(inputs), [max_length]))
        return features

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Embed a preprocessed batch at the output layer (see :meth:`embed`) into ``sentence_embedding``.

        Args:
            features: The output of :meth:`preprocess` (moved to the model's device).
            **kwargs: Ignored (accepted for sentence-transformers compatibility).

        Returns:
            ``features`` with ``sentence_embedding`` of shape ``(n_inputs, hidden_size)``, in the backbone's dtype
            (as a stock ``Transformer`` + ``Pooling`` gives: float16 for ``.half()``, bfloat16 for a bf16 model).
        """
        features["sentence_embedding"] = self.embed(features)[:, 0].to(self.model.dtype)
        return features

    def embed(self, features: dict[str, Any], layers: int | Sequence[int] | str | None = None) -> torch.Tensor:
        """The embeddings of a preprocessed batch at one, several or all layers: the one path every embedding of
        the package takes (``encode``, the tuner and the evaluators).

        The forward applies the interventions of ``features["settings"]`` (:mod:`~sentence_transformers_tp.interventions`),
        stops at the deepest requested layer and, in inference (:meth:`prefix_cache_active`), runs rows on top of their
        template prefix's cached keys/values. An ensemble's embedding is the mean over its templates; a ``layer_span``
        above 1 (``layers=None`` only) averages the span's layers (:func:`~sentence_transformers_tp.settings.span_mean`).

        Args:
            features: The output of :meth:`preprocess`.
            layers: None (the features' output layer and span: one embedding per input), ``"all"``
                (``0 .. num_layers``), one layer or a list, in ``hidden_states`` indexing (never span-averaged).

        Returns:
            ``(n_inputs, n_layers, hidden_size)`` float32 embeddings, layers in the requested order (:meth:`forward`
            casts to the model's dtype).
        """
        settings: ForwardSettings = features.get("settings") or self.setting.forward_settings()
        span = layers is None
        capture = self.span_layers(features) if span else capture_layers(layers, -1, self.num_layers)
        input_ids = features["input_ids"]
        num_prompts = int(features.get("num_prompts", 1))
        if input_ids.shape[0] == 0:
            dim = self.get_embedding_dimension()
            return torch.zeros((0, 1 if span else len(capture), dim), dtype=torch.float32, device=input_ids.device)
        auxiliary = None
        if settings.cp_enabled:
            if "auxiliary" not in features:
                raise ValueError("These features were not prepared for Contrastive Prompting: preprocess them again.")
            auxiliary = self._run_rows(features["auxiliary"], settings.auxiliary_plan())
            auxiliary = auxiliary.repeat_interleave(num_prompts, dim=0)
        states = self._run_rows(features, settings.plan(capture, auxiliary)).float()
        if num_prompts > 1:
            states = states.view(-1, num_prompts, *states.shape[1:]).mean(1)
        if span and len(capture) > 1:
            states = states.mean(1, keepdim=True)
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
            depth = resolve_output_layer(self.setting.output_layer, self.num_layers)
        return depth > 0

    @property
    def prefix_kv(self) -> PrefixKVCache:
        """The template-prefix key/value cache (for statistics: ``len()``, ``nbytes``)."""
        return self._prefix_kv

    def clear_prefix_cache(self) -> None:
        """Drop the cached prefix keys/values (they are rebuilt on demand)."""
        self._prefix_kv.clear()

    def _run_rows(self, features: dict[str, Any], plan: Plan) -> torch.Tensor:
        """Run rows through the engine (:func:`~sentence_transformers_tp.runner.run_rows`), on their cached template
        prefixes when :meth:`prefix_cache_active`."""
        cache = self._prefix_kv if self.prefix_cache_active(plan_depth(plan)) else None
        return run_rows(self.model, self._layers, features, plan, cache)

    @classmethod
    def load_config(
        cls, model_name_or_path: str, subfolder: str = "", config_filename: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Read the saved module config (arguments as ``Transformer.load_config``: ``token``, ``cache_folder``,
        ``revision``, ``local_files_only`` go through ``**kwargs``), refusing a missing or corrupted one instead of
        falling back to defaults.

        Returns:
            The config.

        Raises:
            ValueError: If the config is missing, is not valid JSON, or holds no TP settings.
        """
        filename = config_filename or cls.config_file_name
        where = os.path.join(str(model_name_or_path), subfolder, filename)
        try:
            config = super().load_config(model_name_or_path, subfolder=subfolder, config_filename=filename, **kwargs)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where} is not valid JSON ({error}). {REBUILD_ADVICE}") from error
        check_saved_config(config, where)
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
        """The config saved in ``sentence_bert_config.json``: Transformer keys plus the active setting (the module's
        own, or that of this thread's :meth:`using` block, as every description of the module)."""
        config = super().get_config_dict()
        config.update(self.setting.to_config(MODULE_KEYS))
        for key in ("query_template", "document_template", "demonstrations", "task_settings"):
            if not config.get(key):
                config.pop(key, None)
        return {k: v for k, v in config.items() if k != "layer_span" or v != 1}  # older configs save unchanged

    def __repr__(self) -> str:
        settings = {
            "backbone": self.backbone_name,
            "architecture": self.model.__class__.__name__,
            "template": self.template,
            "tp_start": self.tp_start,
            "tp_exit": self.tp_exit,
            "tp_enabled": self.tp_enabled,
            "output_layer": self.output_layer,
            **({"layer_span": self.layer_span} if self.layer_span != 1 else {}),
            "num_layers": self.num_layers,
            "placeholder": self.placeholder,
            "max_seq_length": self.max_seq_length,
            "prefix_cache": self.prefix_cache,
        }
        if self.cp_layer is not None:
            settings.update(cp_layer=self.cp_layer, cp_alpha=self.cp_alpha, cp_mode=self.cp_mode)
        for key in ("demonstrations", "task_settings", "query_template", "document_template"):
            if getattr(self, key):
                settings[key] = getattr(self, key)
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
        span = f"-span{self.layer_span}" if self.layer_span != 1 else ""
        return f"{backbone}-{template}-{tp}{cp}-L{self.output_layer}{span}"

    # ------------------------------------------------------------------ pickling (multi-process pools)

    @property
    def _tokenizer_lock(self) -> Any:
        """The lock that serialises tokenizer calls (the prompter's)."""
        return self.prompting.lock

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        # The prefix cache holds device tensors and a lock; it is rebuilt on demand after unpickling.
        state.pop("_prefix_kv", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._prefix_kv = PrefixKVCache()


def _as_config_value(template: str | Sequence[str] | None) -> str | list[str] | None:
    if template is None or isinstance(template, str):
        return template
    return list(template)
