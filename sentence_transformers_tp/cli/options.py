"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib.util
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

#: The fix named by errors about an unknown or unloadable backbone.
MODEL_FORMS = "a saved model folder, a local checkpoint folder, a .gguf file, or a hub id (org/name)"


def builtin_backbones() -> str:
    """The built-in (named, offline) backbones, comma-separated."""
    from sentence_transformers_tp.backbones import NAMED_BACKBONES

    return ", ".join(NAMED_BACKBONES)


def check_model_spec(spec: str | None) -> None:
    """Reject a model specification that cannot work, before any work starts.

    Args:
        spec: What ``--model`` gave (None: the default backbone).

    Raises:
        FileNotFoundError: For a ``.gguf`` file or a path that does not exist, or a folder that holds no model.
        ValueError: For a name that is close to a built-in backbone or preset but is neither (a misspelling).
    """
    from sentence_transformers_tp.backbones import NAMED_BACKBONES, is_named_backbone

    if spec is None or is_named_backbone(spec):
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        if not any((path / name).is_file() for name in ("config.json", "modules.json", "sentence_bert_config.json")):
            raise FileNotFoundError(
                f"{spec!r} is a folder without a model (no config.json or modules.json); give {MODEL_FORMS}, or a "
                f"built-in backbone: {builtin_backbones()}"
            )
        return
    if path.exists():
        return
    if spec.lower().endswith(".gguf") or spec.startswith((".", "/", "~")) or os.sep + os.sep in spec:
        raise FileNotFoundError(
            f"{spec!r} does not exist; give {MODEL_FORMS}, or a built-in backbone: {builtin_backbones()}"
        )
    if "/" not in spec:
        from sentence_transformers_tp.presets import iter_presets

        known = list(NAMED_BACKBONES) + [p.name for p in iter_presets()]
        close = difflib.get_close_matches(spec.lower(), known, n=1, cutoff=0.75)
        if close:
            raise ValueError(
                f"unknown backbone {spec!r} (did you mean {close[0]!r}?); built-in backbones: {builtin_backbones()}; "
                f"or give {MODEL_FORMS}"
            )


def check_output_path(path: str | None, flag: str) -> None:
    """Check, before any work, that a file can be written at ``path`` (missing parent folders are created later).

    Args:
        path: The output file (None: nothing to check).
        flag: The option that gave it, for the message.

    Raises:
        ValueError: If ``path`` is a directory, or its nearest existing parent is not a writable folder.
    """
    if path is None:
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"{flag} {path}: is a directory; give a file name")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: cannot write there ({parent} is not a writable folder); choose another path")


def check_output_folder(path: str | None, flag: str) -> None:
    """Like :func:`check_output_path`, for an output folder (which may exist).

    Raises:
        ValueError: If ``path`` is an existing file, or its nearest existing parent is not a writable folder.
    """
    if path is None:
        return
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ValueError(f"{flag} {path}: is a file; give a folder")
    if target.is_dir():
        if not os.access(target, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {path}: the folder is not writable; choose another path")
        return
    check_output_path(path, flag)


def require_module(module: str, feature: str, install: str) -> None:
    """Check, before any work, that an optional dependency is installed.

    Args:
        module: The importable module name.
        feature: What needs it (for the message), e.g. ``"--mteb"``.
        install: The pip requirement that installs it.

    Raises:
        ImportError: Naming the ``pip install`` command.
    """
    if importlib.util.find_spec(module) is None:
        raise ImportError(f'{feature} needs the {module!r} package: pip install "{install}"')


def command_line(subcommand: str) -> str | None:
    """The ``st-tp`` command line being run, for the record in a preset (None when not run as that subcommand).

    Args:
        subcommand: The expected subcommand (e.g. ``"tune-retrieval"``).

    Returns:
        The shell-quoted command, or None.
    """
    return shlex.join(["st-tp", *sys.argv[1:]]) if sys.argv[1:2] == [subcommand] else None


def write_outputs(outputs: Sequence[tuple[str | None, str]]) -> None:
    """Write ``(path, text)`` pairs whose path is set (parent folders created; a final newline added).

    Args:
        outputs: The files to write.
    """
    for path, text in outputs:
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n", encoding="utf-8")


def parse_template_names(text: str, flag: str) -> list[str]:
    """Parse a comma-separated list of built-in template names (e.g. ``--templates``).

    Args:
        text: The option value.
        flag: The option, for the error message.

    Returns:
        The names as given.

    Raises:
        ValueError: If the list is empty or names an unknown template.
    """
    from sentence_transformers_tp.templates import canonical_template_name

    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if canonical_template_name(t) is None]
    if unknown or not names:
        raise ValueError(f"{flag}: unknown or no template(s) {', '.join(unknown)}")
    return names


