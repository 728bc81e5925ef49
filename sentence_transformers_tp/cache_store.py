"""The checked local cache: where its entries live, how they are built, checked, listed and removed.

Cache layout (root: :func:`default_cache_dir`)::

    <cache>/assembled/<backbone>-<hash>/<file>.gguf   GGUF files rebuilt from part packages
    <cache>/gguf/<stem>-<hash>/                        dequantized checkpoints (base model + tokenizer)
    <cache>/hashes/<key>                               remembered SHA-256 of each source file (path, size, mtime)

``<hash>`` (:func:`entry_key`) is the start of the SHA-256 of the source file's *content* (for assembled files: the
checksum the backbone declares, else the content of its parts), so the same file installed in several virtual
environments (or copied elsewhere) shares one entry, and a changed file is converted again. A file's SHA-256
(:func:`file_sha256`) is computed once and remembered under ``hashes/`` by its path, size and mtime. Every checkpoint
entry is built in a temporary sibling and renamed into place only when complete (:func:`build_atomically`), under an
exclusive lock file that is removed again when the work ends, whether it succeeded or failed
(:func:`exclusive_lock`), so an interrupted conversion never leaves an entry that later loads, concurrent processes
do not corrupt each other, and no lock files pile up. :func:`list_cache` and :func:`clear_cache` (the
``st-tp cache`` command) show and remove entries.

Integrity: every checkpoint entry carries a manifest (``st_tp_manifest.json``: size, SHA-256 and mtime of every file
written at build time). Before an entry is used (:func:`check_entry_for_use`), every file's size is checked, and a
file whose mtime changed since the manifest was written is hashed again (a file written over in place); a full hash
of every file runs at build time and on :func:`list_cache` with ``verify=True`` (``st-tp cache --verify``; about 1 s
per 500 MB). A damaged entry is rebuilt from its GGUF source when that is available; otherwise
:class:`CacheEntryDamagedError` names the ``st-tp cache clear`` command. Entries built by older versions have no
manifest: their structure is checked (every ``*.json`` parses, each ``*.safetensors`` file is as long as its header
says, a config and a tokenizer exist) and, if it holds, the manifest is written then (listed as ``unverified`` until
that first use).

This module knows nothing of GGUF files or named backbones: :mod:`sentence_transformers_tp.gguf_conversion` fills
the checkpoint entries and :mod:`sentence_transformers_tp.backbones` the assembled ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

try:  # POSIX only; elsewhere the rename-and-tolerate-existing protocol alone keeps the cache consistent.
    import fcntl
except ImportError:  # pragma: no cover - exercised on Windows only
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

__all__ = [
    "ASSEMBLED_DIR",
    "CACHE_ENV_VAR",
    "CHECKPOINT_DIR",
    "CacheEntry",
    "CacheEntryDamagedError",
    "build_atomically",
    "cache_root",
    "check_cache_entry",
    "check_entry_for_use",
    "clear_cache",
    "current_umask",
    "default_cache_dir",
    "entry_key",
    "exclusive_lock",
    "file_sha256",
    "is_complete_entry",
    "list_cache",
    "read_json_object",
    "read_marker",
    "remove_stale_temporaries",
]

CACHE_ENV_VAR = "ST_TP_CACHE_DIR"
#: The folder (under the cache root) of the dequantized checkpoints.
CHECKPOINT_DIR = "gguf"
#: The folder (under the cache root) of the GGUF files assembled from part packages.
ASSEMBLED_DIR = "assembled"
_HASHES_DIR = "hashes"
_COMPLETE_MARKER = "st_tp_conversion.json"
#: Size, SHA-256 and mtime of every file of a checkpoint entry, written at build time.
_MANIFEST = "st_tp_manifest.json"
_MANIFEST_VERSION = 1
_HASH_BLOCK_BYTES = 8 * 1024 * 1024
#: Files at least this large show a progress bar while their SHA-256 is computed (once per file).
_HASH_PROGRESS_MIN_BYTES = 256 * 1024 * 1024
_KEY_LENGTH = 16


class CacheEntryDamagedError(ValueError):
    """A cache entry is damaged (a file truncated, missing or changed) and cannot be rebuilt from its source.

    The message names the ``st-tp cache clear`` command that removes the entry.
    """


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


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """Return the cache root: ``cache_dir`` if given, else :func:`default_cache_dir`.

    Args:
        cache_dir: Cache root, or None for the default.

    Returns:
        The cache root (not created).
    """
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def entry_key(sha256: str) -> str:
    """The key a cache entry is named by (``<name>-<key>``): the start of its source's SHA-256.

    Args:
        sha256: Hex SHA-256 of the entry's source content.

    Returns:
        Its first 16 hex characters.
    """
    return sha256[:_KEY_LENGTH]


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
    memo = cache_root(cache_dir) / _HASHES_DIR / hashlib.sha256(identity).hexdigest()[:32]
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
        while block := handle.read(_HASH_BLOCK_BYTES):
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
    manifest = read_json_object(manifest_path)
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


def check_entry_for_use(directory: str | os.PathLike) -> str:
    """Check a checkpoint entry before it is loaded (:func:`check_cache_entry`, sizes and changed files).

    An entry built by an older version without a manifest whose structure checks out gets its manifest written now
    (a read-only cache keeps it unverified).

    Args:
        directory: The entry's folder (``<cache>/gguf/<name>``).

    Returns:
        What is wrong with a damaged entry; empty when it can be used.
    """
    status, problem = check_cache_entry(directory)
    if status == "damaged":
        return problem
    if status == "unverified":
        _adopt_legacy_entry(Path(directory))
    return ""


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
    root = cache_root(cache_dir)
    entries: list[CacheEntry] = []
    for kind_dir in (CHECKPOINT_DIR, ASSEMBLED_DIR):
        folder = root / kind_dir
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_dir():
                continue  # lock files of running conversions
            if path.name.startswith("."):
                entries.append(CacheEntry("temporary", path, _disk_size(path)))
                continue
            if kind_dir == CHECKPOINT_DIR:
                marker = read_marker(path) or {}
                source = str(marker.get("backbone") or marker.get("source_name") or marker.get("source") or "")
                kind = "checkpoint" if marker else "temporary"
                status, problem = check_cache_entry(path, full=verify) if marker else ("", "")
            else:
                files = [p.name for p in path.glob("*.gguf")]
                source, kind, status, problem = (files[0] if files else ""), "assembled", "", ""
            entries.append(CacheEntry(kind, path, _disk_size(path), source, status, problem))
    hashes = root / _HASHES_DIR
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


def is_complete_entry(directory: str | os.PathLike) -> bool:
    """Tell whether a folder is a complete cache entry (its marker, written last before the rename, exists).

    Args:
        directory: A folder (any folder: ``False`` for one that is not a cache entry).

    Returns:
        ``True`` for an entry that :func:`build_atomically` completed.
    """
    return (Path(directory) / _COMPLETE_MARKER).is_file()


def read_marker(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The metadata a checkpoint entry was completed with (what its ``build`` returned: source, sha256, ...).

    Args:
        directory: A folder.

    Returns:
        The metadata, or None if the folder has no readable completion marker (it is no complete cache entry).
    """
    return read_json_object(Path(directory) / _COMPLETE_MARKER)


