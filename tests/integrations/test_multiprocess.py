"""Multi-process encoding: TP models pickle, and a pool of CPU processes gives the single-process vectors."""

from __future__ import annotations

import copy
import pickle

from sentence_transformers_tp.factory import load_model
from tests.integrations.conftest import ATOL, TEXTS, max_diff, run_example


def test_model_pickles_to_an_equivalent_model(asymmetric_model_dir):
    """pickle and deepcopy keep the TP hooks' targets (the backbone's own layers) and give the same vectors."""
    model = load_model(str(asymmetric_model_dir), device="cpu")
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        module = clone[0]
        assert all(a is b for a, b in zip(module._layers, module.model.layers))
        assert module._tokenizer_lock is not model[0]._tokenizer_lock
        with module._tokenizer_lock:  # a fresh, usable lock
            pass
        assert max_diff(clone.encode_query(TEXTS), model.encode_query(TEXTS)) <= ATOL
        assert max_diff(clone.encode_document(TEXTS), model.encode_document(TEXTS)) <= ATOL


def test_docs_example_pool_of_cpu_processes_matches_single_process(asymmetric_model_dir, substitutions, monkeypatch):
    """The docs' pool example (2 CPU processes) returns the single-process encode_document / encode_query vectors."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread per worker process, as the docs advise
    namespace = run_example("multi-process", substitutions(asymmetric_model_dir))
    model = load_model(str(asymmetric_model_dir), device="cpu")
    texts = namespace["texts"]
    documents, queries = namespace["document_vectors"], namespace["query_vectors"]
    assert documents.shape == (len(texts), model.get_embedding_dimension())
    assert max_diff(documents, model.encode_document(texts)) <= ATOL
    assert max_diff(queries, model.encode_query(texts[:20])) <= ATOL
    # The task reached the workers: queries used the query template.
    assert max_diff(queries, documents[:20]) > 1e-3
    assert len(namespace["pool"]["processes"]) == 2
