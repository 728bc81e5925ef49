"""Retrieval evaluation on a BEIR-layout folder (the layout MTEB's retrieval tasks use).

A folder holds::

    <folder>/corpus.jsonl          {"_id": ..., "title": ..., "text": ...} per line
    <folder>/queries.jsonl         {"_id": ..., "text": ...} per line
    <folder>/qrels/<split>.tsv     query-id  corpus-id  score   (header row; graded relevance, > 0 = relevant)

:func:`evaluate_retrieval` encodes the queries with ``model.encode_query`` and the documents (``title + " " + text``,
stripped, as MTEB joins them) with ``model.encode_document``, ranks the documents of each query by cosine similarity
and scores the rankings as MTEB does (pytrec_eval definitions):

* **nDCG@k** (MTEB's main score at k = 10): gain = the qrels relevance value, discount ``1 / log2(rank + 1)``, divided
  by the DCG of the ideal ordering of all judged relevant documents of the query (retrieved or not);
* **MRR@k**: reciprocal rank of the first relevant document in the top k (0 if none);
* **Recall@k**: relevant documents in the top k over all relevant documents of the query.

Every query with at least one judgment in the qrels split is evaluated, as in MTEB 2.x (which drops only queries
without any qrels row): a query whose judgments are all 0 scores 0 on every metric. Metrics are means over the
evaluated queries, reported x 100. Tied scores are ordered by document id, descending, as pytrec_eval does.

Memory stays bounded on large corpora: documents are encoded in chunks (longest first, so an out-of-memory error
shows up at once), only their float32 embeddings are kept while a chunk is scored, and each query keeps a running
top-k of (score, document) pairs; no token tensors and no full corpus embedding matrix are held.

For quick runs, ``limit`` / ``sample`` select queries and ``corpus_sample`` keeps only the relevant documents of the
selected queries plus that many other documents drawn at random (seeded). Scores on such a subset are higher than on
the full corpus (fewer distractors); results record the subset in their settings.
"""

from __future__ import annotations

import csv
import json
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sentence_transformers_tp.data import check_subset

from ..truncation import report_truncation
from .sts import SuiteResult, card_model_name, nan_to_none

DEFAULT_K_VALUES: tuple[int, ...] = (1, 3, 5, 10, 100)
"""Cut-offs at which nDCG, MRR and Recall are computed."""

HEADLINE_METRICS: tuple[str, ...] = ("ndcg_at_10", "mrr_at_10", "recall_at_10", "recall_at_100")
"""The metrics shown in tables (nDCG@10 is MTEB's main score)."""

METRIC_LABELS: dict[str, str] = {
    "ndcg_at_10": "nDCG@10",
    "mrr_at_10": "MRR@10",
    "recall_at_10": "R@10",
    "recall_at_100": "R@100",
}
"""Column names of :data:`HEADLINE_METRICS`."""

BEIR_DISPLAY_NAMES: dict[str, str] = {
    "scifact": "SciFact",
    "nfcorpus": "NFCorpus",
    "arguana": "ArguAna",
    "fiqa": "FiQA2018",
    "scidocs": "SCIDOCS",
    "trec-covid": "TRECCOVID",
    "quora": "QuoraRetrieval",
    "msmarco": "MSMARCO",
}
"""MTEB names of BEIR datasets, by folder name (other folders keep their own name)."""


def display_name(folder: str | Path) -> str:
    """Return the table / MTEB name of a BEIR folder (``"SciFact"`` for ``.../scifact``).

    Args:
        folder: The BEIR folder.

    Returns:
        The known MTEB name of the dataset, else the folder's name.
    """
    name = Path(folder).resolve().name
    return BEIR_DISPLAY_NAMES.get(name.lower(), name)


def list_beir_splits(folder: str | Path) -> list[str]:
    """Return the qrels splits of a BEIR folder (the ``qrels/<split>.tsv`` names), sorted.

    Args:
        folder: The BEIR folder.

    Returns:
        Split names (empty if there is no qrels folder).
    """
    qrels = Path(folder) / "qrels"
    return sorted(p.stem for p in qrels.glob("*.tsv")) if qrels.is_dir() else []


