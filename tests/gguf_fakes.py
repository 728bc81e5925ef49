"""Stand-ins shared by the tests of the backbone registry, the GGUF conversion and the cache store: fake GGUF
files, a fake converter (put in place of ``gguf_conversion._convert_gguf``) and a look into the cache."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def fake_gguf(path: Path, payload: bytes = b"payload") -> Path:
    """Write a small file that starts with the GGUF magic.

    Args:
        path: The file to write.
        payload: What follows the magic.

    Returns:
        ``path``.
    """
    path.write_bytes(b"GGUF" + payload)
    return path


def fake_converter(calls: list[Path], delay: float = 0.0) -> Callable[[Path, Path], dict]:
    """Return a stand-in for ``_convert_gguf`` that records its calls and writes a tiny checkpoint.

    Args:
        calls: Gets the source of every call appended.
        delay: Seconds each conversion takes.

    Returns:
        The converter.
    """

    def convert(source: Path, output_dir: Path) -> dict:
        calls.append(source)
        time.sleep(delay)
        (output_dir / "config.json").write_text("{}", encoding="utf-8")
        return {"source": str(source)}

    return convert


def cache_entries(root: Path) -> list[str]:
    """List the entries (directories, including hidden temporaries) under ``<root>/gguf``.

    Args:
        root: The cache root.

    Returns:
        The entry names, sorted.
    """
    gguf_dir = root / "gguf"
    return sorted(p.name for p in gguf_dir.iterdir() if p.is_dir()) if gguf_dir.exists() else []


def truncate(path: Path, keep: int | None = None) -> None:
    """Cut a file to ``keep`` bytes (default: half).

    Args:
        path: The file.
        keep: How many bytes stay; None keeps half.
    """
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])
