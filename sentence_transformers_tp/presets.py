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

Only ``name``, ``backbone`` and ``templates`` (with the three layer keys per template) are required.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentence_transformers_tp.templates import TEMPLATES, canonical_template_name

PRESET_DIR = Path(__file__).resolve().parent / "configs"
LAYER_KEYS = ("tp_start", "tp_exit", "output_layer")
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

    def settings(self, template: str) -> dict[str, int]:
        """The layer settings for a template.

        Args:
            template: A built-in template name (any accepted spelling).

        Returns:
            ``{"tp_start": ..., "tp_exit": ..., "output_layer": ...}``.

        Raises:
            KeyError: If the preset has no settings for that template.
        """
        name = canonical_template_name(template) or template
        if name not in self.templates:
            raise KeyError(
                f"Preset {self.name!r} has no settings for template {template!r}; it has: "
                f"{', '.join(sorted(self.templates))}."
            )
        return {key: int(self.templates[name][key]) for key in LAYER_KEYS}

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
        status = values.get("status", data.get("status", "untested"))
        if status not in STATUSES:
            raise ValueError(f"{origin}: status {status!r} is not one of {STATUSES}.")
        normalised[name] = dict(values)
    status = data.get("status", "untested")
    if status not in STATUSES:
        raise ValueError(f"{origin}: status {status!r} is not one of {STATUSES}.")
    default_template = canonical_template_name(str(data.get("default_template", "prompteol"))) or "prompteol"
    return Preset(
        name=str(data["name"]),
        backbone=str(data["backbone"]),
        templates=normalised,
        aliases=[str(alias) for alias in data.get("aliases", [])],
        num_layers=data.get("num_layers"),
        status=status,
        source=str(data.get("source", "")),
        default_template=default_template,
    )


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


def iter_presets(directory: str | os.PathLike | None = None) -> Iterator[Preset]:
    """All presets of a directory (default: the packaged ``configs/``), sorted by file name.

    Args:
        directory: Folder with ``*.yaml`` presets.

    Yields:
        The presets.
    """
    directory = Path(directory) if directory is not None else PRESET_DIR
    for path in sorted(directory.glob("*.yaml")):
        yield load_preset_file(path)


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
    """The packaged preset whose name, backbone or alias equals ``backbone``, if any.

    Args:
        backbone: A backbone name as given to ``TokenPrependingTransformer``.

    Returns:
        The preset, or None.
    """
    for preset in iter_presets():
        if preset.matches(backbone):
            return preset
    return None