def resolve_beir_split(folder: str | Path, split: str | None = None) -> str:
    """Pick the qrels split to evaluate.

    Args:
        folder: The BEIR folder.
        split: The requested split; ``None`` means ``"test"`` when the folder has it, else its only split.

    Returns:
        The split name.

    Raises:
        FileNotFoundError: If the folder lacks the BEIR files or the split, naming the splits it has.
    """
    root = Path(folder)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root} is not a BEIR folder: {name} not found")
    splits = list_beir_splits(root)
    if split is None:
        if "test" in splits:
            return "test"
        if len(splits) == 1:
            return splits[0]
        raise FileNotFoundError(
            f"{root} has qrels splits {', '.join(splits) or 'none'}; choose one (e.g. --retrieval-split)"
        )
    if split not in splits:
        raise FileNotFoundError(f"{root / 'qrels' / (split + '.tsv')} not found (qrels splits: {', '.join(splits)})")
    return split


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON object: {error}") from None
            if not isinstance(row, dict) or "_id" not in row:
                raise ValueError(f"{path}:{number}: expected an object with an '_id'")
            yield row


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id corpus-id score``; a header row is skipped).

    Args:
        path: The ``qrels/<split>.tsv`` file.

    Returns:
        ``{query id: {document id: relevance}}`` in file order (relevance as int; 0 = judged not relevant).

    Raises:
        ValueError: On a malformed line, naming the file and line.
    """
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row or not "".join(row).strip():
                continue
            if number == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{number}: expected 'query-id corpus-id score', got {row!r}")
            try:
                score = int(float(row[2]))
            except ValueError:
                raise ValueError(f"{path}:{number}: score {row[2]!r} is not a number") from None
            qrels.setdefault(row[0].strip(), {})[row[1].strip()] = score
    return qrels


@dataclass(frozen=True)
class BEIRData:
    """One split of a BEIR folder: the corpus, the evaluated queries and their qrels.

    Attributes:
        folder: The BEIR folder.
        split: The qrels split.
        doc_ids: Document ids, in corpus order.
        titles: Document titles (``""`` when absent).
        texts: Document texts.
        queries: ``{query id: text}`` of the evaluated queries (those with a judgment in the split, also when every
            judgment is 0), in queries.jsonl order.
        qrels: ``{query id: {document id: relevance}}`` of the evaluated queries.
        corpus_size: Documents in the folder's corpus (before any corpus subset).
        n_missing_queries: Queries of the split with a judgment but no text in queries.jsonl (skipped).
        n_missing_documents: Relevant (query, document) pairs whose document is not in the corpus (they count as
            relevant but cannot be retrieved, as in MTEB).
        corpus_sample: Number of random distractor documents of a corpus subset (None: full corpus).
        corpus_seed: Seed of that draw.
    """

    folder: Path
    split: str
    doc_ids: list[str]
    titles: list[str]
    texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    corpus_size: int
    n_missing_queries: int = 0
    n_missing_documents: int = 0
    corpus_sample: int | None = None
    corpus_seed: int | None = None

    @property
    def name(self) -> str:
        """Display name of the dataset (``"SciFact"``)."""
        return display_name(self.folder)

    def documents(self) -> list[str]:
        """Return the document texts as MTEB encodes them: ``(title + " " + text).strip()``.

        Returns:
            One string per document, in :attr:`doc_ids` order.
        """
        return [(title + " " + text).strip() for title, text in zip(self.titles, self.texts)]

    def select_queries(self, query_ids: Sequence[str]) -> BEIRData:
        """Return the data restricted to the given queries (corpus unchanged).

        Args:
            query_ids: Ids of evaluated queries to keep, in the order to keep them.

        Returns:
            A new :class:`BEIRData`.
        """
        return replace(
            self,
            queries={q: self.queries[q] for q in query_ids},
            qrels={q: self.qrels[q] for q in query_ids},
        )

    def subset(
        self,
        limit: int | None = None,
        sample: int | None = None,
        seed: int = 0,
        *,
        corpus_sample: int | None = None,
        corpus_seed: int | None = None,
    ) -> BEIRData:
        """Restrict the queries (first ``limit`` or a seeded random ``sample``) and optionally the corpus.

        Args:
            limit: Keep the first ``limit`` queries.
            sample: Keep ``sample`` queries drawn at random (seeded by ``seed``), in their original order.
            seed: Seed of the query draw.
            corpus_sample: Keep only the relevant documents of the kept queries plus ``corpus_sample`` other
                documents drawn at random (in corpus order); None keeps the full corpus.
            corpus_seed: Seed of the document draw (default: ``seed``).

        Returns:
            A new :class:`BEIRData` (or this one when nothing is restricted).

        Raises:
            ValueError: If both ``limit`` and ``sample`` are given, or a count is negative.
        """
        check_subset(limit, sample)
        if corpus_sample is not None and corpus_sample < 0:
            raise ValueError(f"corpus_sample must be non-negative, got {corpus_sample}")
        data = self
        ids = list(self.queries)
        if limit is not None and limit < len(ids):
            data = data.select_queries(ids[:limit])
        elif sample is not None and sample < len(ids):
            picked = np.random.default_rng(seed).choice(len(ids), size=sample, replace=False)
            data = data.select_queries([ids[i] for i in sorted(picked.tolist())])
        if corpus_sample is None:
            return data
        corpus_seed = seed if corpus_seed is None else corpus_seed
        relevant = {d for docs in data.qrels.values() for d, rel in docs.items() if rel > 0}
        others = [i for i, d in enumerate(data.doc_ids) if d not in relevant]
        count = min(corpus_sample, len(others))
        drawn = np.random.default_rng(corpus_seed).choice(len(others), size=count, replace=False).tolist()
        keep = {others[i] for i in drawn}
        keep.update(i for i, d in enumerate(data.doc_ids) if d in relevant)
        order = sorted(keep)
        return replace(
            data,
            doc_ids=[data.doc_ids[i] for i in order],
            titles=[data.titles[i] for i in order],
            texts=[data.texts[i] for i in order],
            corpus_sample=corpus_sample,
            corpus_seed=corpus_seed,
        )


def load_beir(folder: str | Path, split: str | None = None) -> BEIRData:
    """Read one split of a BEIR-layout folder.

    Args:
        folder: Folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
        split: The qrels split (``None``: ``"test"`` if present, else the folder's only split).

    Returns:
        The corpus, the queries that have a judgment in the split (also those judged 0 only, which score 0, as in
        MTEB), and their qrels.

    Raises:
        FileNotFoundError: If a file or the split is missing.
        ValueError: On malformed content or duplicate document ids.
    """
    root = Path(folder)
    split = resolve_beir_split(root, split)
    doc_ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    for row in _read_jsonl(root / "corpus.jsonl"):
        doc_ids.append(str(row["_id"]))
        titles.append(str(row.get("title") or ""))
        texts.append(str(row.get("text") or ""))
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError(f"{root / 'corpus.jsonl'} has duplicate document ids")
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    qrels = {q: docs for q, docs in qrels.items() if docs}
    queries: dict[str, str] = {}
    for row in _read_jsonl(root / "queries.jsonl"):
        qid = str(row["_id"])
        if qid in qrels:
            queries[qid] = str(row.get("text") or "")
    missing_queries = [q for q in qrels if q not in queries]
    if missing_queries:
        warnings.warn(
            f"{len(missing_queries)} queries of qrels/{split}.tsv are not in queries.jsonl and are skipped",
            stacklevel=2,
        )
    corpus = set(doc_ids)
    missing_docs = sum(1 for q in queries for d, rel in qrels[q].items() if rel > 0 and d not in corpus)
    return BEIRData(
        folder=root,
        split=split,
        doc_ids=doc_ids,
        titles=titles,
        texts=texts,
        queries=queries,
        qrels={q: qrels[q] for q in queries},
        corpus_size=len(doc_ids),
        n_missing_queries=len(missing_queries),
        n_missing_documents=missing_docs,
    )


# --------------------------------------------------------------------------------------------------------- metrics


def ranking_metrics(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Score ranked document lists with nDCG@k, MRR@k and Recall@k (pytrec_eval / MTEB definitions).

    Args:
        rankings: ``{query id: document ids, best first}`` (at least ``max(k_values)`` long where possible).
        qrels: ``{query id: {document id: relevance}}``; relevance > 0 is relevant and is the nDCG gain.
        k_values: Cut-offs.

    Returns:
        ``(means, per_query)``: mean metrics over the queries of ``rankings`` that have a judgment in ``qrels``, as
        fractions in [0, 1] keyed ``ndcg_at_k`` / ``mrr_at_k`` / ``recall_at_k``, and the same per query. A query
        whose judgments are all 0 scores 0 (as in MTEB 2.x and pytrec_eval); a query without judgments is skipped.
    """
    per_query: dict[str, dict[str, float]] = {}
    for qid, ranked in rankings.items():
        judged = qrels.get(qid)
        if not judged:
            continue
        rels = {d: r for d, r in judged.items() if r > 0}
        if not rels:
            per_query[qid] = {f"{m}_at_{k}": 0.0 for k in k_values for m in ("ndcg", "mrr", "recall")}
            continue
        ideal = sorted(rels.values(), reverse=True)
        values: dict[str, float] = {}
        for k in k_values:
            top = list(ranked[:k])
            dcg = sum(rels.get(d, 0) / math.log2(rank + 2) for rank, d in enumerate(top))
            idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal[:k]))
            values[f"ndcg_at_{k}"] = dcg / idcg
            first = next((rank for rank, d in enumerate(top) if d in rels), None)
            values[f"mrr_at_{k}"] = 0.0 if first is None else 1.0 / (first + 1)
            values[f"recall_at_{k}"] = sum(1 for d in top if d in rels) / len(rels)
        per_query[qid] = values
    keys = [f"{m}_at_{k}" for m in ("ndcg", "mrr", "recall") for k in k_values]
    means = {key: float(np.mean([v[key] for v in per_query.values()])) if per_query else float("nan") for key in keys}
    return means, per_query


