"""Presets: per-backbone TP settings (``tp_start``, ``tp_exit``, ``output_layer``) for each template.

A preset is a YAML file (one per backbone) in ``configs/``, shipped inside the package. Keys:

.. code-block:: yaml

    name: smollm2                      # preset name (what from_preset / --preset take)
    backbone: smollm2                  # what TokenPrependingTransformer loads
    aliases: [HuggingFaceTB/SmolLM2-135M-Instruct]   # other backbone names that select this preset
    num_layers: 30                     # decoder layers of the backbone (validated when a model is built)
    status: tuned                      # paper | tuned | untested
    source: "how the numbers were obtained"
    default_template: prompteol
    templates:
      prompteol:
        tp_start: 1
        tp_exit: 1                     # tp_exit <= tp_start: TP off
        output_layer: 28
        status: tuned                  # optional, overrides the file's status for this template
        score: {task: stsb, split: dev, n_pairs: 1500, spearman: 75.85,        # optional: the tuning score,
                vanilla_best_spearman: 75.85, vanilla_best_layer: 28}      # and the best TP-off layer's
        command: "st-tp tune ..."      # optional: how to reproduce (see docs/tuning.md)

A preset may also carry ``combination`` (the tuned boosters the default model uses, written by ``st-tp
tune-boosters``) and ``task_settings`` (settings per task on the same backbone, e.g. ``query`` and ``document`` for
retrieval, written by ``st-tp tune-retrieval``; each entry takes the keys of the module's ``task_settings`` plus
``status`` / ``score`` / ``command``). Both apply when ``TokenPrependingTransformer(backbone)`` is built without a
template.

Only ``name``, ``backbone`` and ``templates`` (with the three layer keys per template) are required.

One rule decides the settings of a model, explicit > saved > preset > paper default (:func:`resolve_settings`, the
one place the module asks):

* a backbone's built-in preset applies however the backbone is named: its name, an alias or hub id, its ``.gguf``
  file, or the checkpoint folder it was dequantized to (:func:`find_preset_for_backbone`, through
  :func:`~sentence_transformers_tp.backbones.backbone_names`);
* a saved sentence-transformers-tp folder brings its own saved settings (:func:`saved_module_settings`), which win
  over presets; settings the caller passes explicitly win over both;
* user presets (e.g. written by ``st-tp tune --out``) live outside the package and are used by path only
  (``--preset my-preset.yaml``), so they never shadow a built-in preset; two built-in presets claiming the same
  name, backbone or alias are an error (:func:`iter_presets`), and ``tune`` refuses to add a new file to the
  built-in folder (:func:`check_preset_destination`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentence_transformers_tp.backbones import backbone_names
from sentence_transformers_tp.saved import resolve_saved_model
from sentence_transformers_tp.settings import COMBINATION_KEYS, LAYER_KEYS, Setting, TaskSettings
from sentence_transformers_tp.templates import TEMPLATES, USUAL_OUTPUT_LAYER, canonical_template_name

logger = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parent / "configs"
#: Keys of a preset ``task_settings`` entry that document it rather than set anything.
RECORD_KEYS = ("status", "score", "command")
STATUSES = ("paper", "tuned", "untested")


@dataclass
class Preset:
    """One backbone's TP settings per template.

    Args:
        name: Preset name.
        backbone: The backbone a model built from the preset loads.
        templates: Per canonical template name, a dict with ``tp_start``, ``tp_exit``, ``output_layer`` and
            optional ``status``, ``score``, ``command``.
        aliases: Other backbone names that select this preset.
        num_layers: Number of decoder layers of the backbone, if known.
        status: ``paper``, ``tuned`` or ``untested``.
        source: Where the numbers come from.
        default_template: Template used when none is given.
        path: The file the preset was read from.
        combination: The tuned combination of boosters that ``TokenPrependingTransformer(backbone)`` uses when no
            template is given (``template``, optional ``demonstrations``, the three layer keys, optional ``cp_layer``
            / ``cp_alpha`` / ``cp_mode``, and ``status`` / ``score`` / ``command`` like a template entry), or None.
        task_settings: Tuned settings per task (``query``, ``document``, ...) that the default model gets as its
            ``task_settings`` (entries as the module takes them, plus ``status`` / ``score`` / ``command``), or None.
        hybrid: The tuned fusion of the hybrid retriever (channels, fusion rule, weights; read and validated by
            :func:`sentence_transformers_tp.hybrid.preset.preset_fusion`), or None.
    """

    name: str
    backbone: str
    templates: dict[str, dict[str, Any]]
    aliases: list[str] = field(default_factory=list)
    num_layers: int | None = None
    status: str = "untested"
    source: str = ""
    default_template: str = "prompteol"
    path: Path | None = None
    combination: dict[str, Any] | None = None
    task_settings: dict[str, dict[str, Any]] | None = None
    hybrid: dict[str, Any] | None = None

    def task_settings_config(self) -> dict[str, dict[str, Any]] | None:
        """The ``task_settings`` constructor argument of the preset (records such as ``score`` left out), or None."""
        if not self.task_settings:
            return None
        return {
            task: {k: v for k, v in values.items() if k not in RECORD_KEYS}
            for task, values in self.task_settings.items()
        }

    def combination_settings(self) -> dict[str, Any] | None:
        """Constructor arguments of the tuned combination (see ``combination``), or None without one."""
        if self.combination is None:
            return None
        return {key: self.combination[key] for key in COMBINATION_KEYS if key in self.combination}

    def settings(self, template: str) -> dict[str, int]:
        """The layer settings for a template.

        Args:
            template: A built-in template name (any accepted spelling).

        Returns:
            ``{"tp_start": ..., "tp_exit": ..., "output_layer": ...}``, plus ``layer_span`` when the entry sets it.

        Raises:
            KeyError: If the preset has no settings for that template.
        """
        name = canonical_template_name(template) or template
        if name not in self.templates:
            raise KeyError(
                f"Preset {self.name!r} has no settings for template {template!r}; it has: "
                f"{', '.join(sorted(self.templates))}."
            )
        keys = (*LAYER_KEYS, *(["layer_span"] if "layer_span" in self.templates[name] else []))
        return {key: int(self.templates[name][key]) for key in keys}

    def matches(self, backbone: str) -> bool:
        """Whether a backbone name (or path) selects this preset."""
        names = {self.name, self.backbone, *self.aliases}
        candidate = str(backbone).rstrip("/")
        return candidate in names or candidate.lower() in {n.lower() for n in names}

    def to_dict(self) -> dict[str, Any]:
        """The preset as written to YAML."""
        data: dict[str, Any] = {"name": self.name, "backbone": self.backbone}
        if self.aliases:
            data["aliases"] = list(self.aliases)
        if self.num_layers is not None:
            data["num_layers"] = self.num_layers
        data.update(status=self.status, source=self.source, default_template=self.default_template)
        data["templates"] = {name: dict(values) for name, values in self.templates.items()}
        if self.combination is not None:
            data["combination"] = dict(self.combination)
        if self.task_settings is not None:
            data["task_settings"] = {task: dict(values) for task, values in self.task_settings.items()}
        if self.hybrid is not None:
            data["hybrid"] = dict(self.hybrid)
        return data


def validate_preset(data: dict[str, Any], origin: str = "<preset>") -> Preset:
    """Check a preset mapping and build a :class:`Preset`.

    Args:
        data: The parsed YAML mapping.
        origin: Where it came from (for error messages).

    Returns:
        The preset.

    Raises:
        ValueError: Naming the file and the key when something is missing or malformed.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{origin}: a preset must be a mapping, got {type(data).__name__}.")
    for key in ("name", "backbone", "templates"):
        if key not in data:
            raise ValueError(f"{origin}: missing required key {key!r}.")
    templates = data["templates"]
    if not isinstance(templates, dict) or not templates:
        raise ValueError(f"{origin}: 'templates' must be a non-empty mapping of template name to settings.")
    normalised: dict[str, dict[str, Any]] = {}
    for raw_name, values in templates.items():
        name = canonical_template_name(str(raw_name))
        if name is None:
            raise ValueError(f"{origin}: unknown template {raw_name!r}; known: {', '.join(sorted(TEMPLATES))}.")
        if not isinstance(values, dict):
            raise ValueError(f"{origin}: settings of template {raw_name!r} must be a mapping.")
        for key in LAYER_KEYS:
            if not isinstance(values.get(key), int) or isinstance(values.get(key), bool):
                raise ValueError(f"{origin}: template {raw_name!r} needs an integer {key!r}.")
        if values["tp_start"] < 0:
            raise ValueError(f"{origin}: template {raw_name!r} has a negative tp_start.")
        num_layers = data.get("num_layers")
        if num_layers is not None:
            if values["tp_exit"] > values["tp_start"] and values["tp_exit"] > num_layers:
                raise ValueError(f"{origin}: template {raw_name!r} has tp_exit > num_layers ({num_layers}).")
            if not -(num_layers + 1) <= values["output_layer"] <= num_layers:
                raise ValueError(f"{origin}: template {raw_name!r} has output_layer out of range.")
        if "layer_span" in values:
            try:
                Setting(output_layer=values["output_layer"], layer_span=values["layer_span"]).validate(num_layers)
            except (ValueError, TypeError) as error:
                raise ValueError(f"{origin}: template {raw_name!r}: {error}") from None
        status = values.get("status", data.get("status", "untested"))
        if status not in STATUSES:
            raise ValueError(f"{origin}: status {status!r} is not one of {STATUSES}.")
        normalised[name] = dict(values)
    status = data.get("status", "untested")
    if status not in STATUSES:
        raise ValueError(f"{origin}: status {status!r} is not one of {STATUSES}.")
    default_template = canonical_template_name(str(data.get("default_template", "prompteol"))) or "prompteol"
    combination = data.get("combination")
    if combination is not None:
        _validate_combination(combination, origin, data.get("num_layers"))
    task_settings = data.get("task_settings")
    if task_settings is not None:
        _validate_task_settings(task_settings, origin, data.get("num_layers"))
    hybrid = data.get("hybrid")
    if hybrid is not None and not isinstance(hybrid, dict):
        raise ValueError(f"{origin}: 'hybrid' must be a mapping (channels, fusion, weights).")
    return Preset(
        name=str(data["name"]),
        backbone=str(data["backbone"]),
        templates=normalised,
        aliases=[str(alias) for alias in data.get("aliases", [])],
        num_layers=data.get("num_layers"),
        status=status,
        source=str(data.get("source", "")),
        default_template=default_template,
        combination=dict(combination) if combination is not None else None,
        task_settings={str(k): dict(v) for k, v in task_settings.items()} if task_settings is not None else None,
        hybrid=dict(hybrid) if hybrid is not None else None,
    )


