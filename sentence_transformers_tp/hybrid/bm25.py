"""The BM25 channel: a thin wrapper of ``bm25s`` with the English Snowball stemmer and stopwords.

The settings are the ones bm25s documents and MTEB's ``mteb/baseline-bm25s`` model uses for English tasks:
``bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"))`` and ``bm25s.BM25()`` defaults
(Lucene variant, ``k1=1.5``, ``b=0.75``), so a run of :class:`BM25Channel` equals MTEB's BM25 run on the same corpus.

Needs the ``hybrid`` extra: ``pip install "sentence-transformers-tp[hybrid]"``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BM25_DEFAULTS: dict[str, Any] = {
    "method": "lucene",
    "k1": 1.5,
    "b": 0.75,
    "delta": 0.5,
    "stopwords": "en",
    "stemmer": "english",
}
"""Settings of the BM25 channel (bm25s defaults with English stopwords and stemmer, as MTEB's BM25 model)."""


def _import_bm25s() -> tuple[Any, Any]:
    try:
        import bm25s
        import Stemmer
    except ImportError as error:
        missing = getattr(error, "name", None) or "bm25s"
        raise ImportError(
            f"The BM25 channel needs {missing!r} ({error}). Install it with: "
            'pip install "sentence-transformers-tp[hybrid]"',
            name=getattr(error, "name", None),
        ) from error
    return bm25s, Stemmer


class BM25Channel:
    """A bm25s index of a corpus, searched with the same tokenizer settings.

    Args:
        method: bm25s scoring variant (``"lucene"``, ``"robertson"``, ``"atire"``, ``"bm25l"``, ``"bm25+"``).
        k1: Term-frequency saturation.
        b: Length normalisation.
        delta: The delta of BM25L / BM25+.
        stopwords: bm25s stopword list key (``"en"``) or None.
        stemmer: PyStemmer algorithm name (``"english"``) or None.
    """

    def __init__(
        self,
        method: str = "lucene",
        k1: float = 1.5,
        b: float = 0.75,
        delta: float = 0.5,
        stopwords: str | None = "en",
        stemmer: str | None = "english",
    ) -> None:
        bm25s, stemmer_module = _import_bm25s()
        self.settings: dict[str, Any] = {
            "method": method,
            "k1": float(k1),
            "b": float(b),
            "delta": float(delta),
            "stopwords": stopwords,
            "stemmer": stemmer,
        }
        self._stemmer = stemmer_module.Stemmer(stemmer) if stemmer else None
        self.retriever: Any = None
        self.n_docs = 0

    def _tokenize(self, texts: Sequence[str], show_progress_bar: bool) -> Any:
        bm25s, _ = _import_bm25s()
        return bm25s.tokenize(
            list(texts), stopwords=self.settings["stopwords"], stemmer=self._stemmer, show_progress=show_progress_bar
        )

    def index(self, texts: Sequence[str], *, show_progress_bar: bool = False) -> None:
        """Tokenize and index the documents.

        Args:
            texts: Document texts, in corpus order.
            show_progress_bar: Show bm25s's progress bars.
        """
        bm25s, _ = _import_bm25s()
        settings = self.settings
        self.retriever = bm25s.BM25(
            k1=settings["k1"], b=settings["b"], delta=settings["delta"], method=settings["method"]
        )
        self.retriever.index(self._tokenize(texts, show_progress_bar), show_progress=show_progress_bar)
        self.n_docs = len(texts)

    def search(
        self, queries: Sequence[str], k: int, *, show_progress_bar: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents of each query (bm25s's own selection, as MTEB's BM25 model makes it).

        Args:
            queries: Query texts.
            k: Documents per query (capped at the corpus size).
            show_progress_bar: Show bm25s's progress bars.

        Returns:
            ``(indices, scores)``: ``(n_queries, min(k, n_docs))`` document positions and float32 BM25 scores, best
            first.

        Raises:
            RuntimeError: If nothing was indexed.
        """
        if self.retriever is None:
            raise RuntimeError("the BM25 channel has no index: call index() or load() first")
        depth = min(k, self.n_docs)
        if not queries:
            return np.empty((0, depth), dtype=np.int64), np.empty((0, depth), dtype=np.float32)
        indices, scores = self.retriever.retrieve(
            self._tokenize(queries, show_progress_bar), k=depth, show_progress=show_progress_bar
        )
        return np.asarray(indices, dtype=np.int64), np.asarray(scores, dtype=np.float32)

    def save(self, folder: str | Path) -> None:
        """Write the bm25s index and the tokenizer settings to ``folder``.

        Args:
            folder: Target folder (created).
        """
        if self.retriever is None:
            raise RuntimeError("the BM25 channel has no index to save")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(folder), show_progress=False)
        (folder / "channel.json").write_text(
            json.dumps({"settings": self.settings, "n_docs": self.n_docs}, indent=2) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: str | Path, *, mmap: bool = False) -> BM25Channel:
        """Read an index written by :meth:`save`.

        Args:
            folder: The folder.
            mmap: Memory-map the index arrays instead of reading them.

        Returns:
            The channel.
        """
        bm25s, _ = _import_bm25s()
        folder = Path(folder)
        meta = json.loads((folder / "channel.json").read_text(encoding="utf-8"))
        channel = cls(**meta["settings"])
        channel.retriever = bm25s.BM25.load(str(folder), mmap=mmap, show_progress=False)
        channel.n_docs = int(meta["n_docs"])
        return channel


__all__ = ["BM25_DEFAULTS", "BM25Channel"]
