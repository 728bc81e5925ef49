"""``HybridRetriever``: dense, sparse and BM25 channels over one corpus index, fused with ``rsf`` or ``rrf``.

.. code-block:: python

    from sentence_transformers_tp import TokenPrependingTransformer
    from sentence_transformers_tp.hybrid import HybridRetriever

    retriever = HybridRetriever(dense_model=model, bm25=True, fusion="rsf", weights={"dense": 0.3, "bm25": 0.7})
    retriever.index({"d1": "A man plays a guitar.", "d2": "A dog runs in the park."}, path="my-index")
    hits = retriever.search(["Who plays music?"], k=10)   # [[("d1", 0.93), ("d2", 0.0)]]

Each document is encoded once per channel. With ``path``, the index (dense matrix, sparse vectors, bm25s index,
settings and a content hash of the corpus) is written to that folder, and a later ``index(corpus, path=...)`` with
the same corpus and settings loads it instead of encoding again; a different corpus or different settings (another
model, BM25 parameters, channels) raise a clear error rather than returning stale results (``overwrite=True``
rebuilds). :meth:`HybridRetriever.load` opens a saved index directly (the dense matrix memory-mapped). An interrupted
build with ``path`` resumes: finished chunks are kept in a hidden sibling folder until the index is saved
(:mod:`sentence_transformers_tp.hybrid.partial`).

Search is chunked (query and document blocks, a running top-k per query), so memory stays bounded on large corpora:
never a full queries x corpus score matrix. Each channel returns its top ``channel_k`` documents per query (default
1000, what MTEB's ``HybridSearch`` asks its sub-models for under MTEB's default cut-offs); fusion is exactly MTEB's
(:mod:`sentence_transformers_tp.hybrid.fusion`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
from tqdm.auto import tqdm
from transformers.utils import logging

from sentence_transformers_tp.hybrid.bm25 import BM25_DEFAULTS, BM25Channel
from sentence_transformers_tp.hybrid.corpus import corpus_hash, prepare_corpus
from sentence_transformers_tp.hybrid.encoders import encode_dense, encode_joint, encode_sparse, model_fingerprint
from sentence_transformers_tp.hybrid.fusion import CHANNELS, FUSIONS, RRF_K, Run, check_weights, fuse
from sentence_transformers_tp.hybrid.partial import PartialIndex, partial_folder
from sentence_transformers_tp.hybrid.preset import preset_fusion
from sentence_transformers_tp.hybrid.scoring import top_k_search

logger = logging.get_logger(__name__)

INDEX_FORMAT = 1
"""Version of the saved index layout."""

INDEX_FILE = "hybrid_index.json"
"""The settings file of a saved index."""


class HybridRetriever:
    """Retrieve documents with up to three channels fused per query.

    Args:
        dense_model: A ``SentenceTransformer`` (queries through ``encode_query``, documents through
            ``encode_document``, cosine similarity), or None for no dense channel.
        sparse_model: A sentence-transformers ``SparseEncoder`` (or any model whose ``encode_query`` /
            ``encode_document`` return sparse vectors; dot product), or None for no sparse channel. The dense model
            itself (``sparse_model=dense_model``, a TP model) gives the PromptReps sparse channel of its own
            backbone, with the dense embedding and the sparse vector from one forward per batch.
        bm25: Use the BM25 channel (bm25s, English stemmer and stopwords). True, False, or a dict of
            :class:`~sentence_transformers_tp.hybrid.bm25.BM25Channel` settings.
        fusion: ``"rsf"`` (per-query min-max normalisation, weighted sum) or ``"rrf"`` (reciprocal rank, ``rrf_k``).
        weights: ``{channel: weight}`` for every active channel (default: equal weights, as MTEB's ``HybridSearch``).
        rrf_k: Rank constant of ``rrf``.
        channel_k: Documents each channel returns per query before fusion.
        batch_size: Encode batch size.
        chunk_size: Documents per encode call while indexing (bounds memory; one progress-bar step each).
        show_progress_bar: Show progress bars.
        encode_kwargs: Further keyword arguments of every encode call.

    Raises:
        ValueError: With no channel, an unknown fusion, or weights that do not name exactly the active channels.
    """

    def __init__(
        self,
        dense_model: Any = None,
        sparse_model: Any = None,
        *,
        bm25: bool | Mapping[str, Any] = True,
        fusion: str = "rsf",
        weights: Mapping[str, float] | None = None,
        rrf_k: int = RRF_K,
        channel_k: int = 1000,
        batch_size: int = 32,
        chunk_size: int = 256,
        show_progress_bar: bool = False,
        encode_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.dense_model = dense_model
        self.sparse_model = sparse_model
        self.bm25_settings: dict[str, Any] | None = None
        if bm25 is True:
            self.bm25_settings = dict(BM25_DEFAULTS)
        elif isinstance(bm25, Mapping):
            self.bm25_settings = {**BM25_DEFAULTS, **dict(bm25)}
        elif bm25 is not False and bm25 is not None:
            raise TypeError(f"bm25 must be True, False or a dict of BM25 settings, got {bm25!r}")
        self.channels: list[str] = [
            name
            for name, on in zip(
                CHANNELS, (dense_model is not None, sparse_model is not None, self.bm25_settings is not None)
            )
            if on
        ]
        if not self.channels:
            raise ValueError("a HybridRetriever needs at least one channel: a dense model, a sparse model or bm25")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
        if channel_k < 1 or batch_size < 1 or chunk_size < 1:
            raise ValueError("channel_k, batch_size and chunk_size must be positive")
        self.fusion = fusion
        self.rrf_k = rrf_k
        self.weights = self._check_weights(weights)
        self.channel_k = channel_k
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.show_progress_bar = show_progress_bar
        self.encode_kwargs = dict(encode_kwargs or {})
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.corpus_hash: str | None = None
        self.dense_matrix: np.ndarray | None = None
        self.sparse_matrix: scipy.sparse.csr_matrix | None = None
        self.bm25: BM25Channel | None = None
        self.tie_key: np.ndarray | None = None
        self._fingerprints: dict[str, str] = {}

    @classmethod
    def from_model(cls, model: Any, sparse_model: Any = None, **kwargs: Any) -> HybridRetriever:
        """The retriever of a TP model with its backbone preset's tuned fusion (the preset's ``hybrid`` block).

        Without a tuned block (or with ``fusion`` / ``weights`` given), the channels are the model (dense), the
        sparse model if given and BM25, with the given or equal weights. When the tuned fusion uses the sparse
        channel and no ``sparse_model`` is given, it is the PromptReps channel of the model's own backbone, from
        the same forward as the dense embedding (``sparse_model=model``).

        Args:
            model: A TP ``SentenceTransformer`` (the dense channel).
            sparse_model: The sparse model (default for a tuned sparse channel: ``model`` itself).
            **kwargs: Further :class:`HybridRetriever` arguments.

        Returns:
            The retriever (not indexed yet).

        Raises:
            ValueError: If the tuned fusion uses the sparse channel without the dense one and no ``sparse_model``.
        """
        given = "fusion" in kwargs or "weights" in kwargs
        block = None if given else preset_fusion(model)
        if block is None:
            if not given:
                logger.warning_once(
                    "No tuned fusion for this backbone (no 'hybrid' block in its preset): the channels get equal "
                    "weights, which can score below BM25 alone; choose them with st-tp tune-retrieval --hybrid or pass "
                    "weights=."
                )
            return cls(model, sparse_model, **kwargs)
        channels = block["channels"]
        if "sparse" in channels and sparse_model is None:
            if "dense" not in channels:
                raise ValueError(
                    f"the tuned fusion of this backbone ({block['fusion']} over {', '.join(channels)}) uses the "
                    "sparse channel without the dense one: pass sparse_model"
                )
            sparse_model = model
        bm25 = kwargs.pop("bm25", True) if "bm25" in channels else False
        return cls(
            model if "dense" in channels else None,
            sparse_model if "sparse" in channels else None,
            bm25=bm25,
            fusion=block["fusion"],
            weights=block["weights"],
            rrf_k=block["rrf_k"],
            **kwargs,
        )

    # ------------------------------------------------------------------------------------------------- settings

    def _check_weights(self, weights: Mapping[str, float] | None) -> dict[str, float]:
        if weights is None:
            return {name: 1.0 / len(self.channels) for name in self.channels}
        weights = {str(name): float(value) for name, value in weights.items()}
        if set(weights) != set(self.channels):
            raise ValueError(f"weights must name exactly the active channels {self.channels}, got {sorted(weights)}")
        check_weights([weights[name] for name in self.channels], len(self.channels))
        return {name: weights[name] for name in self.channels}

    def index_settings(self) -> dict[str, Any]:
        """What a saved index must share with this retriever to be reused (channels, model fingerprints, BM25).

        Returns:
            A JSON-serialisable dict.
        """
        settings: dict[str, Any] = {"channels": list(self.channels)}
        for name, model in (("dense", self.dense_model), ("sparse", self.sparse_model)):
            if model is not None:
                if name not in self._fingerprints:
                    self._fingerprints[name] = model_fingerprint(model)
                settings[name] = {"model": self._fingerprints[name], "encode_kwargs": self.encode_kwargs}
        if self.joint:
            settings["sparse"]["joint"] = "promptreps"
        if self.bm25_settings is not None:
            settings["bm25"] = dict(self.bm25_settings)
        return json.loads(json.dumps(settings, sort_keys=True, default=str))

    @property
    def joint(self) -> bool:
        """Whether the dense and sparse channels come from one forward of the same TP model."""
        return self.dense_model is not None and self.sparse_model is self.dense_model

    @property
    def is_indexed(self) -> bool:
        """Whether a corpus is indexed."""
        return self.corpus_hash is not None

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------------------------------------- indexing

    def index(
        self,
        corpus: Any,
        ids: Sequence[Any] | None = None,
        *,
        path: str | os.PathLike | None = None,
        overwrite: bool = False,
    ) -> HybridRetriever:
        """Index a corpus (each document encoded once per channel), or load the saved index of the same corpus.

        Args:
            corpus: ``{id: text}``, ``{id: {"title", "text"}}``, a list of texts (with ``ids``) or of BEIR rows
                (see :func:`~sentence_transformers_tp.hybrid.corpus.prepare_corpus`).
            ids: Document ids of a list of texts (default: positions).
            path: A folder for the index: loaded when it holds the index of this corpus with these settings,
                written otherwise. While it is built, finished chunks are kept in ``.<name>.partial`` next to it, so
                an interrupted build of the same corpus with the same settings resumes from its last finished chunk.
            overwrite: Rebuild and replace an index at ``path`` that was built for another corpus or settings
                (default: raise).

        Returns:
            This retriever.

        Raises:
            ValueError: For an empty corpus, duplicate ids, or a saved index at ``path`` whose corpus or settings
                differ (without ``overwrite``).
        """
        doc_ids, texts = prepare_corpus(corpus, ids)
        digest = corpus_hash(doc_ids, texts)
        if path is not None and (Path(path) / INDEX_FILE).is_file():
            meta = read_index_meta(path)
            problem = self._mismatch(meta, digest)
            if problem is None:
                self._load_arrays(Path(path), meta, doc_ids, texts)
                return self
            if not overwrite:
                raise ValueError(f"{path} holds a hybrid index of {problem}; use another folder or overwrite=True")
        partial = None
        if path is not None:
            _check_target(Path(path))  # before encoding, not after
            key = {"corpus_hash": digest, "settings": self.index_settings(), "chunk_size": self.chunk_size}
            partial = PartialIndex(partial_folder(path), key)
        self._build(doc_ids, texts, digest, partial)
        if path is not None:
            self.save(path)
            partial.remove()
        return self

    def _mismatch(self, meta: Mapping[str, Any], digest: str | None) -> str | None:
        """What differs between a saved index and this retriever (None: nothing)."""
        if meta.get("format") != INDEX_FORMAT:
            return f"format {meta.get('format')!r} (this version reads {INDEX_FORMAT})"
        if digest is not None and meta.get("corpus_hash") != digest:
            return "another corpus (its content hash differs from this corpus's)"
        saved, ours = meta.get("settings", {}), self.index_settings()
        if saved != ours:
            keys = sorted(key for key in set(saved) | set(ours) if saved.get(key) != ours.get(key))
            return f"other settings (differing: {', '.join(keys)}; saved {saved}, now {ours})"
        return None

    def _build(self, doc_ids: list[str], texts: list[str], digest: str, partial: PartialIndex | None) -> None:
        self.ids, self.texts, self.corpus_hash = doc_ids, texts, digest
        self.tie_key = _tie_key(doc_ids)
        if self.joint:
            self.dense_matrix, self.sparse_matrix = self._encode_corpus("joint", partial)
        else:
            self.dense_matrix = self._encode_corpus("dense", partial) if self.dense_model is not None else None
            self.sparse_matrix = self._encode_corpus("sparse", partial) if self.sparse_model is not None else None
        self.bm25 = None
        if self.bm25_settings is not None:
            self.bm25 = BM25Channel(**self.bm25_settings)
            self.bm25.index(texts, show_progress_bar=self.show_progress_bar)

    def _encode_corpus(self, channel: str, partial: PartialIndex | None) -> Any:
        """Encode every document once, in chunks, longest first (so an out-of-memory error shows at once).

        Chunks that ``partial`` holds from an interrupted build are loaded; each newly encoded chunk is stored there.
        """
        order = sorted(range(len(self.texts)), key=lambda i: -len(self.texts[i]))
        parts: list[Any] = []
        resumed = 0
        bar = tqdm(total=len(order), desc=f"Indexing ({channel})", unit="doc", disable=not self.show_progress_bar)
        with bar:
            for number, start in enumerate(range(0, len(order), self.chunk_size)):
                chunk = [self.texts[i] for i in order[start : start + self.chunk_size]]
                part = None if partial is None else partial.load(channel, number)
                if part is None:
                    part = self._encode(channel, chunk, "document")
                    if partial is not None:
                        partial.save(channel, number, part)
                else:
                    rows = (part[0] if channel == "joint" else part).shape[0]
                    if rows != len(chunk):
                        raise ValueError(
                            f"{partial.folder}: chunk {number} holds {rows} documents, not {len(chunk)}; "
                            "delete the folder to rebuild"
                        )
                    resumed += len(chunk)
                parts.append(part)
                bar.update(len(chunk))
        if resumed:
            logger.info(f"Indexing ({channel}): {resumed} of {len(order)} documents loaded from {partial.folder}")
        inverse = np.argsort(np.asarray(order))
        if channel == "joint":
            dense = np.concatenate([part[0] for part in parts], axis=0)[inverse]
            return dense, scipy.sparse.vstack(_same_width([part[1] for part in parts]), format="csr")[inverse]
        if channel == "dense":
            return np.concatenate(parts, axis=0)[inverse]
        return scipy.sparse.vstack(_same_width(parts), format="csr")[inverse]

    def _encode(self, channel: str, texts: list[str], kind: str) -> Any:
        if channel == "joint":
            return encode_joint(self.dense_model, texts, kind, batch_size=self.batch_size)
        common = {"batch_size": self.batch_size, "encode_kwargs": self.encode_kwargs}
        if channel == "dense":
            return encode_dense(self.dense_model, texts, kind, **common)
        return encode_sparse(self.sparse_model, texts, kind, **common)

    # ------------------------------------------------------------------------------------------------- save / load

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to a folder (replacing it as a whole: the folder holds the old index or the new one).

        Args:
            path: The folder.

        Returns:
            The folder.

        Raises:
            RuntimeError: If nothing is indexed.
            ValueError: If ``path`` is a file or a non-empty folder that holds no hybrid index (never replaced).
        """
        if not self.is_indexed:
            raise RuntimeError("nothing to save: call index(corpus) first")
        path = Path(path)
        _check_target(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            with (staging / "corpus.jsonl").open("w", encoding="utf-8") as handle:
                for doc_id, text in zip(self.ids, self.texts):
                    handle.write(json.dumps({"_id": doc_id, "text": text}, ensure_ascii=False) + "\n")
            if self.dense_matrix is not None:
                np.save(staging / "dense.npy", np.asarray(self.dense_matrix, dtype=np.float32))
            if self.sparse_matrix is not None:
                scipy.sparse.save_npz(staging / "sparse.npz", self.sparse_matrix)
            if self.bm25 is not None:
                self.bm25.save(staging / "bm25")
            meta = {
                "format": INDEX_FORMAT,
                "corpus_hash": self.corpus_hash,
                "n_docs": len(self.ids),
                "settings": self.index_settings(),
            }
            (staging / INDEX_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if path.exists():
            backup = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, backup)
            os.replace(staging, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, path)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        dense_model: Any = None,
        sparse_model: Any = None,
        *,
        corpus: Any = None,
        **kwargs: Any,
    ) -> HybridRetriever:
        """Open a saved index with the models it was built with.

        The channels are those of the index (BM25 settings included); a dense / sparse index needs its model
        (to encode queries), and the model must be the one the index was built with.

        Args:
            path: The index folder.
            dense_model: The dense model, if the index has a dense channel.
            sparse_model: The sparse model, if the index has a sparse channel.
            corpus: Optionally the corpus the index must have been built from (checked by content hash).
            **kwargs: Search settings (``fusion``, ``weights``, ``rrf_k``, ``channel_k``, ``batch_size``,
                ``show_progress_bar``, ``encode_kwargs``).

        Returns:
            The retriever, ready to search.

        Raises:
            FileNotFoundError: If ``path`` holds no index.
            ValueError: If the models, settings or corpus differ from the index's.
        """
        meta = read_index_meta(path)
        settings = meta.get("settings", {})
        channels = settings.get("channels", [])
        for name, model in (("dense", dense_model), ("sparse", sparse_model)):
            if name in channels and model is None:
                raise ValueError(f"{path} has a {name} channel: pass the {name}_model it was built with")
            if name not in channels and model is not None:
                raise ValueError(f"{path} has no {name} channel (channels: {', '.join(channels)})")
        if "bm25" in kwargs:
            raise ValueError("the BM25 settings of a saved index are fixed; build a new index to change them")
        retriever = cls(dense_model, sparse_model, bm25=settings.get("bm25", False), **kwargs)
        digest = None
        doc_ids: list[str] | None = None
        texts: list[str] | None = None
        if corpus is not None:
            doc_ids, texts = prepare_corpus(corpus)
            digest = corpus_hash(doc_ids, texts)
        problem = retriever._mismatch(meta, digest)
        if problem is not None:
            raise ValueError(f"{path} holds a hybrid index of {problem}")
        retriever._load_arrays(Path(path), meta, doc_ids, texts)
        return retriever

    def _load_arrays(
        self, path: Path, meta: Mapping[str, Any], ids: list[str] | None, texts: list[str] | None
    ) -> None:
        if ids is None or texts is None:
            ids, texts = [], []
            with (path / "corpus.jsonl").open(encoding="utf-8") as handle:
                for line in handle:
                    row = json.loads(line)
                    ids.append(row["_id"])
                    texts.append(row["text"])
            if corpus_hash(ids, texts) != meta.get("corpus_hash"):
                raise ValueError(
                    f"{path / 'corpus.jsonl'} does not match the index's corpus hash: the index is damaged"
                )
        self.ids, self.texts, self.corpus_hash = ids, texts, meta["corpus_hash"]
        self.tie_key = _tie_key(ids)
        self.dense_matrix = np.load(path / "dense.npy", mmap_mode="r") if "dense" in self.channels else None
        self.sparse_matrix = scipy.sparse.load_npz(path / "sparse.npz").tocsr() if "sparse" in self.channels else None
        self.bm25 = BM25Channel.load(path / "bm25") if "bm25" in self.channels else None
        for name, rows in (
            ("dense", None if self.dense_matrix is None else self.dense_matrix.shape[0]),
            ("sparse", None if self.sparse_matrix is None else self.sparse_matrix.shape[0]),
            ("bm25", None if self.bm25 is None else self.bm25.n_docs),
        ):
            if rows is not None and rows != len(ids):
                raise ValueError(f"{path}: the {name} channel has {rows} documents, the corpus {len(ids)}")

    # ------------------------------------------------------------------------------------------------- search

    def _require_index(self) -> None:
        if not self.is_indexed:
            raise RuntimeError("the retriever has no index: call index(corpus) or HybridRetriever.load(path)")

    def encode_queries(self, queries: Sequence[str]) -> dict[str, Any]:
        """Encode queries for the dense and sparse channels (BM25 tokenizes at search time).

        Args:
            queries: Query texts.

        Returns:
            ``{"dense": array, "sparse": csr}`` for the active model channels.
        """
        if self.joint:
            dense, sparse = self._encode("joint", list(queries), "query")
            return {"dense": dense, "sparse": sparse}
        return {name: self._encode(name, list(queries), "query") for name in self.channels if name != "bm25"}

    def channel_runs(
        self, queries: Sequence[str], depth: int | None = None, *, encoded: Mapping[str, Any] | None = None
    ) -> dict[str, Run]:
        """Each channel's own ranking of the corpus for the queries.

        Args:
            queries: Query texts.
            depth: Documents per query and channel (default ``channel_k``).
            encoded: Query encodings from :meth:`encode_queries`, to reuse.

        Returns:
            ``{channel: (indices, scores)}``, each ``(n_queries, min(depth, n_docs))``, best first (equal scores
            by document id, descending; BM25 in bm25s's own order).
        """
        self._require_index()
        queries = _check_queries(queries)
        depth = self.channel_k if depth is None else depth
        encoded = dict(encoded) if encoded is not None else self.encode_queries(queries)
        runs: dict[str, Run] = {}
        for name in self.channels:
            if name == "bm25":
                runs[name] = self.bm25.search(queries, depth, show_progress_bar=self.show_progress_bar)
                continue
            matrix = self.dense_matrix if name == "dense" else self.sparse_matrix
            query_matrix = encoded[name]
            if name == "sparse" and query_matrix.shape[1] != matrix.shape[1]:
                query_matrix = _resize_columns(query_matrix, matrix.shape[1])
            bar = tqdm(
                total=len(queries), desc=f"Searching ({name})", unit="query", disable=not self.show_progress_bar
            )
            with bar:
                runs[name] = top_k_search(query_matrix, matrix, depth, tie_key=self.tie_key, progress=bar)
        return runs

    def fuse_runs(
        self,
        runs: Mapping[str, Run],
        k: int,
        *,
        fusion: str | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> Run:
        """Fuse channel runs (a single channel's run is returned as it is, cut to ``k``).

        Args:
            runs: ``{channel: run}`` from :meth:`channel_runs` (the channels of ``weights``).
            k: Documents per query.
            fusion: ``"rsf"`` / ``"rrf"`` (default: the retriever's).
            weights: ``{channel: weight}`` (default: the retriever's).

        Returns:
            ``(indices, scores)``, best first.
        """
        weights = dict(self.weights if weights is None else weights)
        names = [name for name in CHANNELS if name in weights]
        missing = [name for name in names if name not in runs]
        if missing:
            raise ValueError(f"no run for channel(s) {missing}")
        if len(names) == 1:
            indices, scores = runs[names[0]]
            return indices[:, :k], scores[:, :k].astype(np.float64)
        return fuse(
            [runs[name] for name in names],
            [weights[name] for name in names],
            method=fusion or self.fusion,
            k=k,
            rrf_k=self.rrf_k,
            tie_key=self.tie_key,
        )

    def search_indices(self, queries: Sequence[str], k: int = 10) -> Run:
        """Fused ``(indices, scores)`` of the queries (document positions; ``-1`` pads short rows).

        Args:
            queries: Query texts.
            k: Documents per query.

        Returns:
            The fused run.
        """
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        runs = self.channel_runs(queries, max(self.channel_k, k))
        return self.fuse_runs(runs, k)

    def search(self, queries: str | Sequence[str], k: int = 10) -> list[list[tuple[str, float]]]:
        """The best ``k`` documents of each query, fused over the channels.

        Args:
            queries: A query or a list of queries.
            k: Documents per query.

        Returns:
            Per query, ``(document id, fused score)`` pairs, best first.
        """
        if isinstance(queries, str):
            queries = [queries]
        indices, scores = self.search_indices(queries, k)
        return [
            [(self.ids[int(i)], float(s)) for i, s in zip(row, row_scores) if i >= 0]
            for row, row_scores in zip(indices, scores)
        ]


def read_index_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read the settings file of a saved index.

    Args:
        path: The index folder.

    Returns:
        The parsed ``hybrid_index.json``.

    Raises:
        FileNotFoundError: If the folder holds no index.
    """
    file = Path(path) / INDEX_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path} holds no hybrid index ({INDEX_FILE} not found)")
    return json.loads(file.read_text(encoding="utf-8"))


def _check_target(path: Path) -> None:
    """Refuse to write an index over a file or a non-empty folder that holds no index (it would be replaced)."""
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / INDEX_FILE).is_file())):
        raise ValueError(f"{path} exists and is not a hybrid index folder; choose a new or empty folder")


def _tie_key(ids: Sequence[str]) -> np.ndarray:
    """Per document, the rank of its id in sorted order (a larger id ranks first among equal scores)."""
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    key = np.empty(len(ids), dtype=np.int64)
    key[np.asarray(order, dtype=np.int64)] = np.arange(len(ids))
    return key


def _check_queries(queries: Sequence[str]) -> list[str]:
    queries = list(queries)
    for query in queries:
        if not isinstance(query, str):
            raise TypeError(f"queries must be strings, got {type(query).__name__}")
    return queries


def _same_width(parts: list[scipy.sparse.csr_matrix]) -> list[scipy.sparse.csr_matrix]:
    width = max(part.shape[1] for part in parts)
    return [part if part.shape[1] == width else _resize_columns(part, width) for part in parts]


def _resize_columns(matrix: scipy.sparse.csr_matrix, width: int) -> scipy.sparse.csr_matrix:
    """The same sparse vectors over a vocabulary of ``width`` columns (sparse encoders may return a narrower one)."""
    if matrix.shape[1] > width:
        raise ValueError(f"sparse vectors have {matrix.shape[1]} dimensions, the index {width}")
    matrix = matrix.tocsr(copy=True)
    matrix.resize((matrix.shape[0], width))
    return matrix


__all__ = ["CHANNELS", "INDEX_FILE", "INDEX_FORMAT", "HybridRetriever", "read_index_meta"]
