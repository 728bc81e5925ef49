"""Hybrid retrieval: dense (a Token Prepending ``SentenceTransformer``), sparse (a ``SparseEncoder``) and BM25
(``bm25s``) channels over one saved corpus index, fused with relative score fusion or reciprocal rank fusion.

* :class:`HybridRetriever` (:mod:`.retriever`): ``index(corpus, path=...)`` / ``load`` / ``search``.
* :mod:`.fusion`: ``rsf`` and ``rrf``, exactly as MTEB's ``HybridSearch``.
* :mod:`.bm25`: the BM25 channel (bm25s, English stemmer and stopwords).
* :mod:`.selection`: choosing channels, fusion rule and dense weight on cached runs of tuning queries.

Needs the ``hybrid`` extra: ``pip install "sentence-transformers-tp[hybrid]"`` (bm25s and PyStemmer); bm25s is
imported only when the BM25 channel is used.
"""

from __future__ import annotations

from sentence_transformers_tp.hybrid.bm25 import BM25_DEFAULTS, BM25Channel
from sentence_transformers_tp.hybrid.corpus import corpus_hash, prepare_corpus
from sentence_transformers_tp.hybrid.fusion import FUSIONS, RRF_K, fuse, fuse_rrf, fuse_rsf, min_max
from sentence_transformers_tp.hybrid.retriever import CHANNELS, HybridRetriever, read_index_meta

__all__ = [
    "BM25_DEFAULTS",
    "CHANNELS",
    "FUSIONS",
    "RRF_K",
    "BM25Channel",
    "HybridRetriever",
    "corpus_hash",
    "fuse",
    "fuse_rrf",
    "fuse_rsf",
    "min_max",
    "prepare_corpus",
    "read_index_meta",
]
