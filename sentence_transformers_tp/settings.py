"""``Setting``: how a text is embedded on one loaded backbone, and ``TaskSettings``: a ``Setting`` per task.

A :class:`Setting` names everything that decides an embedding besides the backbone: the template spec (a built-in
name, a user template or an ensemble), the in-context demonstrations, the Token Prepending band, Contrastive
Prompting, the output layer (or a span of layers ending there, averaged: :func:`span_mean` gives that mean at every
layer from all-layer states) and the token budget. It is frozen and hashable, validated in one place
(:meth:`Setting.validate`), and has one config form (:meth:`Setting.to_config` / :meth:`Setting.from_config`) that
is exactly what saved models (``sentence_bert_config.json``) and presets (``combination``, ``task_settings``, the
layer keys of a template entry) hold. The engine's view of it is :class:`~sentence_transformers_tp.interventions.
ForwardSettings` (:meth:`Setting.forward_settings`).

:class:`~sentence_transformers_tp.module.TokenPrependingTransformer` embeds under a ``Setting`` (its own, or one given
with ``module.using(setting)``), and the tuners list ``Setting`` objects.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from sentence_transformers_tp.contrastive import CP_MODES, CP_PROMPT
from sentence_transformers_tp.demonstrations import Demonstration, parse_demonstrations, to_config
from sentence_transformers_tp.interventions import ForwardSettings
from sentence_transformers_tp.templates import (
    layer_label,
    resolve_templates,
    template_label,
    template_names,
    with_demonstrations,
)

__all__ = [
    "COMBINATION_KEYS",
    "CP_KEYS",
    "LAYER_KEYS",
    "MODULE_KEYS",
    "TASK_SETTING_KEYS",
    "Setting",
    "TaskSettings",
    "span_mean",
    "template_label",
]

#: The layer keys of a preset template entry.
LAYER_KEYS = ("tp_start", "tp_exit", "output_layer")
#: The Contrastive Prompting keys a preset or a task may set (the auxiliary prompt is the module's).
CP_KEYS = ("cp_layer", "cp_alpha", "cp_mode")
#: The keys of a preset's tuned ``combination`` (``layer_span`` is written only when it is not 1).
COMBINATION_KEYS = ("template", "demonstrations", *LAYER_KEYS, "layer_span", *CP_KEYS)
#: What a ``task_settings`` entry may set.
TASK_SETTING_KEYS = ("template", "demonstrations", *LAYER_KEYS, "layer_span", *CP_KEYS, "max_seq_length")
#: The setting keys of a saved module config (``sentence_bert_config.json``); the module's ``max_seq_length`` is
#: saved by sentence-transformers itself.
MODULE_KEYS = (*COMBINATION_KEYS, "cp_prompt")

_INT_KEYS = ("tp_start", "tp_exit", "output_layer", "layer_span", "cp_layer", "max_seq_length")

_States = TypeVar("_States", np.ndarray, torch.Tensor)


def span_mean(states: _States, span: int) -> _States:
    """The span mean ending at every layer: what a :class:`Setting` with ``layer_span=span`` embeds at each output
    layer, from all-layer states (e.g. ``module.embed(features, layers="all")``), in one cumulative sum.

    Position ``k`` of the result is the mean of layers ``k - span + 1 .. k``. A range may not start at the embeddings
    (layer 0; see :meth:`Setting.validate`), so positions ``k < span`` are NaN; ``span=1`` gives the states back
    (layer 0 included).

    Args:
        states: ``(num_sentences, num_layers + 1, dim)`` last-token states in Hugging Face ``hidden_states`` order
            (a numpy array or a torch tensor).
        span: The number of consecutive layers averaged (>= 1).

    Returns:
        An array (or tensor) of the same shape, type and floating dtype (float32 for integer input); the sums are
        taken in float64.

    Raises:
        ValueError: If ``span`` is not an integer >= 1 or ``states`` is not 3-dimensional.
    """
    if not _is_int(span) or span < 1:
        raise ValueError(f"span must be an integer >= 1, got {span!r}.")
    if states.ndim != 3:
        raise ValueError(f"states must be (num_sentences, num_layers + 1, dim), got shape {tuple(states.shape)}.")
    if isinstance(states, torch.Tensor):
        dtype = states.dtype if states.is_floating_point() else torch.float32
        if span == 1:
            return states.to(dtype)
        total = torch.cumsum(states.double(), dim=1)
        out = torch.full(states.shape, float("nan"), dtype=torch.float64, device=states.device)
        out[:, span:] = (total[:, span:] - total[:, : total.shape[1] - span]) / span
        return out.to(dtype)
    array = np.asarray(states)
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float32)
    if span == 1:
        return array.astype(dtype, copy=False)
    total = np.cumsum(array, axis=1, dtype=np.float64)
    out = np.full(array.shape, np.nan, dtype=np.float64)
    out[:, span:] = (total[:, span:] - total[:, : total.shape[1] - span]) / span
    return out.astype(dtype)


def _as_int(value: Any) -> Any:
    """``value`` as a plain int when it is an integer of any kind (numpy too); anything else unchanged."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return value
    return operator.index(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@functools.lru_cache(maxsize=256)
def _templates(template: str | tuple[str, ...], demonstrations: tuple[Demonstration, ...]) -> tuple[str, ...]:
    resolved = resolve_templates(template)
    if not demonstrations:
        return resolved
    return tuple(with_demonstrations(text, demonstrations) for text in resolved)


@dataclass(frozen=True)
class Setting:
    """How a text is embedded on one loaded backbone.

    Values are normalised when built (a template list becomes a tuple, demonstrations are parsed, numpy integers
    become ints); everything else is checked by :meth:`validate`.

    Args:
        template: A template spec: a built-in name (``"prompteol"``, ``"knowledge"``...), a user template with a
            ``{sentence}`` slot, or a tuple of them (an ensemble whose embeddings are averaged).
        demonstrations: In-context demonstrations put in front of every template (anything
            :func:`~sentence_transformers_tp.demonstrations.parse_demonstrations` accepts; stored parsed).
        tp_start: First decoder layer (0-based) whose placeholder is replaced.
        tp_exit: First decoder layer after ``tp_start`` without replacement; ``tp_exit <= tp_start`` is TP off.
        output_layer: The embedding's layer in Hugging Face ``hidden_states`` indexing (-1: final normed output).
        layer_span: The number of consecutive layers ending at ``output_layer`` whose last-token states are averaged
            (1: that layer alone). With ``output_layer`` resolved to ``k`` in ``0..num_layers``, the embedding is the
            mean of layers ``k - layer_span + 1 .. k``; the range must start at layer 1 or later.
        cp_layer: Decoder layer (0-based) of Contrastive Prompting, or None for no CP.
        cp_alpha: CP scale (``"ns"`` mode).
        cp_mode: ``"ns"`` (norm scaling) or ``"nr"`` (norm recovering).
        cp_prompt: The CP auxiliary prompt template.
        max_seq_length: Token budget of a prompt; None: the module's.
    """

    template: str | tuple[str, ...] = "prompteol"
    demonstrations: tuple[Demonstration, ...] = ()
    tp_start: int = 1
    tp_exit: int = 1
    output_layer: int = -1
    layer_span: int = 1
    cp_layer: int | None = None
    cp_alpha: float = 1.0
    cp_mode: str = "ns"
    cp_prompt: str = CP_PROMPT
    max_seq_length: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.template, (list, tuple)):
            object.__setattr__(self, "template", tuple(self.template))
        object.__setattr__(self, "demonstrations", parse_demonstrations(self.demonstrations))
        for key in _INT_KEYS:
            object.__setattr__(self, key, _as_int(getattr(self, key)))

    @property
    def tp_enabled(self) -> bool:
        """Whether Token Prepending is on (``tp_exit > tp_start``; the engine's rule,
        :attr:`ForwardSettings.tp_enabled`)."""
        return self.forward_settings().tp_enabled

    @property
    def cp_enabled(self) -> bool:
        """Whether Contrastive Prompting is on (a ``cp_layer`` is set)."""
        return self.forward_settings().cp_enabled

    def replace(self, **changes: Any) -> Setting:
        """A copy with the fields in ``changes`` changed, normalised as the constructor's arguments are."""
        return dataclasses.replace(self, **changes)

    def without_tp(self) -> Setting:
        """The same setting with Token Prepending off (``tp_exit = tp_start``): the vanilla prompt."""
        return self.replace(tp_exit=self.tp_start)

    def templates(self) -> tuple[str, ...]:
        """The resolved template strings (``{sentence}`` and ``{placeholder}`` slots), demonstrations in front.

        Raises:
            ValueError: If the template spec or a demonstration is invalid.
        """
        return _templates(self.template, self.demonstrations)

    def validate(self, num_layers: int | None) -> None:
        """Check the setting against a backbone: the one place settings are validated.

        Args:
            num_layers: Number of decoder layers of the backbone; None checks everything but the layer ranges.

        Raises:
            ValueError: On a setting of the wrong type or out of range (a one-line message naming it).
        """
        if not isinstance(self.template, (str, tuple)):
            raise ValueError(f"template must be a string or a list of strings, got {self.template!r}.")
        self.templates()
        for key in ("tp_start", "tp_exit", "output_layer", "layer_span"):
            if not _is_int(getattr(self, key)):
                raise ValueError(f"{key} must be an integer, got {getattr(self, key)!r}.")
        if self.tp_start < 0:
            raise ValueError(f"tp_start must be >= 0, got {self.tp_start}.")
        if num_layers is not None and self.tp_enabled and self.tp_exit > num_layers:
            raise ValueError(
                f"tp_exit={self.tp_exit} is larger than the number of decoder layers ({num_layers}); TP replaces the "
                f"placeholder before layers tp_start..tp_exit-1 (0-based)."
            )
        if num_layers is not None and not -(num_layers + 1) <= self.output_layer <= num_layers:
            raise ValueError(
                f"output_layer {self.output_layer} is out of range for a model with {num_layers} decoder layers: use "
                f"0..{num_layers} or -{num_layers + 1}..-1 (Hugging Face hidden_states indexing)."
            )
        if self.layer_span < 1:
            raise ValueError(f"layer_span must be >= 1, got {self.layer_span}.")
        if self.layer_span > 1 and (num_layers is not None or self.output_layer >= 0):
            end = self.output_layer if num_layers is None else self.output_layers(num_layers)[-1]
            if end - self.layer_span + 1 < 1:
                raise ValueError(
                    f"layer_span={self.layer_span} ending at output_layer {self.output_layer} (layer {end}) starts "
                    f"at layer {end - self.layer_span + 1}: a span must start at layer 1 or later (0 is the "
                    f"embeddings); use layer_span <= {max(end, 1)}."
                )
        if self.cp_layer is not None and (
            not _is_int(self.cp_layer) or self.cp_layer < 0 or (num_layers is not None and self.cp_layer >= num_layers)
        ):
            layers = f"0..{num_layers - 1}" if num_layers is not None else "(0-based)"
            raise ValueError(
                f"cp_layer must be None (no Contrastive Prompting) or a decoder layer {layers}, got {self.cp_layer!r}."
            )
        if self.cp_mode not in CP_MODES:
            raise ValueError(f"cp_mode must be one of {CP_MODES}, got {self.cp_mode!r}.")
        if isinstance(self.cp_alpha, bool) or not isinstance(self.cp_alpha, (int, float)) or self.cp_alpha <= 0:
            raise ValueError(f"cp_alpha must be a positive number, got {self.cp_alpha!r}.")
        if not isinstance(self.cp_prompt, str) or self.cp_prompt.count("{sentence}") != 1:
            raise ValueError(f"cp_prompt must be a template with one {{sentence}} slot, got {self.cp_prompt!r}.")
        if self.max_seq_length is not None and (not _is_int(self.max_seq_length) or self.max_seq_length < 1):
            raise ValueError(
                f"max_seq_length must be a positive integer (or None for the module's), got {self.max_seq_length!r}."
            )

    def output_layers(self, num_layers: int) -> tuple[int, ...]:
        """The layers the embedding averages, resolved to ``0..num_layers``: ``layer_span`` layers ending at
        ``output_layer``, in order (validate the setting first).

        Args:
            num_layers: Number of decoder layers of the backbone.

        Returns:
            The ``hidden_states`` indices.
        """
        end = self.output_layer % (num_layers + 1)
        return tuple(range(end - self.layer_span + 1, end + 1))

    def forward_settings(self) -> ForwardSettings:
        """The engine's projection: the TP band and Contrastive Prompting of a forward."""
        return ForwardSettings(
            tp_start=self.tp_start,
            tp_exit=self.tp_exit,
            cp_layer=self.cp_layer,
            cp_alpha=self.cp_alpha,
            cp_mode=self.cp_mode,
            cp_prompt=self.cp_prompt,
        )

    def config_value(self, key: str) -> Any:
        """One setting in its config (JSON / YAML) form: a template list as a list, demonstrations as
        ``[[sentence, word], ...]``.

        Args:
            key: A field name.

        Returns:
            The value.
        """
        value = getattr(self, key)
        if key == "template" and isinstance(value, tuple):
            return list(value)
        if key == "demonstrations":
            return to_config(value)
        return value

    def to_config(self, keys: Sequence[str] | None = None) -> dict[str, Any]:
        """The setting in its config form.

        Args:
            keys: The keys to write; defaults to :data:`MODULE_KEYS` (the keys of a saved module config), plus
                ``max_seq_length`` when it is set. ``layer_span`` is written only when it is not 1 (so configs from
                before it existed round-trip unchanged).

        Returns:
            ``{key: value}`` in the form ``sentence_bert_config.json`` and presets hold.
        """
        if keys is None:
            keys = (*MODULE_KEYS, "max_seq_length") if self.max_seq_length is not None else MODULE_KEYS
        return {key: self.config_value(key) for key in keys if key != "layer_span" or self.layer_span != 1}

    def combination(self) -> dict[str, Any]:
        """The setting as a preset's ``combination`` block: template, demonstrations (when there are any), the layer
        keys, ``layer_span`` when it is not 1 and, with CP on, the CP keys."""
        keys = ["template", *(["demonstrations"] if self.demonstrations else []), *LAYER_KEYS]
        return self.to_config([*keys, "layer_span", *(CP_KEYS if self.cp_enabled else ())])

    @classmethod
    def from_config(cls, config: Mapping[str, Any], base: Setting | None = None) -> Setting:
        """Read a setting from its config form; keys that are not settings are ignored (a saved module config holds
        other keys too).

        Args:
            config: A saved module config, a preset ``combination``, a template entry or a task entry.
            base: Where missing keys come from (default: ``Setting()``).

        Returns:
            The setting (not yet validated against a backbone: see :meth:`validate`).

        Raises:
            ValueError: If ``config`` is not a mapping or its demonstrations cannot be parsed.
        """
        if not isinstance(config, Mapping):
            raise ValueError(f"A setting must be a mapping of setting -> value, got {type(config).__name__}.")
        changes = {field.name: config[field.name] for field in dataclasses.fields(cls) if field.name in config}
        if "demonstrations" in changes and changes["demonstrations"] is None:
            changes["demonstrations"] = ()
        return (base or cls()).replace(**changes)

    def label(self) -> str:
        """A short readable label, e.g. ``knowledge + demo(Music) + TP 1..3 + CP L4 ns 1, L28``; a layer span shows
        as ``L26-28 mean`` (``L-1 mean of 3`` for a negative output layer)."""
        parts = [template_label(self.template)]
        if self.demonstrations:
            parts.append("demo(" + ", ".join(demo.word for demo in self.demonstrations) + ")")
        if self.tp_enabled:
            parts.append(f"TP {self.tp_start}..{self.tp_exit - 1}")
        if self.cp_enabled:
            parts.append(
                f"CP L{self.cp_layer} {self.cp_mode}" + (f" {self.cp_alpha:g}" if self.cp_mode == "ns" else "")
            )
        text = " + ".join(parts) + f", {layer_label(self.output_layer, self.layer_span)}"
        return text if self.max_seq_length is None else f"{text}, max {self.max_seq_length} tokens"

    def changes(self) -> int:
        """How far the setting is from vanilla PromptEOL, the simplicity count of every winner rule (fewer wins a
        tie): a template other than PromptEOL counts one, each further member of an ensemble one, each
        demonstration one, TP on one, CP on one, a layer span other than 1 one. The output layer and the token budget
        do not count."""
        members = 1 if isinstance(self.template, str) else len(self.template)
        template = 0 if template_names(self.template) == ("prompteol",) else members
        span = int(self.layer_span != 1)
        return template + len(self.demonstrations) + int(self.tp_enabled) + int(self.cp_enabled) + span


