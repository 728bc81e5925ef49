"""Finished chunks of an index build, kept on disk so an interrupted build resumes where it stopped.

A full-corpus document pass can take hours on a CPU. While :meth:`HybridRetriever.index(corpus, path=...)
<sentence_transformers_tp.hybrid.retriever.HybridRetriever.index>` encodes, each finished chunk is written to a hidden
sibling folder of the index, ``.<name>.partial``. A later build of the same corpus with the same settings and chunk
size loads those chunks instead of encoding them again; a build of anything else discards them (with a warning)
and starts over. The folder is removed once the index is saved.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
from transformers.utils import logging

logger = logging.get_logger(__name__)

PARTIAL_FILE = "partial_index.json"
"""The key file of a partial build: what its chunks were encoded from."""


def partial_folder(path: str | os.PathLike) -> Path:
    """The folder that holds the finished chunks of a build of the index at ``path``.

    Args:
        path: The index folder.

    Returns:
        ``<parent>/.<name>.partial``.
    """
    path = Path(path)
    return path.parent / f".{path.name}.partial"


class PartialIndex:
    """The finished chunks of one build, keyed by what they were encoded from.

    Args:
        folder: The partial folder (see :func:`partial_folder`).
        key: What the chunks depend on (corpus hash, index settings, chunk size); JSON-serialisable.
    """

    def __init__(self, folder: str | os.PathLike, key: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.key = json.loads(json.dumps(dict(key), sort_keys=True, default=str))
        key_file = self.folder / PARTIAL_FILE
        if self.folder.exists():
            saved = json.loads(key_file.read_text(encoding="utf-8")) if key_file.is_file() else None
            if saved != self.key:
                logger.warning(
                    f"{self.folder} holds the chunks of a build of another corpus or with other settings: "
                    "discarding them and starting over"
                )
                shutil.rmtree(self.folder)
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            key_file.write_text(json.dumps(self.key, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def _file(self, channel: str, number: int) -> Path:
        return self.folder / f"{channel}-{number:06d}.npz"

    def done(self) -> int:
        """How many chunk files are stored."""
        return sum(1 for _ in self.folder.glob("*-*.npz"))

    def load(self, channel: str, number: int) -> Any:
        """The stored encoding of chunk ``number`` of ``channel`` (None if it was not finished).

        Args:
            channel: ``"dense"``, ``"sparse"`` or ``"joint"``.
            number: The chunk's position in the build.

        Returns:
            A dense array, a CSR matrix, a ``(dense, sparse)`` pair for ``"joint"``, or None.
        """
        file = self._file(channel, number)
        if not file.is_file():
            return None
        with np.load(file) as stored:
            dense = stored["dense"] if "dense" in stored else None
            sparse = None
            if "sparse_data" in stored:
                sparse = scipy.sparse.csr_matrix(
                    (stored["sparse_data"], stored["sparse_indices"], stored["sparse_indptr"]),
                    shape=tuple(int(n) for n in stored["sparse_shape"]),
                )
        if channel == "joint":
            return dense, sparse
        return dense if channel == "dense" else sparse

    def save(self, channel: str, number: int, part: Any) -> None:
        """Store the encoding of one finished chunk (written whole or not at all).

        Args:
            channel: ``"dense"``, ``"sparse"`` or ``"joint"``.
            number: The chunk's position in the build.
            part: What :meth:`load` returns for this channel.
        """
        dense, sparse = part if channel == "joint" else (part, None) if channel == "dense" else (None, part)
        arrays: dict[str, np.ndarray] = {}
        if dense is not None:
            arrays["dense"] = np.asarray(dense, dtype=np.float32)
        if sparse is not None:
            sparse = scipy.sparse.csr_matrix(sparse)
            arrays.update(
                sparse_data=sparse.data,
                sparse_indices=sparse.indices,
                sparse_indptr=sparse.indptr,
                sparse_shape=np.asarray(sparse.shape, dtype=np.int64),
            )
        file = self._file(channel, number)
        staging = file.with_name(f".{file.stem}.tmp.npz")
        np.savez(staging, **arrays)
        os.replace(staging, file)

    def remove(self) -> None:
        """Delete the folder (the index it was building is saved)."""
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["PARTIAL_FILE", "PartialIndex", "partial_folder"]
