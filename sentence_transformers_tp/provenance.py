"""Where a TP model's backbone comes from: its hub id, license and languages (model-card and MTEB metadata).

* :data:`NAMED_BACKBONE_SOURCES`: hub id, MTEB languages, model-card languages and license of each named offline
  backbone;
* :func:`backbone_source` / :func:`backbone_license` / :func:`backbone_card_language`: those facts for any module
  (a named backbone, a hub id, a preset alias, or a local model card); never a local path.

The model card (:mod:`sentence_transformers_tp.model_card`) and the MTEB metadata
(:mod:`sentence_transformers_tp.evaluation.model_meta`) both read them.
"""

from __future__ import annotations

import os
from typing import Any

from huggingface_hub import ModelCard

from sentence_transformers_tp.presets import find_preset_for_backbone

NAMED_BACKBONE_SOURCES: dict[str, dict[str, Any]] = {
    "smollm2": {
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "languages": ["eng-Latn"],
        "card_language": ["en"],
        "license": "apache-2.0",
    },
    "gemma3-270m": {"hub_id": "google/gemma-3-270m", "languages": None, "card_language": None, "license": "gemma"},
    "qwen2.5-coder-0.5b": {
        "hub_id": "Qwen/Qwen2.5-Coder-0.5B-Instruct",
        "languages": None,
        "card_language": None,
        "license": "apache-2.0",
    },
    "qwen2.5-coder-1.5b": {
        "hub_id": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
        "languages": None,
        "card_language": None,
        "license": "apache-2.0",
    },
}
"""Hub model, MTEB languages, model-card languages (ISO 639-1), and license id of each named offline backbone (the
GGUF files are quantized copies)."""


def backbone_key(module: Any) -> str:
    """The backbone name as the user gave it, lower-cased and stripped (``"smollm2"``)."""
    return str(module.backbone_name).strip().lower()


def backbone_source(module: Any) -> str | None:
    """The hub id of the backbone the model is adapted from, if known.

    Args:
        module: The TP module.

    Returns:
        The hub id of a named backbone, the backbone name when it looks like a hub id (``org/name``, not a local
        path), else the hub id among the backbone preset's aliases, else ``None``.
    """
    key = backbone_key(module)
    if key in NAMED_BACKBONE_SOURCES:
        return NAMED_BACKBONE_SOURCES[key]["hub_id"]
    name = str(module.backbone_name)
    if name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/", "~")):
        return name
    preset = find_preset_for_backbone(name)
    if preset is not None:
        return next((alias for alias in preset.aliases if alias.count("/") == 1), None)
    return None


def backbone_license(module: Any) -> str | None:
    """The backbone's license as an MTEB license id, if known (named backbones, or a local model card).

    Args:
        module: The TP module.

    Returns:
        E.g. ``"apache-2.0"``; ``None`` when unknown.
    """
    key = backbone_key(module)
    if key in NAMED_BACKBONE_SOURCES:
        return NAMED_BACKBONE_SOURCES[key]["license"]
    path = getattr(getattr(module.model, "config", None), "_name_or_path", None)
    readme = os.path.join(str(path), "README.md") if path else None
    if readme and os.path.isfile(readme):
        try:
            value = ModelCard.load(readme).data.to_dict().get("license")
        except Exception:  # a malformed card only means the license is unknown
            return None
        return str(value).lower() if value else None
    return None


def backbone_card_language(module: Any) -> list[str] | None:
    """The backbone's languages as a model card lists them (``["en"]``), if known (named backbones).

    Args:
        module: The TP module.

    Returns:
        ISO 639-1 codes, or ``None`` when unknown.
    """
    entry = NAMED_BACKBONE_SOURCES.get(backbone_key(module))
    return list(entry["card_language"]) if entry and entry.get("card_language") else None


__all__ = [
    "NAMED_BACKBONE_SOURCES",
    "backbone_card_language",
    "backbone_key",
    "backbone_license",
    "backbone_source",
]
