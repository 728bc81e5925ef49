"""Bounded-memory top-k search of embeddings already in memory (dense matrices or sparse CSR matrices).

:func:`top_k_search` scores query blocks against document blocks and keeps a running top-k per query, so at most
``query_chunk x doc_chunk`` scores exist at once (never the full queries x corpus matrix). Within the top-k,
documents are ordered by score descending, then by ``tie_key`` descending (MTEB / pytrec_eval order documents with
equal scores by id, descending).
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUERY_CHUNK = 256
"""Queries scored together."""

DOC_CHUNK = 8192
"""Documents scored together."""


def _block_scores(queries: Any, documents: Any) -> np.ndarray:
    """Dot products of a query block with a document block, as a dense float32 array."""
    product = queries @ documents.T
    if hasattr(product, "toarray"):
        product = product.toarray()
    return np.asarray(product, dtype=np.float32)


def top_k_search(
    queries: Any,
    documents: Any,
    k: int,
    *,
    tie_key: np.ndarray | None = None,
    query_chunk: int = QUERY_CHUNK,
    doc_chunk: int = DOC_CHUNK,
    progress: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` documents of each query by dot product, in bounded memory.

    Args:
        queries: ``(n_queries, dim)`` array or scipy sparse matrix.
        documents: ``(n_docs, dim)`` array (a memory map works), or scipy CSR matrix.
        k: Documents kept per query (capped at ``n_docs``).
        tie_key: Per document, an integer ranking equal scores (larger first); None: the position.
        query_chunk: Queries per block.
        doc_chunk: Documents per block.
        progress: A tqdm bar advanced by the number of queries done, or None.

    Returns:
        ``(indices, scores)`` of shape ``(n_queries, min(k, n_docs))``, best first.
    """
    n_queries, n_docs = queries.shape[0], documents.shape[0]
    depth = min(k, n_docs)
    out_index = np.empty((n_queries, depth), dtype=np.int64)
    out_score = np.empty((n_queries, depth), dtype=np.float32)
    key_all = np.arange(n_docs) if tie_key is None else np.asarray(tie_key)
    for q0 in range(0, n_queries, query_chunk):
        block = queries[q0 : q0 + query_chunk]
        rows = block.shape[0]
        best_score = np.empty((rows, 0), dtype=np.float32)
        best_index = np.empty((rows, 0), dtype=np.int64)
        for d0 in range(0, n_docs, doc_chunk):
            scores = _block_scores(block, documents[d0 : d0 + doc_chunk])
            index = np.broadcast_to(np.arange(d0, d0 + scores.shape[1]), scores.shape)
            scores = np.concatenate([best_score, scores], axis=1)
            index = np.concatenate([best_index, index], axis=1)
            if scores.shape[1] > depth:
                # A full sort (not argpartition): among equal scores at the cut, the tie order decides who stays.
                keep = np.lexsort((-key_all[index], -scores), axis=1)[:, :depth]
                scores = np.take_along_axis(scores, keep, axis=1)
                index = np.take_along_axis(index, keep, axis=1)
            best_score, best_index = scores, index
        order = np.lexsort((-key_all[best_index], -best_score), axis=1)
        out_score[q0 : q0 + rows] = np.take_along_axis(best_score, order, axis=1)
        out_index[q0 : q0 + rows] = np.take_along_axis(best_index, order, axis=1)
        if progress is not None:
            progress.update(rows)
    return out_index, out_score


__all__ = ["DOC_CHUNK", "QUERY_CHUNK", "top_k_search"]
