from __future__ import annotations

import numpy as np
import pytest

from sentence_transformers_tp.hybrid.fusion import fuse, min_max

mteb_hybrid = pytest.importorskip("mteb.models.hybrid_wrappers")


def _random_runs(rng: np.random.Generator, n_queries: int, n_docs: int, depths: list[int]):
    runs = []
    for depth in depths:
        indices = np.stack([rng.permutation(n_docs)[:depth] for _ in range(n_queries)])
        scores = np.round(rng.normal(size=(n_queries, depth)), 1).astype(np.float32)  # rounding makes ties
        order = np.argsort(-scores, axis=1, kind="stable")
        runs.append((np.take_along_axis(indices, order, 1), np.take_along_axis(scores, order, 1)))
    return runs


def _mteb_ranking(runs, weights, method: str, ids: list[str], q: int, k: int) -> list[tuple[str, float]]:
    dicts = [{ids[i]: float(s) for i, s in zip(indices[q], scores[q])} for indices, scores in runs]
    if method == "rsf":
        fused = mteb_hybrid.fuse_relative_score_fusion(dicts, weights)
    else:
        fused = mteb_hybrid.fuse_rrf(dicts, weights, rrf_k=60)
    return sorted(fused.items(), key=lambda x: (x[1], x[0]), reverse=True)[:k]


@pytest.mark.parametrize("method", ["rsf", "rrf"])
def test_fuse_equals_mteb_hybrid_search(method: str) -> None:
    """rsf / rrf give MTEB HybridSearch's fused documents, scores and order (ties by id descending)."""
    rng = np.random.default_rng(0)
    ids = [f"doc{i:02d}" for i in range(30)]
    tie_key = np.argsort(np.argsort(ids))
    runs = _random_runs(rng, 8, 30, [10, 7, 12])
    weights = [0.2, 0.5, 0.3]
    indices, scores = fuse(runs, weights, method=method, k=15, tie_key=tie_key)
    for q in range(8):
        expected = _mteb_ranking(runs, weights, method, ids, q, 15)
        got = [(ids[i], s) for i, s in zip(indices[q], scores[q]) if i >= 0]
        assert [d for d, _ in got] == [d for d, _ in expected]
        assert np.allclose([s for _, s in got], [s for _, s in expected], rtol=0, atol=1e-12)


def test_rsf_missing_document_gets_zero_and_equal_scores_get_half() -> None:
    """A document absent from a run gets 0 from it; a run whose scores are all equal gives each document 0.5."""
    runs = [
        (np.array([[0, 1]]), np.array([[2.0, 1.0]])),  # normalised 1, 0
        (np.array([[2, 3]]), np.array([[5.0, 5.0]])),  # all equal: 0.5 each
    ]
    indices, scores = fuse(runs, [0.6, 0.4], method="rsf", k=4)
    fused = dict(zip(indices[0].tolist(), scores[0].tolist()))
    assert fused == pytest.approx({0: 0.6, 1: 0.0, 2: 0.2, 3: 0.2})


def test_rrf_uses_k_60_and_weights() -> None:
    """rrf adds weight / (60 + rank) per run."""
    runs = [(np.array([[0, 1]]), np.array([[9.0, 1.0]])), (np.array([[1, 0]]), np.array([[3.0, 2.0]]))]
    indices, scores = fuse(runs, [1.0, 2.0], method="rrf", k=2)
    fused = dict(zip(indices[0].tolist(), scores[0].tolist()))
    assert fused[0] == pytest.approx(1 / 61 + 2 / 62)
    assert fused[1] == pytest.approx(1 / 62 + 2 / 61)
    assert indices[0].tolist() == [1, 0]


def test_fuse_pads_short_rows() -> None:
    """A query with fewer candidates than k is padded with -1 / nan."""
    indices, scores = fuse([(np.array([[3, -1]]), np.array([[1.0, 0.0]]))], [1.0], k=3)
    assert indices.tolist() == [[3, -1, -1]]
    assert np.isnan(scores[0, 1:]).all()


def test_min_max() -> None:
    """min_max maps to [0, 1]; constant input gives 0.5."""
    assert min_max(np.array([1.0, 3.0, 2.0])).tolist() == [0.0, 1.0, 0.5]
    assert min_max(np.array([4.0, 4.0])).tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "sum"}, "unknown fusion"),
        ({"weights": [1.0]}, "expected 2 fusion weights"),
        ({"weights": [0.0, 0.0]}, "not all zero"),
        ({"weights": [-1.0, 2.0]}, "non-negative"),
        ({"k": 0}, "k must be positive"),
    ],
)
def test_fuse_rejects_bad_input(kwargs: dict, message: str) -> None:
    """Bad fusion settings raise a clear ValueError."""
    runs = [(np.array([[0]]), np.array([[1.0]]))] * 2
    call = {"weights": [0.5, 0.5], **kwargs}
    with pytest.raises(ValueError, match=message):
        fuse(runs, **call)