def parse_tp_bands(text: str) -> list[tuple[int, int]]:
    """Parse ``--tp-bands`` (``"1-3,1-4"``: ``tp_start-tp_exit`` pairs) into bands.

    Args:
        text: The option value.

    Returns:
        ``[(tp_start, tp_exit), ...]``.

    Raises:
        ValueError: Naming the part that does not parse.
    """
    bands = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            start, exit_ = (int(x) for x in part.split("-"))
        except ValueError:
            raise ValueError(
                f"--tp-bands: cannot parse {part!r}; expected tp_start-tp_exit pairs like 1-3,1-4"
            ) from None
        bands.append((start, exit_))
    return bands


def load_module(spec: str, template: str | None = None, **kwargs: Any) -> Any:
    """Build a :class:`~sentence_transformers_tp.TokenPrependingTransformer`, with one-line errors for bad specs.

    Args:
        spec: The backbone.
        template: The template (None: the module's default).
        **kwargs: Further module arguments.

    Returns:
        The module.
    """
    from sentence_transformers_tp.module import TokenPrependingTransformer

    check_model_spec(spec)
    with backbone_errors(spec):
        if template is None:
            return TokenPrependingTransformer(spec, **kwargs)
        return TokenPrependingTransformer(spec, template, **kwargs)