# ---------------------------------------------------------------------------------------------------------- search


def _normalize(emb: Any) -> np.ndarray:
    array = np.asarray(emb, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D embedding array, got shape {array.shape}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms > 0, norms, 1.0)


def _encoder(model: Any, kind: str) -> Any:
    method = getattr(model, f"encode_{kind}", None)
    return method if callable(method) else model.encode


def _encode(model: Any, kind: str, texts: list[str], batch_size: int, progress: bool, kwargs: Mapping[str, Any]):
    emb = _encoder(model, kind)(
        texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True, **dict(kwargs)
    )
    emb = _normalize(emb)
    if emb.shape[0] != len(texts):
        raise ValueError(f"encode_{kind} returned {emb.shape[0]} rows for {len(texts)} texts")
    return emb


def search(
    model: Any,
    queries: Sequence[str],
    documents: Sequence[str],
    *,
    top_k: int = 100,
    batch_size: int = 32,
    chunk_size: int = 128,
    show_progress_bar: bool = False,
    encode_kwargs: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Rank documents for each query by cosine similarity, with bounded memory.

    Queries are encoded with ``model.encode_query`` and documents with ``model.encode_document`` (``encode`` for
    objects without them). Documents go longest first, ``chunk_size`` per ``encode_document`` call; each chunk is
    scored against all queries by one matrix product and merged into a running top-k, then dropped.

    Args:
        model: A ``SentenceTransformer`` (or any object with ``encode`` / ``encode_query`` / ``encode_document``).
        queries: Query texts.
        documents: Document texts.
        top_k: Documents kept per query.
        batch_size: Passed to the encode calls.
        chunk_size: Documents per ``encode_document`` call (bounds the memory of one step).
        show_progress_bar: Show a progress bar over the documents (and the encoder's for the queries).
        encode_kwargs: Extra keyword arguments for every encode call.

    Returns:
        ``(indices, scores, seconds)``: ``(n_queries, min(top_k, n_docs))`` document indices (positions in
        ``documents``) and float32 cosine scores, best first, ties broken by position (callers re-sort ties by id);
        and the wall time of ``{"queries": ..., "documents": ...}`` (encoding plus scoring).
    """
    from tqdm.auto import tqdm

    if top_k < 1 or chunk_size < 1:
        raise ValueError(f"top_k and chunk_size must be positive, got {top_k} and {chunk_size}")
    kwargs = dict(encode_kwargs or {})
    start = time.perf_counter()
    with report_truncation():
        query_emb = _encode(model, "query", list(queries), batch_size, show_progress_bar and len(queries) > 1, kwargs)
    query_seconds = time.perf_counter() - start

    start = time.perf_counter()
    order = sorted(range(len(documents)), key=lambda i: -len(documents[i]))
    best_scores = np.empty((len(queries), 0), dtype=np.float32)
    best_index = np.empty((len(queries), 0), dtype=np.int64)
    bar = tqdm(total=len(documents), desc="Documents", unit="doc", disable=not show_progress_bar)
    with bar, report_truncation():
        for offset in range(0, len(order), chunk_size):
            chunk = order[offset : offset + chunk_size]
            doc_emb = _encode(model, "document", [documents[i] for i in chunk], batch_size, False, kwargs)
            scores = np.concatenate([best_scores, query_emb @ doc_emb.T], axis=1)
            index = np.concatenate([best_index, np.broadcast_to(np.asarray(chunk), (len(queries), len(chunk)))], 1)
            if scores.shape[1] > top_k:
                keep = np.argpartition(-scores, top_k - 1, axis=1)[:, :top_k]
                scores = np.take_along_axis(scores, keep, axis=1)
                index = np.take_along_axis(index, keep, axis=1)
            best_scores, best_index = scores, index
            bar.update(len(chunk))
    ranks = np.lexsort((best_index, -best_scores), axis=1) if best_scores.size else best_scores.astype(np.int64)
    best_scores = np.take_along_axis(best_scores, ranks, axis=1)
    best_index = np.take_along_axis(best_index, ranks, axis=1)
    return best_index, best_scores, {"queries": query_seconds, "documents": time.perf_counter() - start}


def _rank_ids(indices: np.ndarray, scores: np.ndarray, doc_ids: Sequence[str]) -> list[list[str]]:
    """Document ids per query, by score descending and, for equal scores, by id descending (pytrec_eval)."""
    out = []
    for row_index, row_scores in zip(indices, scores):
        pairs = [(float(s), doc_ids[int(i)]) for i, s in zip(row_index, row_scores)]
        pairs.sort(key=lambda pair: (pair[0], pair[1]), reverse=True)
        out.append([doc for _, doc in pairs])
    return out


def rank_documents(
    query_emb: np.ndarray, doc_emb: np.ndarray, doc_ids: Sequence[str], top_k: int = 100
) -> list[list[str]]:
    """Rank all documents for each query by cosine similarity of embeddings already in memory.

    Args:
        query_emb: ``(n_queries, dim)`` query embeddings.
        doc_emb: ``(n_docs, dim)`` document embeddings.
        doc_ids: Document ids, one per row of ``doc_emb``.
        top_k: Documents kept per query.

    Returns:
        Per query, the ids of its ``min(top_k, n_docs)`` best documents, best first (ties as in :func:`search`).
    """
    scores = _normalize(query_emb) @ _normalize(doc_emb).T
    keep = min(top_k, scores.shape[1])
    if keep < scores.shape[1]:
        index = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
    else:
        index = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return _rank_ids(index, np.take_along_axis(scores, index, axis=1), doc_ids)


# ---------------------------------------------------------------------------------------------------------- results


@dataclass
class RetrievalTaskResult:
    """Scores of one BEIR split.

    Attributes:
        task: Dataset name (``"SciFact"``).
        split: Qrels split.
        metrics: ``ndcg_at_k`` / ``mrr_at_k`` / ``recall_at_k`` x 100 for every cut-off.
        n_queries: Queries evaluated.
        n_docs: Documents searched.
        corpus_size: Documents in the full corpus.
        path: The BEIR folder.
        seconds: Wall time, encoding included.
        query_seconds: Time spent encoding the queries.
        document_seconds: Time spent encoding and scoring the documents.
        per_query: Per-query metrics (fractions), keyed by query id; not serialised.
    """

    task: str
    split: str
    metrics: dict[str, float]
    n_queries: int
    n_docs: int
    corpus_size: int
    path: str | None = None
    seconds: float = 0.0
    query_seconds: float = 0.0
    document_seconds: float = 0.0
    per_query: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        """Display name (the dataset name)."""
        return self.task

    @property
    def ndcg_at_10(self) -> float:
        """nDCG@10 x 100 (MTEB's main score)."""
        return self.metrics.get("ndcg_at_10", float("nan"))

    @property
    def score(self) -> float:
        """The main score: nDCG@10 x 100."""
        return self.ndcg_at_10

    @property
    def full_corpus(self) -> bool:
        """Whether the whole corpus was searched."""
        return self.n_docs == self.corpus_size

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-serialisable entry of this task.

        Returns:
            ``{"split", "score" (nDCG@10 x 100), the headline metrics, "metrics", "n_queries", "n_docs",
            "corpus_size", "full_corpus", "path", "seconds", "query_seconds", "document_seconds",
            "seconds_per_1000_docs"}``.
        """
        per_1000 = 1000.0 * self.document_seconds / self.n_docs if self.n_docs else None
        return {
            "split": self.split,
            "score": nan_to_none(self.score),
            **{key: nan_to_none(self.metrics.get(key, float("nan"))) for key in HEADLINE_METRICS},
            "metrics": {key: nan_to_none(value) for key, value in self.metrics.items()},
            "n_queries": self.n_queries,
            "n_docs": self.n_docs,
            "corpus_size": self.corpus_size,
            "full_corpus": self.full_corpus,
            "path": self.path,
            "seconds": round(self.seconds, 3),
            "query_seconds": round(self.query_seconds, 3),
            "document_seconds": round(self.document_seconds, 3),
            "seconds_per_1000_docs": None if per_1000 is None else round(per_1000, 3),
        }


@dataclass
class RetrievalResult(SuiteResult):
    """Scores of a retrieval run (``tasks``: :class:`RetrievalTaskResult` by dataset name; metric nDCG@10 x 100)."""

    kind: ClassVar[str] = "retrieval"
    metric: ClassVar[str] = "ndcg_at_10"

    def to_markdown(self, label: str | None = None, *, digits: int = 2) -> str:
        """Render the result as a markdown table with nDCG@10, MRR@10, R@10 and R@100 per dataset.

        Args:
            label: Row label (default: the model name).
            digits: Decimals shown.

        Returns:
            The table.
        """
        return retrieval_table([(label or "", self)], digits=digits)


def retrieval_table(results: Sequence[tuple[str, Any]], *, digits: int = 2) -> str:
    """Render retrieval results as one markdown table (one row per model and dataset).

    Args:
        results: ``(label, result)`` pairs; a result is a :class:`RetrievalResult` or its ``to_dict()``. An empty
            label falls back to the result's model name.
        digits: Decimals shown.

    Returns:
        The table; a dataset searched on a corpus subset is marked with its document count.
    """
    header = "| Model | Dataset | " + " | ".join(METRIC_LABELS[m] for m in HEADLINE_METRICS) + " | queries | docs |"
    lines = [header, "|---|---|" + "---:|" * (len(HEADLINE_METRICS) + 2)]
    for label, result in results:
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        name = label or data.get("model") or "model"
        for task, entry in data["tasks"].items():
            cells = ["–" if entry.get(m) is None else f"{entry[m]:.{digits}f}" for m in HEADLINE_METRICS]
            docs = str(entry["n_docs"]) + ("" if entry.get("full_corpus", True) else f" of {entry['corpus_size']}")
            lines.append(
                f"| {name} | {task} ({entry['split']}) | " + " | ".join(cells) + f" | {entry['n_queries']} | {docs} |"
            )
    return "\n".join(lines) + "\n"


def score_retrieval(
    model: Any,
    data: BEIRData,
    *,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    batch_size: int = 32,
    chunk_size: int = 128,
    show_progress_bar: bool = False,
    encode_kwargs: Mapping[str, Any] | None = None,
) -> RetrievalTaskResult:
    """Search and score one loaded BEIR split.

    Args:
        model: A ``SentenceTransformer`` (or an object with ``encode_query`` / ``encode_document`` / ``encode``).
        data: The split (possibly a subset).
        k_values: Metric cut-offs; the search keeps ``max(k_values)`` documents per query.
        batch_size: Passed to the encode calls.
        chunk_size: Documents per ``encode_document`` call.
        show_progress_bar: Show progress bars.
        encode_kwargs: Extra keyword arguments for every encode call.

    Returns:
        The task result.
    """
    start = time.perf_counter()
    query_ids = list(data.queries)
    indices, scores, seconds = search(
        model,
        [data.queries[q] for q in query_ids],
        data.documents(),
        top_k=max(k_values),
        batch_size=batch_size,
        chunk_size=chunk_size,
        show_progress_bar=show_progress_bar,
        encode_kwargs=encode_kwargs,
    )
    rankings = dict(zip(query_ids, _rank_ids(indices, scores, data.doc_ids)))
    means, per_query = ranking_metrics(rankings, data.qrels, k_values)
    return RetrievalTaskResult(
        task=data.name,
        split=data.split,
        metrics={key: 100.0 * value for key, value in means.items()},
        n_queries=len(query_ids),
        n_docs=len(data.doc_ids),
        corpus_size=data.corpus_size,
        path=str(data.folder),
        seconds=time.perf_counter() - start,
        query_seconds=seconds["queries"],
        document_seconds=seconds["documents"],
        per_query=per_query,
    )


def evaluate_retrieval(
    model: Any,
    folder: str | Path,
    split: str | None = None,
    *,
    limit: int | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    corpus_sample: int | None = None,
    corpus_seed: int | None = None,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    batch_size: int = 32,
    chunk_size: int = 128,
    show_progress_bar: bool = False,
    encode_kwargs: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> RetrievalResult:
    """Evaluate a model on one split of a BEIR-layout folder (nDCG@10, MRR@10, Recall@10/100, ...).

    Args:
        model: A ``SentenceTransformer``: queries go through ``encode_query``, documents through
            ``encode_document``.
        folder: The BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        split: The qrels split (``None``: ``"test"`` if present, else the folder's only split).
        limit: Evaluate only the first ``limit`` queries (queries.jsonl order).
        sample: Evaluate ``sample`` queries drawn at random instead (seeded by ``sample_seed``).
        sample_seed: Seed of the query draw.
        corpus_sample: Search only the relevant documents of the evaluated queries plus ``corpus_sample`` random
            other documents (a quick run; scores are higher than on the full corpus). None: the full corpus.
        corpus_seed: Seed of the document draw (default: ``sample_seed``).
        k_values: Metric cut-offs (must include 10 and 100 for the headline metrics).
        batch_size: Passed to the encode calls.
        chunk_size: Documents per ``encode_document`` call (bounds memory).
        show_progress_bar: Show progress bars.
        encode_kwargs: Extra keyword arguments for every encode call.
        model_name: Name recorded in the result; defaults to ``model.model_card_data.model_name`` if set.
        config: Free-form configuration recorded in the result.

    Returns:
        The result (scores x 100), with the query and corpus subset recorded in ``settings``.

    Raises:
        FileNotFoundError: If the folder or split is missing.
        ValueError: For invalid subset settings.
    """
    data = load_beir(folder, split).subset(
        limit, sample, sample_seed, corpus_sample=corpus_sample, corpus_seed=corpus_seed
    )
    task = score_retrieval(
        model,
        data,
        k_values=k_values,
        batch_size=batch_size,
        chunk_size=chunk_size,
        show_progress_bar=show_progress_bar,
        encode_kwargs=encode_kwargs,
    )
    settings: dict[str, Any] = {"limit": limit, "batch_size": batch_size, "k_values": list(k_values)}
    if sample is not None:
        settings.update({"sample": sample, "sample_seed": sample_seed})
    if corpus_sample is not None:
        settings.update({"corpus_sample": corpus_sample, "corpus_seed": data.corpus_seed})
    settings["full_corpus"] = task.full_corpus
    return RetrievalResult(
        tasks={task.task: task},
        model=model_name or card_model_name(model),
        config=dict(config or {}),
        settings=settings,
    )


__all__ = [
    "BEIRData",
    "DEFAULT_K_VALUES",
    "HEADLINE_METRICS",
    "RetrievalResult",
    "RetrievalTaskResult",
    "display_name",
    "evaluate_retrieval",
    "list_beir_splits",
    "load_beir",
    "rank_documents",
    "ranking_metrics",
    "read_qrels",
    "resolve_beir_split",
    "retrieval_table",
    "score_retrieval",
    "search",
]
