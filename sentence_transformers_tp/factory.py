"""Building and loading ``SentenceTransformer`` models with a Token Prepending module."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from sentence_transformers_tp.module import TokenPrependingTransformer


def is_saved_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a saved sentence-transformers folder (it has a ``modules.json``).

    Args:
        path: A path or name.

    Returns:
        True for a saved model folder.
    """
    return os.path.isfile(os.path.join(str(path), "modules.json"))


def build_model(
    backbone: str | None = None,
    template: str | list[str] | None = None,
    *,
    preset: str | None = None,
    device: str | None = None,
    **module_kwargs: Any,
) -> SentenceTransformer:
    """A ``SentenceTransformer`` whose only module is a :class:`TokenPrependingTransformer`.

    Args:
        backbone: Hub id, local checkpoint, ``.gguf`` file or named offline backbone. Defaults to the preset's
            backbone, or ``"smollm2"`` without a preset; given together with a preset, it replaces the preset's
            backbone (e.g. a local copy of it).
        template: Template name, user template or list of templates; defaults to the backbone preset's tuned combination (else ``"prompteol"``; or the preset's
            default template).
        preset: A preset name or YAML path (see :mod:`sentence_transformers_tp.presets`); its layer settings are
            used unless ``module_kwargs`` override them.
        device: Device for the model (default: sentence-transformers' choice).
        **module_kwargs: Further :class:`TokenPrependingTransformer` arguments (``tp_start``, ``tp_exit``,
            ``output_layer``, ``max_seq_length``, ``model_kwargs``...).

    Returns:
        The model.
    """
    module_kwargs = {key: value for key, value in module_kwargs.items() if value is not None}
    if preset is not None:
        if backbone is not None:
            module_kwargs["model_name_or_path"] = backbone
        module = TokenPrependingTransformer.from_preset(preset, template, **module_kwargs)
    else:
        module = TokenPrependingTransformer(backbone or "smollm2", template, **module_kwargs)
    return SentenceTransformer(modules=[module], device=device)


def load_model(
    spec: str | None = None,
    template: str | list[str] | None = None,
    *,
    preset: str | None = None,
    device: str | None = None,
    **module_kwargs: Any,
) -> SentenceTransformer:
    """Load a saved TP model, or build one from a backbone.

    Args:
        spec: A saved sentence-transformers-tp folder (loaded with ``trust_remote_code=True``), or anything
            :func:`build_model` takes as ``backbone`` (None: the preset's backbone, or ``"smollm2"``).
        template: For a backbone: see :func:`build_model`. For a saved model: must be None (a saved model keeps
            its template; build a new model to change it).
        preset: For a backbone: see :func:`build_model`.
        device: Device for the model.
        **module_kwargs: For a backbone: see :func:`build_model`. For a saved model, ``max_seq_length`` may be
            given; other settings are fixed by the saved model.

    Returns:
        The model.

    Raises:
        ValueError: If template / layer settings are given for a saved model.
    """
    module_kwargs = {key: value for key, value in module_kwargs.items() if value is not None}
    if spec is not None and is_saved_model(spec):
        max_seq_length = module_kwargs.pop("max_seq_length", None)
        if template is not None or preset is not None or module_kwargs:
            given = [name for name, value in (("template", template), ("preset", preset)) if value is not None]
            given = ", ".join([*given, *module_kwargs])
            raise ValueError(
                f"{spec!r} is a saved model, whose settings are fixed; remove {given}, or build a new model from its "
                f"backbone instead."
            )
        model = SentenceTransformer(str(spec), trust_remote_code=True, device=device)
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        return model
    return build_model(spec, template, preset=preset, device=device, **module_kwargs)


def save_model(model: SentenceTransformer, path: str | os.PathLike, **save_kwargs: Any) -> Path:
    """Save a model so that ``path`` holds either the complete new model or what it held before, never a mix.

    The model is written into a temporary sibling folder first and swapped into place only when the save
    succeeded; an existing folder at ``path`` is replaced as a whole (``SentenceTransformer.save`` itself writes
    into the folder in place, so a failure there can leave a half-written model).

    Args:
        model: The model.
        path: The target folder.
        **save_kwargs: Passed to ``SentenceTransformer.save``.

    Returns:
        The target folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        model.save(str(staging), **save_kwargs)
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not path.exists():
        os.replace(staging, path)
        return path
    backup = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(path, backup)
    try:
        os.replace(staging, path)
    except BaseException:
        os.replace(backup, path)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(backup, ignore_errors=True)
    return path