def read_json_object(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object in a file, or None if it is missing, unreadable or not a JSON object.

    Args:
        path: The file.

    Returns:
        The object, or None.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if needed) for the duration of the block.

    The lock file is removed again when the block ends (whether it succeeded or failed), so no lock files pile up.

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


def current_umask() -> int:
    """Return the process umask without changing it where possible (Linux exposes it in /proc).

    Returns:
        The umask, e.g. ``0o022``.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(root: Path, entry_name: str) -> None:
    """Delete temporary build directories of ``entry_name`` left behind by killed processes.

    Only safe while holding the entry's lock (:func:`exclusive_lock`): any temporary directory then belongs to a
    dead build.

    Args:
        root: The folder that holds the entry.
        entry_name: The entry's folder name.
    """
    for stale in root.glob(f".{entry_name}.tmp-*"):
        logger.debug("Removing stale temporary cache entry %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


def build_atomically(target: Path, build: Callable[[Path], dict]) -> None:
    """Build a cache directory in a temporary sibling and rename it onto ``target`` once complete.

    The completion marker (the metadata ``build`` returns, :func:`read_marker`) and the manifest (size, SHA-256
    and mtime of every file) are written last, before the rename.

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
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp creates 0700; give the usual permissions
        try:
            os.replace(tmp, target)
        except OSError:
            if not is_complete_entry(target):
                raise
            logger.debug("Cache entry %s was completed concurrently; discarding our copy", target)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------------------- internals


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