def _validate_task_settings(task_settings: Any, origin: str, num_layers: int | None) -> None:
    """Check a preset's ``task_settings`` block (:meth:`TaskSettings.from_config` and :meth:`Setting.validate`)."""
    if not isinstance(task_settings, dict) or not task_settings:
        raise ValueError(f"{origin}: 'task_settings' must be a non-empty mapping of task name to settings.")
    for task, values in task_settings.items():
        if not isinstance(values, dict):
            raise ValueError(f"{origin}: task_settings[{task!r}] must be a mapping.")
        settings = {k: v for k, v in values.items() if k not in RECORD_KEYS}
        try:
            TaskSettings.from_config({task: settings}, Setting()).validate(num_layers)
        except ValueError as error:
            raise ValueError(f"{origin}: {error}") from None


def _validate_combination(combination: Any, origin: str, num_layers: int | None) -> None:
    """Check a preset's ``combination`` block (:meth:`Setting.validate`, the module's checks)."""
    if not isinstance(combination, dict):
        raise ValueError(f"{origin}: 'combination' must be a mapping.")
    unknown = set(combination) - {*COMBINATION_KEYS, *RECORD_KEYS}
    missing = {"template", *LAYER_KEYS} - set(combination)
    if unknown or missing:
        raise ValueError(f"{origin}: 'combination' has unknown keys {sorted(unknown)} or lacks {sorted(missing)}.")
    try:
        Setting.from_config(combination).validate(num_layers)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{origin}: 'combination': {error}") from None


