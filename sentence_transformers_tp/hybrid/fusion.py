"""Score fusion of ranked runs: relative score fusion (``rsf``) and reciprocal rank fusion (``rrf``), pure numpy.

A *run* is one channel's ranking of the corpus for a batch of queries: ``(indices, scores)``, two
``(n_queries, depth)`` arrays holding document positions (``-1`` pads a row with fewer documents) and their scores,
best first. Both rules are exactly those of MTEB 2.x's ``mteb.models.hybrid_wrappers.HybridSearch``:

* ``rsf`` (``fusion_strategy="rsf"``): per query, each run's scores are min-max normalised over the documents that
  run returned (all equal: every document gets 0.5), multiplied by the run's weight and summed; a document a run did
  not return gets 0 from it;
* ``rrf`` (``fusion_strategy="rrf"``): per query, each run adds ``weight / (rrf_k + rank)`` (rank 1 = its best
  document; equal scores ranked by document id, descending) to every document it returned.

Fused scores are ranked descending; equal fused scores by document id, descending (``tie_key``), as MTEB and
pytrec_eval order them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FUSIONS: tuple[str, ...] = ("rsf", "rrf")
"""The fusion rules."""

CHANNELS: tuple[str, ...] = ("dense", "sparse", "bm25")
"""Channel names of the hybrid retriever, in fusion order."""

RRF_K: int = 60
"""The rank constant of reciprocal rank fusion (MTEB's and the RRF paper's default)."""

Run = tuple[np.ndarray, np.ndarray]
"""``(indices, scores)`` of one channel: ``(n_queries, depth)`` document positions (``-1``: none) and scores."""


def min_max(scores: np.ndarray) -> np.ndarray:
    """Min-max normalise one query's scores to [0, 1] (all equal: 0.5 each, as MTEB does).

    Args:
        scores: 1-D scores.

    Returns:
        float64 normalised scores (empty in, empty out).
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return values
    low, high = values.min(), values.max()
    if high == low:
        return np.full_like(values, 0.5)
    return (values - low) / (high - low)


def _order(indices: np.ndarray, scores: np.ndarray, tie_key: np.ndarray | None) -> np.ndarray:
    """Positions sorting one query's documents by score descending, then by tie key descending."""
    key = indices if tie_key is None else tie_key[indices]
    return np.lexsort((-key, -scores))


def check_weights(weights: Sequence[float], n_runs: int) -> np.ndarray:
    """Validate fusion weights: one finite, non-negative number per run, not all zero.

    Args:
        weights: The weights.
        n_runs: Number of runs.

    Returns:
        The weights as float64.

    Raises:
        ValueError: On a wrong count, a negative or non-finite weight, or all zeros.
    """
    values = np.asarray(list(weights), dtype=np.float64)
    if values.shape != (n_runs,):
        raise ValueError(f"expected {n_runs} fusion weights, got {len(values)}")
    if not np.all(np.isfinite(values)) or np.any(values < 0) or not np.any(values > 0):
        raise ValueError(f"fusion weights must be finite, non-negative and not all zero, got {values.tolist()}")
    return values


def fuse(
    runs: Sequence[Run],
    weights: Sequence[float],
    *,
    method: str = "rsf",
    k: int = 10,
    rrf_k: int = RRF_K,
    tie_key: np.ndarray | None = None,
) -> Run:
    """Fuse several runs of the same queries into one ranking.

    Args:
        runs: The runs, each ``(indices, scores)`` of shape ``(n_queries, depth)`` (depths may differ; ``-1`` in
            ``indices`` marks an empty slot).
        weights: One weight per run.
        method: ``"rsf"`` (per-query min-max, weighted sum) or ``"rrf"`` (weighted reciprocal rank, ``rrf_k``).
        k: Documents kept per query.
        rrf_k: Rank constant of ``rrf``.
        tie_key: Per document position, an integer whose larger value ranks first among equal scores (e.g. the rank
            of each document id in sorted order, to order ties by id descending as MTEB does). None: the position.

    Returns:
        The fused ``(indices, scores)``, shape ``(n_queries, k)``: positions and float64 fused scores, best first;
        rows with fewer than ``k`` candidates are padded with ``-1`` / ``nan``.

    Raises:
        ValueError: On an unknown method, no runs, runs of different query counts, bad weights or ``k < 1``.
    """
    if method not in FUSIONS:
        raise ValueError(f"unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}")
    if not runs:
        raise ValueError("fusion needs at least one run")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if not isinstance(rrf_k, int) or isinstance(rrf_k, bool) or rrf_k < 0:
        raise ValueError(f"rrf_k must be a non-negative integer, got {rrf_k!r}")
    w = check_weights(weights, len(runs))
    n_queries = {np.asarray(indices).shape[0] for indices, _ in runs}
    if len(n_queries) != 1:
        raise ValueError(f"runs cover different numbers of queries: {sorted(n_queries)}")
    n = n_queries.pop()
    out_index = np.full((n, k), -1, dtype=np.int64)
    out_score = np.full((n, k), np.nan, dtype=np.float64)
    for q in range(n):
        docs: list[np.ndarray] = []
        parts: list[np.ndarray] = []
        for (indices, scores), weight in zip(runs, w):
            row = np.asarray(indices[q], dtype=np.int64)
            values = np.asarray(scores[q], dtype=np.float64)
            valid = row >= 0
            row, values = row[valid], values[valid]
            if row.size == 0:
                continue
            if method == "rsf":
                contribution = weight * min_max(values)
            else:
                ranks = np.empty(row.size, dtype=np.float64)
                ranks[_order(row, values, tie_key)] = np.arange(1, row.size + 1)
                contribution = weight / (rrf_k + ranks)
            docs.append(row)
            parts.append(contribution)
        if not docs:
            continue
        unique, inverse = np.unique(np.concatenate(docs), return_inverse=True)
        fused = np.zeros(unique.size, dtype=np.float64)
        np.add.at(fused, inverse, np.concatenate(parts))
        order = _order(unique, fused, tie_key)[:k]
        out_index[q, : order.size] = unique[order]
        out_score[q, : order.size] = fused[order]
    return out_index, out_score


def fuse_rsf(runs: Sequence[Run], weights: Sequence[float], *, k: int = 10, tie_key: np.ndarray | None = None) -> Run:
    """Relative score fusion (per-query min-max, weighted sum); see :func:`fuse`."""
    return fuse(runs, weights, method="rsf", k=k, tie_key=tie_key)


def fuse_rrf(
    runs: Sequence[Run],
    weights: Sequence[float],
    *,
    k: int = 10,
    rrf_k: int = RRF_K,
    tie_key: np.ndarray | None = None,
) -> Run:
    """Reciprocal rank fusion (``weight / (rrf_k + rank)`` summed); see :func:`fuse`."""
    return fuse(runs, weights, method="rrf", k=k, rrf_k=rrf_k, tie_key=tie_key)


__all__ = ["CHANNELS", "FUSIONS", "RRF_K", "Run", "check_weights", "fuse", "fuse_rrf", "fuse_rsf", "min_max"]
