"""Where a saved sentence-transformers(-tp) model lives: a local folder, or a hub id resolved through the HF cache.

One rule for every entry point (``TokenPrependingTransformer(id)``, :func:`~sentence_transformers_tp.factory.load_model`,
the LangChain / LlamaIndex classes, ``st-tp --model``): a model spec is a saved model when it names

* a local folder with a ``modules.json`` (also a snapshot folder inside an HF cache), or
* a hub id (``org/name``) whose repository, at ``revision``, has a ``modules.json``: looked up in the HF cache
  (``cache_folder``, else ``HF_HUB_CACHE`` / ``HF_HOME``) through ``huggingface_hub``, and on the Hub only when
  offline mode (``HF_HUB_OFFLINE=1``) is off; then only the small config files are fetched, the weights are
  downloaded by the loader itself.

A local path wins over a hub id of the same spelling, as in transformers. Named offline backbones
(``"smollm2"``...) and ``.gguf`` files are never looked up on the Hub.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from huggingface_hub.utils import validate_repo_id

from sentence_transformers_tp.backbones import is_named_backbone

logger = logging.getLogger(__name__)

__all__ = ["MODULES_FILE", "foreign_module_classes", "hub_options", "is_offline", "resolve_saved_model"]

#: The file that marks a saved sentence-transformers model.
MODULES_FILE = "modules.json"
#: Files read to learn a saved model's settings (fetched when a hub id is resolved online).
CONFIG_FILES = (MODULES_FILE, "sentence_bert_config.json")
#: transformers' names of the hub options -> :func:`resolve_saved_model`'s.
HUB_OPTION_NAMES = {
    "revision": "revision",
    "cache_dir": "cache_folder",
    "token": "token",
    "local_files_only": "local_files_only",
}
#: Packages whose module classes a saved model may name to be loaded without ``trust_remote_code``.
TRUSTED_PACKAGES = ("sentence_transformers.", "sentence_transformers_tp.")


def is_offline() -> bool:
    """Whether Hub access is off: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as huggingface_hub read it at
    import, or as set in the environment now."""
    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or now.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_options(*kwarg_dicts: Mapping[str, Any] | None) -> dict[str, Any]:
    """The hub options (``revision``, ``cache_folder``, ``token``, ``local_files_only``) found in transformers-style
    keyword dicts.

    sentence-transformers passes them to a module as ``config_kwargs`` / ``model_kwargs`` / ``processor_kwargs``
    entries ``revision``, ``cache_dir``, ``token`` and ``local_files_only``; the first dict that sets one wins.

    Args:
        *kwarg_dicts: The dicts (None entries are skipped).

    Returns:
        Keyword arguments for :func:`resolve_saved_model` (only those that are set).
    """
    options: dict[str, Any] = {}
    for kwargs in kwarg_dicts:
        for key, name in HUB_OPTION_NAMES.items():
            if kwargs and kwargs.get(key) is not None:
                options.setdefault(name, kwargs[key])
    return options


def _hub_repo_id(spec: str) -> str | None:
    """``spec`` if it can name a Hub model repository (not a named backbone, a ``.gguf`` file or a path)."""
    if is_named_backbone(spec) or spec.lower().endswith(".gguf") or spec.startswith((".", "~")):
        return None
    try:
        validate_repo_id(spec)
    except ValueError:
        return None
    return spec


def resolve_saved_model(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    cache_folder: str | os.PathLike | None = None,
    token: bool | str | None = None,
    local_files_only: bool = False,
) -> Path | None:
    """The local folder of a saved sentence-transformers model, if ``name_or_path`` names one.

    Args:
        name_or_path: A local path, a hub id, or any other backbone spec.
        revision: The hub revision (branch, tag or commit); ignored for a local path. Defaults to ``main``.
        cache_folder: The HF cache folder. Defaults to huggingface_hub's (``HF_HUB_CACHE``, else ``HF_HOME/hub``).
        token: Hub token, for private repositories.
        local_files_only: Look in the cache only (as with ``HF_HUB_OFFLINE=1``).

    Returns:
        The folder holding ``modules.json`` (for a hub id: the cache snapshot of that revision; online, only its
        config files are fetched here), or None when ``name_or_path`` is not a saved model, or is a hub id that
        is neither cached nor reachable (the real load then reports the problem).
    """
    spec = os.fspath(name_or_path)
    path = Path(spec).expanduser()
    if path.exists():
        return path if (path / MODULES_FILE).is_file() else None
    repo_id = _hub_repo_id(spec)
    if repo_id is None:
        return None
    offline = local_files_only or is_offline()
    cache_dir = os.fspath(cache_folder) if cache_folder is not None else None
    found: Path | None = None
    for filename in CONFIG_FILES:
        try:
            file = hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, token=token, local_files_only=offline
            )
        except (EntryNotFoundError, OSError, ValueError) as error:
            if filename == MODULES_FILE:
                logger.debug("%s is not a saved sentence-transformers model here: %s", spec, error)
                return None
            continue  # the module's own config loading reports a missing config
        found = found or Path(file).parent
    return found


def foreign_module_classes(folder: str | os.PathLike) -> list[str]:
    """The module classes a saved model's ``modules.json`` names from outside sentence-transformers(-tp).

    Loading such a model runs code that is not part of these installed packages, so it needs the caller's
    ``trust_remote_code=True``.

    Args:
        folder: The saved model folder (from :func:`resolve_saved_model`).

    Returns:
        The class references (empty when every module is a sentence-transformers or sentence-transformers-tp
        class; an unreadable ``modules.json`` gives ``["<unreadable modules.json>"]``).
    """
    try:
        modules = json.loads((Path(folder) / MODULES_FILE).read_text(encoding="utf-8"))
        types = [str(module["type"]) for module in modules]
    except (OSError, ValueError, TypeError, KeyError):
        return [f"<unreadable {MODULES_FILE}>"]
    return [name for name in types if not name.startswith(TRUSTED_PACKAGES)]
