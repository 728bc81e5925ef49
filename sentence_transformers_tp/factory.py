"""Building and loading ``SentenceTransformer`` models with a Token Prepending module."""

from __future__ import annotations

import os
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
        template: Template name, user template or list of templates; defaults to ``"prompteol"`` (or the preset's
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
        module = TokenPrependingTransformer(backbone or "smollm2", template or "prompteol", **module_kwargs)
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
