"""How a :class:`~sentence_transformers_tp.module.TokenPrependingTransformer` holds its
:class:`~sentence_transformers_tp.settings.Setting`: its own (what it saves), one per task (``task_settings`` and the
query / document template shorthands, resolved on its own), and the one of a ``with module.using(setting):`` block,
which applies to the calling thread only (a context variable, like the engine's plans).

:class:`SettingScope` is a mixin of the module; it needs the host's ``num_layers``, ``query_template`` and
``document_template``. The properties ``template``, ``tp_start``, ``tp_exit``, ``output_layer``, ``cp_*`` and
``demonstrations`` read the active setting; setting one changes the module's own setting as a whole, validated
before anything changes.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sentence_transformers_tp.interventions import ForwardSettings
from sentence_transformers_tp.settings import Setting, TaskSettings

__all__ = ["TASK_PROMPT_PREFIX", "SettingScope"]

#: A prompt ``"<prefix><task>"`` selects ``task_settings[task]`` (how MTEB, which passes prompts by task name or type,
#: reaches per-task settings).
TASK_PROMPT_PREFIX = "st-tp-task:"

#: Per module (by ``id``), the setting and task settings of an active :meth:`SettingScope.using`
#: block in this thread / task; like the engine's plans, a context variable, so threads never see each other's.
_USING: contextvars.ContextVar[Mapping[int, tuple[Setting, TaskSettings]]] = contextvars.ContextVar(
    "sentence_transformers_tp_using", default=types.MappingProxyType({})
)


def _setting_property(key: str, doc: str) -> property:
    """A module property for one field of the active setting; setting it changes the module's own setting
    (validated as a whole before anything changes)."""

    def get(self: SettingScope) -> Any:
        return self.setting.config_value(key)

    def set_(self: SettingScope, value: Any) -> None:
        self.set_setting(self.own_setting.replace(**{key: value}))

    return property(get, set_, doc=doc)


class SettingScope:
    """The settings API of the module (see the module docstring)."""

    num_layers: int
    query_template: str | list[str] | None
    document_template: str | list[str] | None

    @property
    def own_setting(self) -> Setting:
        """The module's own :class:`~sentence_transformers_tp.settings.Setting` (what it saves), whatever
        :meth:`using` block is active."""
        return self._state[0]

    @property
    def setting(self) -> Setting:
        """The active :class:`~sentence_transformers_tp.settings.Setting`: the one of this thread's :meth:`using`
        block, else the module's own."""
        active = _USING.get().get(id(self))
        return self._state[0] if active is None else active[0]

    def task_settings_for(self, task: str | None) -> Setting:
        """The setting a call for ``task`` uses: the task's entry of the active task settings, else the active
        setting.

        Args:
            task: ``"query"``, ``"document"``, another ``task_settings`` name, or None.

        Returns:
            The resolved setting.
        """
        active = _USING.get().get(id(self))
        setting, tasks = self._state if active is None else active
        return tasks.get(task, setting) if task else setting

    def call_setting(
        self, prompt: str | None = None, task: str | None = None, setting: Setting | None = None
    ) -> tuple[Setting, tuple[str, ...]]:
        """The setting and the template strings of one call.

        Args:
            prompt: A prompt from ``encode(prompt=...)`` / ``prompt_name``. A task marker (:data:`TASK_PROMPT_PREFIX`)
                selects that task; one that contains ``{sentence}`` is a full template (with the demonstrations of
                ``setting``, else of the active setting); any other non-empty prompt is an instruction put in front
                of each template.
            task: ``"query"`` or ``"document"`` (set by ``encode_query`` / ``encode_document``), or another key of
                ``task_settings``.
            setting: The setting to use instead of the task's (:meth:`task_settings_for`).

        Returns:
            The setting and its templates with the prompt.
        """
        if prompt and prompt.startswith(TASK_PROMPT_PREFIX):
            prompt, task = None, prompt[len(TASK_PROMPT_PREFIX) :]
        base = setting or self.setting
        setting = setting or self.task_settings_for(task)
        if prompt and "{sentence}" in prompt:
            return setting, base.replace(template=prompt).templates()
        return setting, tuple((prompt or "") + template for template in setting.templates())

    def templates_for(self, prompt: str | None = None, task: str | None = None) -> tuple[str, ...]:
        """The templates used for a call (see :meth:`call_setting`).

        Args:
            prompt: A prompt from ``encode(prompt=...)`` / ``prompt_name``.
            task: ``"query"``, ``"document"`` or another key of ``task_settings``.

        Returns:
            The template strings.
        """
        return self.call_setting(prompt, task)[1]

    def tasks_on(self, base: Setting) -> TaskSettings:
        """The module's task settings (``task_settings`` and the query / document template shorthands) resolved
        on another base setting: what they would be if ``base`` were the module's own.

        Args:
            base: The base setting.

        Returns:
            The task settings.
        """
        config = {task: dict(values) for task, values in self._task_config.items()}
        for task, template in (("query", self.query_template), ("document", self.document_template)):
            if template is not None:
                config.setdefault(task, {}).setdefault("template", template)
        return TaskSettings.from_config(config, base)

    def configure_tasks(self, base: Setting, task_settings: Any) -> None:
        """Check ``task_settings`` (before the backbone is loaded: without the layer ranges) and keep them in their
        config form (templates and demonstrations normalised); :meth:`set_setting` then resolves them.

        Args:
            base: The setting the entries are read on (for the checks).
            task_settings: ``{task: {setting: value}}``, or None.
        """
        tasks = TaskSettings.from_config(task_settings, base)
        tasks.validate(None)
        self._task_config = tasks.to_config(base)
        self._state = (base, TaskSettings())

    def span_layers(self, features: dict[str, Any] | None = None) -> tuple[int, ...]:
        """The layers whose mean is the embedding of preprocessed features: their ``layer_span`` layers ending at
        their ``output_layer`` (the active setting's where the features lack them), resolved to ``0..num_layers``.

        Args:
            features: The output of :meth:`preprocess`, or None for the active setting.

        Returns:
            The ``hidden_states`` indices, in order (one index for ``layer_span=1``).

        Raises:
            ValueError: If the output layer is out of range or the span starts below layer 1.
        """
        features = features or {}
        setting = self.setting.replace(
            output_layer=features.get("output_layer", self.setting.output_layer),
            layer_span=features.get("layer_span", self.setting.layer_span),
        )
        setting.validate(self.num_layers)
        return setting.output_layers(self.num_layers)

    def set_setting(self, setting: Setting) -> None:
        """Make ``setting`` the module's own (what it embeds with and saves). It is validated, with the task settings
        resolved on it, before anything changes.

        Args:
            setting: The new setting (its ``max_seq_length`` must be None: the module's token budget is
                ``max_seq_length``).

        Raises:
            ValueError: If the setting or a task setting on it is invalid for the backbone.
        """
        if not isinstance(setting, Setting):
            raise ValueError(f"A module setting must be a Setting, got {type(setting).__name__}.")
        if setting.max_seq_length is not None:
            raise ValueError("The module's own setting has no max_seq_length: set module.max_seq_length instead.")
        setting.validate(self.num_layers)
        tasks = self.tasks_on(setting)
        tasks.validate(self.num_layers)
        # One attribute, swapped at once: a thread encoding meanwhile sees the old or the new pair, never a mix.
        self._state = (setting, tasks)

    @contextlib.contextmanager
    def using(self, setting: Setting, task_settings: Mapping[str, Setting] | None = None) -> Iterator[Any]:
        """Embed under another setting for the duration of a ``with`` block, in this thread only.

        Every ``encode`` / :meth:`preprocess` / :meth:`embed` of this thread (and of asyncio tasks started in it) in
        the block uses ``setting`` (template, demonstrations, TP band, CP, output layer, ``max_seq_length``) instead
        of the module's own; other threads keep the module's own. The module is not changed, so nothing needs
        restoring; blocks nest.

        Args:
            setting: The setting.
            task_settings: Settings per task inside the block (e.g. :meth:`tasks_on` ``(setting)`` for the module's
                task settings on the new base); None: ``setting`` for every task.

        Yields:
            The module.

        Raises:
            ValueError: If a setting is invalid for the backbone (before the block runs).
        """
        if not isinstance(setting, Setting):
            raise ValueError(f"using() takes a Setting, got {type(setting).__name__}.")
        tasks = task_settings if isinstance(task_settings, TaskSettings) else TaskSettings(task_settings)
        setting.validate(self.num_layers)
        tasks.validate(self.num_layers)
        token = _USING.set(types.MappingProxyType({**_USING.get(), id(self): (setting, tasks)}))
        try:
            yield self
        finally:
            _USING.reset(token)

    template = _setting_property("template", "The active template spec (a name, a user template or a list).")
    tp_start = _setting_property("tp_start", "First decoder layer (0-based) whose placeholder is replaced.")
    tp_exit = _setting_property("tp_exit", "First layer after ``tp_start`` without replacement (``<=``: TP off).")
    output_layer = _setting_property("output_layer", "The ``hidden_states`` index of the embedding.")
    layer_span = _setting_property("layer_span", "Consecutive layers ending at ``output_layer`` averaged (1: one).")
    cp_layer = _setting_property("cp_layer", "Contrastive Prompting layer (None: CP off).")
    cp_alpha = _setting_property("cp_alpha", "Contrastive Prompting scale.")
    cp_mode = _setting_property("cp_mode", "Contrastive Prompting mode.")
    cp_prompt = _setting_property("cp_prompt", "Contrastive Prompting auxiliary prompt.")

    @property
    def demonstrations(self) -> list[list[str]] | None:
        """The active demonstrations in their config form, or None for none."""
        return self.setting.config_value("demonstrations") or None

    @demonstrations.setter
    def demonstrations(self, value: Any) -> None:
        self.set_setting(self.own_setting.replace(demonstrations=() if value is None else value))

    @property
    def task_settings(self) -> dict[str, dict[str, Any]]:
        """The module's ``task_settings`` in their config form (see the class docstring)."""
        return self._task_config

    @property
    def tp_enabled(self) -> bool:
        """Whether Token Prepending is on (``tp_exit > tp_start``)."""
        return self.setting.tp_enabled

    @property
    def templates(self) -> tuple[str, ...]:
        """The active resolved template strings (with ``{sentence}`` and ``{placeholder}`` slots)."""
        return self.setting.templates()

    def forward_settings(self) -> ForwardSettings:
        """The active forward settings (TP band and Contrastive Prompting)."""
        return self.setting.forward_settings()

    def boosters(self) -> dict[str, Any]:
        """The template and boosters (demonstrations, Contrastive Prompting layer) as :meth:`set_boosters` takes them."""
        return {"template": self.template, "demonstrations": self.demonstrations, "cp_layer": self.cp_layer}

    def set_boosters(
        self, template: str | Sequence[str], demonstrations: Any = None, cp_layer: int | None = None
    ) -> None:
        """Switch the module's template, demonstrations and Contrastive Prompting layer (the query and document
        templates are kept); validated before anything changes.

        Args:
            template: A template spec.
            demonstrations: Demonstrations (see the constructor), or None.
            cp_layer: CP layer, or None for no CP.
        """
        demos = () if demonstrations is None else demonstrations
        self.set_setting(self.own_setting.replace(template=template, demonstrations=demos, cp_layer=cp_layer))
