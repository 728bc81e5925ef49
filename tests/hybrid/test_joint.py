from __future__ import annotations

import numpy as np
import pytest

from sentence_transformers_tp.hybrid.encoders import normalize_rows
from sentence_transformers_tp.hybrid.retriever import HybridRetriever
from tests.conftest import build_backbone
from tests.hybrid.helpers import CORPUS, QUERIES


@pytest.fixture(scope="module")
def tiny_tp_model(tmp_path_factory):
    """A SentenceTransformer with a TP module on a tiny random Llama (tied embeddings)."""
    from sentence_transformers import SentenceTransformer

    from sentence_transformers_tp.module import TokenPrependingTransformer

    path = build_backbone(tmp_path_factory.mktemp("joint-llama"), "llama")
    return SentenceTransformer(modules=[TokenPrependingTransformer(str(path), tp_start=1, tp_exit=3)], device="cpu")


def test_sparse_channel_of_the_dense_model_comes_from_one_forward(tiny_tp_model) -> None:
    """sparse_model=model: each batch is one backbone forward giving the dense embedding and the PromptReps vector."""
    from sentence_transformers_tp.sparse import encode_dense_and_sparse

    texts = list(CORPUS.values())
    encode_dense_and_sparse(tiny_tp_model, texts[:1], "document")  # the sparse head's one-time setup
    first_layer = tiny_tp_model[0].auto_model.layers[0]
    calls = []
    handle = first_layer.register_forward_hook(lambda *args: calls.append(1))
    try:
        retriever = HybridRetriever(tiny_tp_model, tiny_tp_model, bm25=False, batch_size=len(texts))
        retriever.index(CORPUS)
    finally:
        handle.remove()
    assert len(calls) == 1
    assert retriever.joint and retriever.index_settings()["sparse"]["joint"] == "promptreps"
    expected = normalize_rows(tiny_tp_model.encode_document(texts, convert_to_numpy=True))
    np.testing.assert_allclose(retriever.dense_matrix, expected, atol=1e-5)
    _, sparse = encode_dense_and_sparse(tiny_tp_model, texts, "document")
    np.testing.assert_allclose(retriever.sparse_matrix.toarray(), sparse.to_dense().numpy(), atol=1e-5)
    runs = retriever.channel_runs(QUERIES, 3)
    assert set(runs) == {"dense", "sparse"} and runs["sparse"][0].shape == (len(QUERIES), 3)