class TaskSettings(Mapping[str, Setting]):
    """A :class:`Setting` per task on one loaded backbone: ``"query"`` (``encode_query``), ``"document"``
    (``encode_document``) or any name passed as ``encode(..., task=name)`` (MTEB task types and names).

    Lookup ignores case (``"STS"`` and ``"sts"`` are one task); iteration gives the names as written.

    Args:
        settings: Task name -> setting.
        given: Task name -> the config keys its entry was read with (see :meth:`to_config`); defaults to none.

    Raises:
        ValueError: If two task names differ only in case, or a name is empty.
    """

    def __init__(
        self, settings: Mapping[str, Setting] | None = None, given: Mapping[str, Sequence[str]] | None = None
    ):
        self._settings: dict[str, Setting] = dict(settings or {})
        self._given = {task: tuple(keys) for task, keys in (given or {}).items()}
        self._index: dict[str, str] = {}
        for task, setting in self._settings.items():
            if not isinstance(task, str) or not task:
                raise ValueError(f"A task name must be a non-empty string, got {task!r}.")
            if not isinstance(setting, Setting):
                raise ValueError(f"task_settings[{task!r}] must be a Setting, got {type(setting).__name__}.")
            if task.lower() in self._index:
                raise ValueError(f"task_settings has both {self._index[task.lower()]!r} and {task!r}: one task.")
            self._index[task.lower()] = task

    def __getitem__(self, task: str) -> Setting:
        return self._settings[
            self._index[task.lower()] if isinstance(task, str) and task.lower() in self._index else task
        ]

    def __iter__(self) -> Iterator[str]:
        return iter(self._settings)

    def __len__(self) -> int:
        return len(self._settings)

    def __repr__(self) -> str:
        return f"TaskSettings({self._settings!r})"

    def validate(self, num_layers: int | None) -> None:
        """Validate every task's setting (see :meth:`Setting.validate`).

        Raises:
            ValueError: Naming the task.
        """
        for task, setting in self._settings.items():
            try:
                setting.validate(num_layers)
            except ValueError as error:
                raise ValueError(f"task_settings[{task!r}]: {error}") from None

    def to_config(self, base: Setting) -> dict[str, dict[str, Any]]:
        """The ``task_settings`` config form: per task, the keys it was read with (see :meth:`from_config`) and the
        keys whose value differs from ``base``.

        Args:
            base: The setting the entries are relative to (the module's own).

        Returns:
            ``{task: {key: value}}``; ``from_config(to_config(base), base)`` gives these settings back.
        """
        out: dict[str, dict[str, Any]] = {}
        for task, setting in self._settings.items():
            given = self._given.get(task, ())
            differing = [key for key in TASK_SETTING_KEYS if getattr(setting, key) != getattr(base, key)]
            keys = [*given, *(key for key in differing if key not in given)]
            out[task] = {key: setting.config_value(key) for key in keys}
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, base: Setting) -> TaskSettings:
        """Read ``task_settings`` (``{task: {setting: value}}``; see
        :class:`~sentence_transformers_tp.module.TokenPrependingTransformer`): each entry changes ``base`` in the
        keys it names (``"demonstrations": []`` is none, a missing key is the base's).

        Args:
            config: The config form, or None for no task settings.
            base: The module's own setting.

        Returns:
            The task settings (validate them against the backbone with :meth:`validate`).

        Raises:
            ValueError: Naming the task and the key when an entry is malformed or has an unknown key.
        """
        if config is None:
            return cls()
        if not isinstance(config, Mapping):
            raise ValueError(f"task_settings must be a dict of task -> settings, got {type(config).__name__}.")
        settings: dict[str, Setting] = {}
        given: dict[str, tuple[str, ...]] = {}
        for task, values in config.items():
            if not isinstance(task, str) or not task or not isinstance(values, Mapping):
                raise ValueError(
                    f"task_settings[{task!r}] must map a task name to a dict of settings, got {values!r}."
                )
            unknown = sorted(set(values) - set(TASK_SETTING_KEYS))
            if unknown:
                raise ValueError(
                    f"task_settings[{task!r}] has unknown settings {unknown}; allowed: {TASK_SETTING_KEYS}."
                )
            try:
                settings[task] = Setting.from_config(values, base)
            except (ValueError, TypeError) as error:
                raise ValueError(f"task_settings[{task!r}]: {error}") from None
            given[task] = tuple(values)
        return cls(settings, given)
