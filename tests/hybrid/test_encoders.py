from __future__ import annotations

import numpy as np
import torch

from sentence_transformers_tp.hybrid.encoders import model_fingerprint, normalize_rows, to_csr
from tests.hybrid.helpers import CORPUS, QUERIES, build_tiny_sparse_encoder


def test_to_csr_accepts_encoder_outputs() -> None:
    """Sparse COO, dense tensors, lists of 1-D tensors and arrays all become the same CSR matrix."""
    dense = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    expected = dense.numpy()
    for value in (dense.to_sparse(), dense, [dense[0].to_sparse(), dense[1].to_sparse()], expected):
        np.testing.assert_array_equal(to_csr(value).toarray(), expected)


def test_normalize_rows_keeps_zero_rows() -> None:
    """Rows become unit length; an all-zero row stays zero."""
    out = normalize_rows([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_fingerprint_is_stable_across_use_and_differs_between_models(tmp_path) -> None:
    """A model's fingerprint is the same before and after it encodes; another model's weights give another one."""
    texts = [*CORPUS.values(), *QUERIES]
    model = build_tiny_sparse_encoder(tmp_path / "a", texts)
    before = model_fingerprint(model)
    model.encode_document(texts[:2])
    assert model_fingerprint(model) == before
    other = build_tiny_sparse_encoder(tmp_path / "b", texts)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert model_fingerprint(other) != before