def load_preset_file(path: str | os.PathLike) -> Preset:
    """Read and validate one preset YAML file.

    Args:
        path: The YAML file.

    Returns:
        The preset.
    """
    import yaml

    path = Path(path)
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    preset = validate_preset(data, origin=str(path))
    preset.path = path
    return preset


def save_preset(preset: Preset, path: str | os.PathLike) -> Path:
    """Write a preset as YAML.

    Args:
        preset: The preset.
        path: Target file.

    Returns:
        The path written.
    """
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(preset.to_dict(), sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


def update_preset(path: str | os.PathLike, key: str, value: Any) -> Path:
    """Set one top-level block of an existing preset file (e.g. ``combination``), keeping every other key, and
    validate before writing.

    Args:
        path: The preset YAML.
        key: The block to set.
        value: Its new value.

    Returns:
        The path written.
    """
    data = load_preset_file(path).to_dict()
    data[key] = value
    return save_preset(validate_preset(data, str(path)), path)


def iter_presets(directory: str | os.PathLike | None = None) -> Iterator[Preset]:
    """All presets of a directory (default: the packaged ``configs/``), sorted by file name.

    Args:
        directory: Folder with ``*.yaml`` presets.

    Yields:
        The presets.

    Raises:
        ValueError: If two presets claim the same name, backbone or alias (one would silently shadow the other).
    """
    directory = Path(directory) if directory is not None else PRESET_DIR
    owners: dict[str, Path] = {}
    presets = []
    for path in sorted(directory.glob("*.yaml")):
        preset = load_preset_file(path)
        for key in {name.rstrip("/").lower() for name in (preset.name, preset.backbone, *preset.aliases)}:
            if key in owners and owners[key] != path:
                raise ValueError(
                    f"Presets {owners[key]} and {path} both claim {key!r}; one would silently shadow the other. "
                    "Rename or remove one of them (user presets belong outside the package, used with --preset FILE)."
                )
            owners[key] = path
        presets.append(preset)
    yield from presets


def get_preset(name_or_path: str | os.PathLike) -> Preset:
    """Find a preset by file path, preset name, backbone or alias.

    Args:
        name_or_path: A ``.yaml`` path, or a name matched against the packaged presets.

    Returns:
        The preset.

    Raises:
        KeyError: If nothing matches (the message lists the available presets).
    """
    if str(name_or_path).endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return load_preset_file(name_or_path)
    found = find_preset_for_backbone(str(name_or_path))
    if found is None:
        names = ", ".join(p.name for p in iter_presets())
        raise KeyError(f"No preset named {str(name_or_path)!r}; available presets: {names}.")
    return found


def find_preset_for_backbone(backbone: str) -> Preset | None:
    """The packaged preset of a backbone, however it is named.

    ``backbone`` matches a preset's name, backbone or alias directly, or through another name it is known by (see
    :func:`~sentence_transformers_tp.backbones.backbone_names`): a named backbone's ``.gguf`` file and its
    dequantized cache folder select that backbone's preset, a saved model folder the preset of its backbone.

    Args:
        backbone: A backbone name as given to ``TokenPrependingTransformer``.

    Returns:
        The preset, or None.
    """
    presets = list(iter_presets())
    for name in backbone_names(str(backbone)):
        for preset in presets:
            if preset.matches(name):
                return preset
    return None


def check_preset_destination(path: str | os.PathLike) -> Path:
    """Check, before any work, that a user preset can be written to ``path`` without shadowing a built-in one.

    Args:
        path: Where ``st-tp tune --out`` will write.

    Returns:
        The path.

    Raises:
        ValueError: If ``path`` would add a file to the package's built-in preset folder (updating an existing
            built-in preset file in place is allowed), or is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a .yaml file name.")
    inside = path.parent.resolve() == PRESET_DIR.resolve()
    if inside and not path.exists():
        raise ValueError(
            f"{path} would add a preset to the package's built-in presets ({PRESET_DIR}), where it could shadow "
            f"a built-in one; write it elsewhere (e.g. --out my-{path.stem}.yaml) and use it with --preset FILE."
        )
    return path


#: The file in which sentence-transformers saves a module's settings.
MODULE_CONFIG_FILE = "sentence_bert_config.json"


def saved_module_settings(path: str | os.PathLike, **hub: Any) -> dict[str, Any] | None:
    """The settings saved in a sentence-transformers-tp model, if ``path`` is one.

    Args:
        path: A backbone specification (a local folder or a hub id, see
            :func:`~sentence_transformers_tp.saved.resolve_saved_model`, whose ``sentence_bert_config.json`` holds a
            ``template``, counts as a saved TP model).
        **hub: ``revision``, ``cache_folder``, ``token``, ``local_files_only`` for a hub id.

    Returns:
        The saved module config, or None.
    """
    config_path = (resolve_saved_model(path, **hub) or Path(os.fspath(path))) / MODULE_CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the module's own config loading reports a corrupt file
    return config if isinstance(config, dict) and "template" in config else None


#: The paper's TP band (before decoder layers 1..6), cut to the backbone's depth.
PAPER_TP_BAND = (1, 7)


@dataclass(frozen=True)
class ResolvedSettings:
    """The settings of a module, decided by :func:`resolve_settings` (explicit > saved > preset > paper default).

    Args:
        arguments: Every module argument that was given or saved, plus, for a default module, the preset's tuned
            ``combination`` and ``task_settings`` (None: not set).
        preset: The backbone's built-in preset, or None.
        source: Where the settings came from, for the log: ``"explicit"``, a saved folder, or a preset name.
    """

    arguments: dict[str, Any]
    preset: Preset | None = None
    source: str = "explicit"

    def setting(self, num_layers: int) -> Setting:
        """The module's own :class:`Setting` once the backbone's depth is known: layer settings still unset come
        from the preset's entry for the template, else the paper default (TP before layers 1-6, cut to the depth,
        and the template's usual output layer).

        Args:
            num_layers: Number of decoder layers of the loaded backbone.

        Returns:
            The setting (validate it with :meth:`Setting.validate`).
        """
        given = {key: value for key, value in self.arguments.items() if value is not None}
        template = given.get("template", "prompteol")
        name = canonical_template_name(template) if isinstance(template, str) else None
        if name is not None and self.preset is not None and name in self.preset.templates:
            if any(key not in given for key in LAYER_KEYS):
                logger.info(f"Using the {self.preset.name!r} preset ({self.preset.status}) for template {name!r}.")
            defaults: dict[str, Any] = self.preset.settings(name)
        else:
            tp_start, tp_exit = PAPER_TP_BAND
            defaults = {"tp_start": tp_start, "tp_exit": min(tp_exit, num_layers)}
            defaults["output_layer"] = USUAL_OUTPUT_LAYER.get(name, -1)
        return Setting.from_config({**defaults, **given})


def resolve_settings(
    model_name_or_path: Any,
    arguments: Mapping[str, Any],
    keys: Sequence[str] | None = None,
    hub: Mapping[str, Any] | None = None,
) -> ResolvedSettings:
    """The one policy that decides a module's settings: explicit > saved > preset > paper default.

    * Arguments the caller gave (not None) win.
    * A saved sentence-transformers-tp folder (:func:`saved_module_settings`) supplies every other setting it
      saved (the keys in ``keys``).
    * A module built without a template (given or saved) gets the backbone preset's tuned ``combination``
      (template, demonstrations, layers, CP; given settings override its parts) and, when none of the template,
      the layer and booster settings, ``task_settings`` and the ``query_template`` / ``document_template``
      shorthands is given, the preset's ``task_settings``.
    * Layer settings still unset are decided by :meth:`ResolvedSettings.setting` (the preset's entry for the
      template, else the paper default).

    Args:
        model_name_or_path: The module's backbone argument (a saved folder brings its settings).
        arguments: The module's arguments as the caller gave them (None: not given); ``backbone_name`` selects
            the preset when given.
        keys: The argument names a saved folder may supply (default: those of ``arguments``).
        hub: ``revision``, ``cache_folder``, ``token``, ``local_files_only`` for a saved model given by hub id
            (see :func:`~sentence_transformers_tp.saved.hub_options`).

    Returns:
        The resolved arguments and preset.
    """
    merged = dict(arguments)
    source = "explicit"
    saved = (
        saved_module_settings(model_name_or_path, **(hub or {}))
        if isinstance(model_name_or_path, (str, os.PathLike))
        else None
    )
    if saved:
        filled = [key for key in (keys or merged) if merged.get(key) is None and saved.get(key) is not None]
        if filled:
            logger.info("Using the settings saved in %s: %s", model_name_or_path, ", ".join(filled))
        merged.update({key: saved[key] for key in filled})
        source = str(model_name_or_path)
    backbone = merged.get("backbone_name") or model_name_or_path
    preset = find_preset_for_backbone(str(backbone)) if isinstance(backbone, (str, os.PathLike)) else None
    if merged.get("template") is None and preset is not None:
        combination = preset.combination_settings() or {}
        untouched = all(merged.get(key) is None for key in (*TASK_ARGUMENTS, *COMBINATION_KEYS))
        if combination:
            logger.info(f"Using the tuned combination of the {preset.name!r} preset: {combination}.")
            merged.update({key: value for key, value in combination.items() if merged.get(key) is None})
        tasks = preset.task_settings_config()
        if untouched and tasks:
            logger.info(f"Using the task settings of the {preset.name!r} preset for {', '.join(sorted(tasks))}.")
            merged["task_settings"] = tasks
        source = preset.name
    return ResolvedSettings(merged, preset, source)


def default_setting(preset: Preset) -> Setting:
    """The :class:`Setting` that ``TokenPrependingTransformer(<backbone>)`` embeds with under a preset: its tuned
    ``combination`` (or its default template's entry), the base its ``task_settings`` entries change.

    Args:
        preset: The preset.

    Returns:
        The setting.
    """
    arguments = dict(preset.combination_settings() or {"template": preset.default_template})
    return ResolvedSettings(arguments, preset).setting(preset.num_layers or 0)


def pinned_task_settings(preset: Preset, combination: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The preset's ``task_settings`` as they must be written next to a new ``combination``.

    A task entry names only the keys in which it differs from the default setting. When the combination changes, a
    key the entry does not name (a layer span, demonstrations, CP) would silently change the task's setting as
    well. So each such key gets its old value written into the entry, and every task keeps exactly the setting it
    was tuned with.

    Args:
        preset: The preset as it is now.
        combination: The new ``combination`` block.

    Returns:
        The entries (records kept, pinned keys before them), or None when the preset has no task settings.
    """
    if not preset.task_settings:
        return None
    before = default_setting(preset)
    after = default_setting(dataclasses.replace(preset, combination=dict(combination)))
    pinned: dict[str, dict[str, Any]] = {}
    for task, entry in preset.task_settings.items():
        old, new = Setting.from_config(entry, before), Setting.from_config(entry, after)
        changed = [f.name for f in dataclasses.fields(Setting) if getattr(old, f.name) != getattr(new, f.name)]
        keys = {key: value for key, value in entry.items() if key not in RECORD_KEYS}
        keys.update({name: old.config_value(name) for name in changed})
        pinned[task] = {**keys, **{key: entry[key] for key in RECORD_KEYS if key in entry}}
    return pinned


#: The module arguments that set per-task settings.
TASK_ARGUMENTS = ("task_settings", "query_template", "document_template")
