from __future__ import annotations

import pytest

from tests.hybrid.helpers import CORPUS, QUERIES, build_tiny_sparse_encoder


@pytest.fixture(scope="session")
def tiny_sparse_encoder(tmp_path_factory: pytest.TempPathFactory):
    """A real tiny ``SparseEncoder`` (random BERT + SPLADE) whose tokenizer knows the test corpus words."""
    return build_tiny_sparse_encoder(tmp_path_factory.mktemp("tiny-splade"), [*CORPUS.values(), *QUERIES])