@contextlib.contextmanager
def backbone_errors(spec: str | None) -> Iterator[None]:
    """Turn a failed backbone load (an ``OSError`` from transformers / huggingface_hub) into a one-line
    ``ValueError`` that names the built-in backbones and the accepted forms.

    Args:
        spec: The model specification being loaded.

    Yields:
        Nothing; guards the block.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as error:
        from sentence_transformers_tp.backbones import is_named_backbone
        from sentence_transformers_tp.presets import find_preset_for_backbone

        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        preset = find_preset_for_backbone(spec) if spec else None
        hint = ""
        if preset is not None and is_named_backbone(preset.backbone) and spec != preset.backbone:
            hint = f" (the built-in backbone {preset.backbone!r} is this model: --model {preset.backbone})"
        raise ValueError(
            f"cannot load {spec!r}: {first}{hint}; give a built-in backbone ({builtin_backbones()}) or {MODEL_FORMS} "
            "that is available offline"
        ) from None


def add_model_options(parser: argparse.ArgumentParser, *, model_flag: bool = True) -> None:
    """Options that choose and configure a model.

    Args:
        parser: The subcommand parser.
        model_flag: Add ``--model`` (False when the subcommand takes the model as a positional argument).
    """
    if model_flag:
        parser.add_argument(
            "--model",
            help="a saved model folder, a hub id or local checkpoint, a .gguf file, or a built-in backbone "
            f"({builtin_backbones()}) (default: the preset's backbone, else smollm2)",
        )
    parser.add_argument(
        "--template",
        help="prompteol, metaeol, pretended_cot, knowledge, ck, a comma-separated ensemble of these (e.g. "
        "pretended_cot,knowledge), or a template with a {sentence} slot (default: prompteol)",
    )
    parser.add_argument(
        "--demonstration",
        action="append",
        help="an in-context demonstration: 'SENTENCE => WORD', or a word of the shipped pool (e.g. Music); repeatable",
    )
    parser.add_argument("--cp-layer", type=int, help="Contrastive Prompting layer (0-based; default: no CP)")
    parser.add_argument("--cp-alpha", type=float, help="Contrastive Prompting scale in ns mode (default: 1.0)")
    parser.add_argument("--cp-mode", choices=["ns", "nr"], help="Contrastive Prompting mode (default: ns)")
    parser.add_argument(
        "--preset",
        help="a built-in preset name (sentence_transformers_tp/configs/) or a preset YAML file (sets the TP layers)",
    )
    parser.add_argument("--tp-start", type=int, help="first decoder layer (0-based) whose placeholder is replaced")
    parser.add_argument(
        "--tp-exit", type=int, help="first layer after tp-start without replacement (<= start: TP off)"
    )
    parser.add_argument("--output-layer", type=int, help="hidden_states index of the embedding (-1: final layer)")
    parser.add_argument("--max-seq-length", type=int, help="truncate prompts to this many tokens (sentence only)")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: automatic)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weights dtype (default: float32)")


def model_from_args(args: argparse.Namespace, spec: str | None = None) -> Any:
    """Load or build the model the options describe.

    Args:
        args: Parsed arguments of :func:`add_model_options`.
        spec: The model spec (default: ``args.model``; None: the preset's backbone, else smollm2).

    Returns:
        A ``SentenceTransformer``.
    """
    from sentence_transformers_tp.factory import load_model

    spec = spec if spec is not None else getattr(args, "model", None)
    check_model_spec(spec)
    model_kwargs = None
    if args.dtype:
        import torch

        model_kwargs = {"dtype": getattr(torch, args.dtype)}
    with backbone_errors(spec):
        return load_model(
            spec,
            parse_template(args.template),
            preset=args.preset,
            device=args.device,
            tp_start=args.tp_start,
            tp_exit=args.tp_exit,
            output_layer=args.output_layer,
            max_seq_length=args.max_seq_length,
            model_kwargs=model_kwargs,
            demonstrations=parse_demonstration_options(getattr(args, "demonstration", None)),
            cp_layer=getattr(args, "cp_layer", None),
            cp_alpha=getattr(args, "cp_alpha", None),
            cp_mode=getattr(args, "cp_mode", None),
        )


def parse_template(value: str | None) -> str | list[str] | None:
    """``--template``: a comma-separated list of built-in names is an ensemble; anything else is taken as given.

    Args:
        value: The option value.

    Returns:
        A template spec.
    """
    from sentence_transformers_tp.templates import canonical_template_name

    if value is None or "{sentence}" in value or "," not in value:
        return value
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if canonical_template_name(name) is None]
    if unknown:
        raise ValueError(f"--template: unknown built-in template(s) {', '.join(unknown)} in the ensemble {value!r}")
    return names


def parse_demonstration_options(values: list[str] | None) -> list[Any] | None:
    """``--demonstration``: ``'SENTENCE => WORD'`` pairs or words of the shipped pool.

    Args:
        values: The option values.

    Returns:
        Demonstrations for :class:`~sentence_transformers_tp.TokenPrependingTransformer`, or None.
    """
    from sentence_transformers_tp.demonstrations import find_demonstration, parse_demonstrations

    if not values:
        return None
    demos: list[Any] = []
    for value in values:
        if "=>" in value:
            sentence, word = (part.strip() for part in value.rsplit("=>", 1))
            demos.extend(parse_demonstrations([(sentence, word)]))
        else:
            try:
                demos.append(find_demonstration(value.strip()))
            except KeyError:
                raise ValueError(
                    f"--demonstration {value!r}: not a word of the shipped pool; write 'SENTENCE => WORD'"
                ) from None
    return demos
