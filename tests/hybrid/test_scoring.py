from __future__ import annotations

import numpy as np
import scipy.sparse

from sentence_transformers_tp.hybrid.scoring import top_k_search


def _brute_force(queries, documents, k, tie_key):
    scores = np.asarray(
        queries @ documents.T if not scipy.sparse.issparse(queries) else (queries @ documents.T).toarray()
    )
    out = []
    for row in scores.astype(np.float32):
        order = np.lexsort((-tie_key, -row))[:k]
        out.append(order)
    return np.array(out)


def test_chunked_top_k_equals_full_sort_dense() -> None:
    """Block-wise top-k (tiny blocks) equals a full sort of the score matrix, ties ordered by the tie key."""
    rng = np.random.default_rng(0)
    queries = np.round(rng.normal(size=(7, 5)), 1).astype(np.float32)
    documents = np.round(rng.normal(size=(23, 5)), 1).astype(np.float32)
    documents[5] = documents[9]  # exact ties
    tie_key = rng.permutation(23)
    indices, scores = top_k_search(queries, documents, 6, tie_key=tie_key, query_chunk=3, doc_chunk=4)
    np.testing.assert_array_equal(indices, _brute_force(queries, documents, 6, tie_key))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ documents.T, indices, 1), rtol=1e-6)


def test_chunked_top_k_sparse_and_depth_capped() -> None:
    """Sparse CSR inputs work the same; k above the corpus size returns every document."""
    rng = np.random.default_rng(1)
    queries = scipy.sparse.random(4, 50, density=0.2, random_state=1, format="csr", dtype=np.float32)
    documents = scipy.sparse.random(9, 50, density=0.2, random_state=2, format="csr", dtype=np.float32)
    tie_key = rng.permutation(9)
    indices, _ = top_k_search(queries, documents, 100, tie_key=tie_key, query_chunk=2, doc_chunk=2)
    assert indices.shape == (4, 9)
    np.testing.assert_array_equal(indices, _brute_force(queries, documents, 9, tie_key))
