"""What every record of a model names: the whole embedding setting (one description, one label).

Evaluation tables and ``--json`` files (``st-tp evaluate``), MTEB result configs and the model card all describe a
model with :func:`describe` (a plain-JSON dict) and :func:`label` (a short human label), so a record never leaves
out part of the setting: template(s), in-context demonstrations, the Token Prepending band, Contrastive Prompting,
the output layer, the prompt length limit and the settings per task::

    >>> label(model)  # the SmolLM2 default: preset combination + retrieval task settings
    'Knowledge + 1 demo, L28 (no TP) [query: L29; document: retrieval_document + no demos + L29]'

Both read only the public attributes of a
:class:`~sentence_transformers_tp.module.TokenPrependingTransformer` (``template``, ``demonstrations``,
``tp_start``, ``tp_exit``, ``cp_layer``, ``cp_alpha``, ``cp_mode``, ``output_layer``, ``layer_span``,
``task_settings``, ``max_seq_length``, ...). Importing this module is cheap (no torch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sentence_transformers_tp.templates import layer_label, template_label

TEMPLATE_DISPLAY_NAMES: dict[str, str] = {
    "prompteol": "PromptEOL",
    "metaeol": "MetaEOL",
    "pretended_cot": "Pretended CoT",
    "knowledge": "Knowledge",
}
"""Table names of the built-in templates."""

ROLE_MODEL = "model"
"""Role (``config.roles``) of a record measured with the model as configured, not a comparison variant."""

SETTING_KEYS: tuple[str, ...] = (
    "template",
    "query_template",
    "document_template",
    "demonstrations",
    "tp_start",
    "tp_exit",
    "output_layer",
    "layer_span",
    "cp_layer",
    "cp_alpha",
    "cp_mode",
    "cp_prompt",
    "max_seq_length",
    "task_settings",
)
"""The module attributes a description records (plus ``backbone``, ``tp_enabled`` and ``num_layers``)."""


def tp_module_of(model: Any) -> Any:
    """The object holding the settings: a ``SentenceTransformer``'s first module, or ``model`` itself.

    Args:
        model: A ``SentenceTransformer`` whose first module is a TP module, or the module (or any object with the
            module's setting attributes).

    Returns:
        The module.

    Raises:
        ValueError: If neither ``model`` nor its first module has TP settings.
    """
    if hasattr(model, "tp_start") and hasattr(model, "template"):
        return model
    try:
        first = model[0]
    except (TypeError, IndexError, KeyError):
        first = None
    if first is None or not hasattr(first, "tp_start"):
        raise ValueError(f"{type(model).__name__} has no TokenPrependingTransformer as its first module.")
    return first


def describe(model: Any, **changes: Any) -> dict[str, Any]:
    """The whole setting of a model as a plain-JSON dict (the ``config`` of every record).

    Args:
        model: A ``SentenceTransformer`` with a TP module, or the module.
        **changes: Settings that replace the module's (e.g. ``tp_exit=1`` for a no-TP variant); a changed
            ``template`` without ``demonstrations`` / ``cp_layer`` drops the module's demonstrations and CP (as
            :meth:`~sentence_transformers_tp.module.TokenPrependingTransformer.set_boosters` does).

    Returns:
        ``backbone``, ``template``, ``query_template``, ``document_template``, ``demonstrations`` (a list of
        ``[sentence, word]``), ``tp_start``, ``tp_exit``, ``tp_enabled``, ``output_layer``, ``cp_layer``,
        ``cp_alpha``, ``cp_mode``, ``cp_prompt`` (None without CP), ``max_seq_length``, ``task_settings`` (``{}``
        for none), ``num_layers`` and, only when it is not 1, ``layer_span``.

    Raises:
        ValueError: For a key that is not a setting.
    """
    unknown = sorted(set(changes) - set(SETTING_KEYS))
    if unknown:
        raise ValueError(f"not settings: {', '.join(unknown)}; settings are {', '.join(SETTING_KEYS)}")
    module = tp_module_of(model)
    values = {key: getattr(module, key, None) for key in SETTING_KEYS}
    if "template" in changes:
        values.update(demonstrations=None, cp_layer=None)
    values.update(changes)
    cp_on = values["cp_layer"] is not None
    description = {
        "backbone": str(getattr(module, "backbone_name", "")),
        "template": _plain(values["template"]),
        "query_template": _plain(values["query_template"]),
        "document_template": _plain(values["document_template"]),
        "demonstrations": _plain(values["demonstrations"] or []),
        "tp_start": values["tp_start"],
        "tp_exit": values["tp_exit"],
        "tp_enabled": values["tp_exit"] > values["tp_start"],
        "output_layer": values["output_layer"],
        "cp_layer": values["cp_layer"],
        "cp_alpha": values["cp_alpha"] if cp_on else None,
        "cp_mode": values["cp_mode"] if cp_on else None,
        "cp_prompt": values["cp_prompt"] if cp_on else None,
        "max_seq_length": values["max_seq_length"],
        "task_settings": _plain(values["task_settings"] or {}),
        "num_layers": getattr(module, "num_layers", None),
    }
    if values["layer_span"] not in (None, 1):
        description["layer_span"] = values["layer_span"]
    return description


def label(model_or_description: Any, notes: Sequence[str] = ()) -> str:
    """A short human label of the whole setting, e.g. ``"Knowledge + 1 demo + CP L5 ns 1, L28 (no TP)"``.

    The parts: the template (``+``-joined for an ensemble; ``custom-<hash>`` for a user template), the number of
    demonstrations, Contrastive Prompting (``CP L<layer> <mode>`` and the ``ns`` scale), the TP band
    (``TP <start>:<exit>``, decoder layers ``start`` to ``exit - 1``), the output layer, ``(no TP)`` when TP is off,
    and in brackets what each task changes against that (``[query: TP 1:3; document: retrieval_document]``; a
    task that changes nothing of this setting is left out).

    Args:
        model_or_description: A ``SentenceTransformer`` with a TP module, the module, or a :func:`describe` dict.
        notes: Extra notes for the parenthesis (e.g. ``"usual layer"``).

    Returns:
        The label.
    """
    if isinstance(model_or_description, Mapping):
        description = model_or_description
    else:
        description = describe(model_or_description)
    head = _core(description)
    layer = description["output_layer"]
    text = f"{head}, {layer_label(layer, description.get('layer_span') or 1)}"
    notes = [*(["no TP"] if not description["tp_enabled"] else []), *notes]
    if notes:
        text += f" ({', '.join(notes)})"
    tasks = _task_parts(description)
    if tasks:
        text += f" [{'; '.join(tasks)}]"
    return text


def template_display_name(template: str | Sequence[str]) -> str:
    """A short table name of a template spec (``"PromptEOL"``, ``"Pretended CoT+Knowledge"``, ``"custom-1a2b3c4d"``).

    Args:
        template: A template spec as stored on the module (``module.template``).

    Returns:
        The name.
    """
    name = template_label(template)
    if name.startswith("custom-"):
        return name
    return "+".join(TEMPLATE_DISPLAY_NAMES.get(part, part) for part in name.split("+"))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _cp_text(cp_layer: int, cp_mode: str | None, cp_alpha: float | None) -> str:
    text = f"CP L{cp_layer} {cp_mode or 'ns'}"
    if (cp_mode or "ns") == "ns" and cp_alpha is not None:
        text += f" {cp_alpha:g}"
    return text


def _core(description: Mapping[str, Any]) -> str:
    """Template, demonstrations, CP and TP band of a description."""
    parts = [template_display_name(description["template"])]
    demos = description.get("demonstrations") or []
    if demos:
        parts.append(_plural(len(demos), "demo"))
    if description.get("cp_layer") is not None:
        parts.append(_cp_text(description["cp_layer"], description.get("cp_mode"), description.get("cp_alpha")))
    if description["tp_enabled"]:
        parts.append(f"TP {description['tp_start']}:{description['tp_exit']}")
    return " + ".join(parts)


def _task_parts(description: Mapping[str, Any]) -> list[str]:
    """``"<task>: <what it changes>"`` for each task that changes something (the template shorthands included)."""
    entries: dict[str, dict[str, Any]] = {}
    for task, key in (("query", "query_template"), ("document", "document_template")):
        if description.get(key) is not None:
            entries[task] = {"template": description[key]}
    for task, values in (description.get("task_settings") or {}).items():
        entries[task] = {**entries.get(task, {}), **dict(values)}
    texts = {task: _task_text(description, values) for task, values in entries.items()}
    return [f"{task}: {text}" for task, text in texts.items() if text]


def _task_text(description: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """What one task's settings change against the default setting, in label form."""
    parts: list[str] = []
    if "template" in values and _plain(values["template"]) != description["template"]:
        parts.append(template_display_name(values["template"]))
    demos = _plain(values.get("demonstrations") or [])
    if "demonstrations" in values and demos != (description.get("demonstrations") or []):
        parts.append(_plural(len(demos), "demo") if demos else "no demos")
    cp = tuple(values.get(key, description.get(key)) for key in ("cp_layer", "cp_mode", "cp_alpha"))
    if cp != tuple(description.get(key) for key in ("cp_layer", "cp_mode", "cp_alpha")):
        parts.append("no CP" if cp[0] is None else _cp_text(*cp))
    band = (values.get("tp_start", description["tp_start"]), values.get("tp_exit", description["tp_exit"]))
    if band != (description["tp_start"], description["tp_exit"]):
        parts.append(f"TP {band[0]}:{band[1]}" if band[1] > band[0] else "no TP")
    base = (description["output_layer"], description.get("layer_span") or 1)
    layer = (values.get("output_layer", base[0]), values.get("layer_span") or base[1])
    if layer != base:
        parts.append(layer_label(*layer))
    if values.get("max_seq_length") is not None and values["max_seq_length"] != description.get("max_seq_length"):
        parts.append(f"max {values['max_seq_length']} tokens")
    return " + ".join(parts)


def _plain(value: Any) -> Any:
    """Tuples to lists, mappings to dicts (JSON form)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


__all__ = [
    "ROLE_MODEL",
    "SETTING_KEYS",
    "TEMPLATE_DISPLAY_NAMES",
    "describe",
    "label",
    "template_display_name",
    "tp_module_of",
]
