"""Building and loading ``SentenceTransformer`` models with a Token Prepending module."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from sentence_transformers_tp.module import TokenPrependingTransformer
from sentence_transformers_tp.saved import foreign_module_classes, resolve_saved_model

#: Keyword dicts of the transformers loaders: they change how a saved model is loaded (dtype...), not its settings.
LOADER_KWARGS = ("model_kwargs", "processor_kwargs", "config_kwargs")


def as_module(model: Any, template: str | Sequence[str] | None = None, **module_kwargs: Any) -> Any:
    """The :class:`~sentence_transformers_tp.module.TokenPrependingTransformer` of a model (what the tuners and the
    labeller run).

    Args:
        model: A module, a ``SentenceTransformer`` whose first module is one, or a backbone name/path (a module is
            then built with ``template``, default ``"prompteol"``, and ``module_kwargs``).
        template: For a given module: None or the module's template.
        **module_kwargs: Constructor arguments when a module is built.

    Raises:
        ValueError: If the model holds no such module, or ``template`` differs from the module's.
    """
    if isinstance(model, TokenPrependingTransformer):
        module = model
    elif hasattr(model, "__getitem__") and hasattr(model, "encode"):
        module = model[0]
        if not isinstance(module, TokenPrependingTransformer):
            raise ValueError("The SentenceTransformer's first module is not a TokenPrependingTransformer.")
    else:
        return TokenPrependingTransformer(str(model), template or "prompteol", **module_kwargs)
    if template is not None and template != module.template:
        raise ValueError(
            f"The model's template is {module.template!r}; build a model with template {template!r} to tune it."
        )
    return module


def is_saved_model(
    path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_folder: str | os.PathLike | None = None,
    token: bool | str | None = None,
) -> bool:
    """Whether ``path`` names a saved sentence-transformers model: a local folder with a ``modules.json``, or a hub id
    whose repository has one (looked up in the HF cache, and on the Hub unless ``HF_HUB_OFFLINE=1``; see
    :func:`~sentence_transformers_tp.saved.resolve_saved_model`).

    Args:
        path: A path, hub id or other backbone spec.
        revision: Hub revision (branch, tag or commit) of a hub id.
        cache_folder: HF cache folder (default: huggingface_hub's).
        token: Hub token.

    Returns:
        True for a saved model.
    """
    return resolve_saved_model(path, revision=revision, cache_folder=cache_folder, token=token) is not None


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
    revision: str | None = None,
    cache_folder: str | None = None,
    token: bool | str | None = None,
    trust_remote_code: bool = False,
    **module_kwargs: Any,
) -> SentenceTransformer:
    """Load a saved TP model, or build one from a backbone.

    Args:
        spec: A saved sentence-transformers-tp model (a local folder, or a hub id resolved through the HF cache, see
            :func:`is_saved_model`), or anything :func:`build_model` takes as ``backbone`` (None: the preset's
            backbone, or ``"smollm2"``).
        template: For a backbone: see :func:`build_model`. For a saved model: must be None (a saved model keeps
            its template; build a new model to change it).
        preset: For a backbone: see :func:`build_model`.
        device: Device for the model.
        revision: Hub revision (branch, tag or commit) of a hub id, for a saved model and a backbone alike.
        cache_folder: HF cache folder for hub ids (default: ``SENTENCE_TRANSFORMERS_HOME`` for saved models, as
            sentence-transformers does, else huggingface_hub's ``HF_HUB_CACHE``).
        token: Hub token.
        trust_remote_code: Allow code from outside the installed packages: the backbone's custom modeling code
            (transformers), and module classes of a saved model other than sentence-transformers(-tp) ones. The
            package's own module class is always allowed (it is installed), so a saved TP model never needs it.
        **module_kwargs: For a backbone: see :func:`build_model`. For a saved model, ``max_seq_length`` and the
            loader dicts ``model_kwargs`` / ``processor_kwargs`` / ``config_kwargs`` (e.g. ``{"dtype": ...}``) may
            be given; other settings are fixed by the saved model.

    Returns:
        The model.

    Raises:
        ValueError: If template / layer settings are given for a saved model, or a saved model names module
            classes from outside sentence-transformers(-tp) without ``trust_remote_code=True``.
    """
    module_kwargs = {key: value for key, value in module_kwargs.items() if value is not None}
    hub = {"revision": revision, "token": token}
    saved_cache = cache_folder if cache_folder is not None else os.environ.get("SENTENCE_TRANSFORMERS_HOME")
    folder = resolve_saved_model(spec, cache_folder=saved_cache, **hub) if spec is not None else None
    # Hub options (transformers' names) for every transformers loader; the caller's own dict entries win.
    options = {"trust_remote_code": trust_remote_code, **{k: v for k, v in hub.items() if v is not None}}
    if folder is not None:
        max_seq_length = module_kwargs.pop("max_seq_length", None)
        loaders = {key: {**options, **module_kwargs.pop(key, {})} for key in LOADER_KWARGS}
        if template is not None or preset is not None or module_kwargs:
            given = [name for name, value in (("template", template), ("preset", preset)) if value is not None]
            given = ", ".join([*given, *module_kwargs])
            raise ValueError(
                f"{spec!r} is a saved model, whose settings are fixed; remove {given}, or build a new model from its "
                f"backbone instead."
            )
        foreign = foreign_module_classes(folder)
        if foreign and not trust_remote_code:
            raise ValueError(
                f"{spec!r} names module classes from outside sentence-transformers(-tp) ({', '.join(foreign)}); "
                "pass trust_remote_code=True only if you trust that code."
            )
        # trust_remote_code=True lets sentence-transformers import the installed sentence_transformers_tp class;
        # the transformers loaders get the caller's trust_remote_code (in `loaders`).
        model = SentenceTransformer(
            str(spec), trust_remote_code=True, device=device, cache_folder=saved_cache, **hub, **loaders
        )
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        return model
    if cache_folder is not None:
        options["cache_dir"] = cache_folder
    if len(options) > 1 or trust_remote_code:
        for key in LOADER_KWARGS:
            module_kwargs[key] = {**options, **module_kwargs.get(key, {})}
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
