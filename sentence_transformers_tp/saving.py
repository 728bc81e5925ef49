"""The saved-model format of :class:`~sentence_transformers_tp.module.TokenPrependingTransformer`: the package
requirement a saved model declares, the check of a saved module config, the constructor arguments a saved config
gives (as ``Transformer.load`` builds them), and the attention default of the backbone load.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import AutoConfig

__all__ = [
    "EAGER_ATTENTION_FAMILIES",
    "FORMAT_VERSION",
    "PACKAGE_NAME",
    "add_requirement",
    "check_saved_config",
    "load_arguments",
    "with_safe_attention",
]

logger = logging.getLogger(__name__)

#: Version of the saved-model format; saved models require ``sentence-transformers-tp>=`` this version.
FORMAT_VERSION = "0.1.0"
PACKAGE_NAME = "sentence-transformers-tp"

#: Families whose SDPA attention gave wrong, batch-dependent embeddings on CUDA (Gemma-3-270M, transformers 5.23;
#: docs/tuning.md): eager attention is their default unless the caller chooses one.
EAGER_ATTENTION_FAMILIES = {"gemma2", "gemma3", "gemma3_text"}

#: The old names of the loader keyword arguments in saved configs, with their new names.
_OLD_KWARGS_NAMES = {
    "model_args": "model_kwargs",
    "tokenizer_args": "processor_kwargs",
    "config_args": "config_kwargs",
}


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


def check_saved_config(config: Mapping[str, Any] | None, where: str) -> None:
    """Refuse a missing saved module config, or one without TP settings, instead of falling back to defaults.

    Args:
        config: The config read (empty or None when the file is missing).
        where: The config file, for the message.

    Raises:
        ValueError: If the config holds no ``template``.
    """
    if not config or "template" not in config:
        raise ValueError(
            f"{where} is missing or holds no TokenPrependingTransformer settings ('template', 'tp_start', ...), "
            f"so the model cannot be rebuilt as it was saved. {REBUILD_ADVICE}"
        )


#: What to do about a damaged saved config.
REBUILD_ADVICE = "Re-save the model, or rebuild it from its backbone (st-tp build or TokenPrependingTransformer(...))."


def load_arguments(
    config: Mapping[str, Any],
    config_keys: Sequence[str],
    hub: Mapping[str, Any],
    loader_kwargs: Mapping[str, Mapping[str, Any] | None],
    init_defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The constructor arguments of a saved module, merged as ``Transformer.load`` merges them: for the loader
    keyword arguments the caller's win over the hub arguments, which win over the saved ones; ``init_defaults`` fill
    keys the config lacks. Keys the module does not know (e.g. from a newer version) are dropped with a warning.

    Args:
        config: The saved config.
        config_keys: The module's ``config_keys``.
        hub: ``subfolder``, ``token``, ``cache_dir``, ``revision``, ``local_files_only``, ``trust_remote_code``.
        loader_kwargs: The caller's ``model_kwargs``, ``processor_kwargs`` and ``config_kwargs``.
        init_defaults: Defaults for missing keys.

    Returns:
        The keyword arguments.
    """
    unknown = sorted(set(config) - set(config_keys) - set(_OLD_KWARGS_NAMES))
    if unknown:
        logger.warning(f"Ignoring unknown settings {unknown} of the saved module config.")
    arguments = {key: value for key, value in config.items() if key not in unknown}
    for old, new in _OLD_KWARGS_NAMES.items():
        saved = {**arguments.pop(old, {}), **arguments.get(new, {})}
        arguments[new] = {**saved, **hub, **(loader_kwargs.get(new) or {})}
    for key, value in (init_defaults or {}).items():
        arguments.setdefault(key, value)
    return arguments


def with_safe_attention(
    model_name_or_path: str, model_kwargs: dict[str, Any] | None, config_kwargs: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Default ``attn_implementation="eager"`` for the families in :data:`EAGER_ATTENTION_FAMILIES`.

    Args:
        model_name_or_path: The backbone checkpoint.
        model_kwargs: The caller's ``AutoModel.from_pretrained`` arguments.
        config_kwargs: The caller's ``AutoConfig.from_pretrained`` arguments.

    Returns:
        ``model_kwargs``, with eager attention for those families unless the caller chose one.
    """
    if model_kwargs and "attn_implementation" in model_kwargs:
        return model_kwargs
    try:
        model_type = AutoConfig.from_pretrained(model_name_or_path, **(config_kwargs or {})).model_type
    except Exception:  # the real load reports any problem with the checkpoint
        return model_kwargs
    if model_type not in EAGER_ATTENTION_FAMILIES:
        return model_kwargs
    logger.info(f"Using eager attention for {model_type} (SDPA gave wrong, batch-dependent embeddings on CUDA).")
    return {**(model_kwargs or {}), "attn_implementation": "eager"}
