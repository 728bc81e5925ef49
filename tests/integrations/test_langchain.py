"""LangChain: TokenPrependingEmbeddings (standard langchain-tests, templates, async) and the stock
HuggingFaceEmbeddings with a saved TP model."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import EmbeddingsIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402

from sentence_transformers_tp.factory import load_model  # noqa: E402
from sentence_transformers_tp.integrations import ModelSpec  # noqa: E402
from sentence_transformers_tp.integrations.langchain import TokenPrependingEmbeddings  # noqa: E402
from tests.integrations.conftest import ATOL, LAYERS, QUERY_TEMPLATE, max_diff, run_example, unit  # noqa: E402

TEXTS = ["A man is playing a guitar.", "The cat sleeps on the sofa.", "Stocks fell after the rate decision."]


@pytest.fixture(scope="module")
def asymmetric(asymmetric_model_dir):
    """The saved asymmetric tiny model, loaded once."""
    return load_model(str(asymmetric_model_dir), device="cpu")


class _SavedModelParams:
    """Standard-test mixin: build the embeddings from the saved tiny model."""

    saved_dir: str = ""

    @pytest.fixture(autouse=True)
    def _use_saved_model(self, saved_model_dir):
        type(self).saved_dir = str(saved_model_dir)

    @property
    def embeddings_class(self) -> type[TokenPrependingEmbeddings]:
        return TokenPrependingEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_name_or_path": self.saved_dir, "device": "cpu"}


class TestTokenPrependingEmbeddingsUnit(_SavedModelParams, EmbeddingsUnitTests):
    """langchain-tests' standard unit tests for embeddings."""


@pytest.mark.asyncio
@pytest.mark.filterwarnings(
    "ignore:The test <Function .*> is marked with '@pytest.mark.asyncio' but it is not an async"
)
class TestTokenPrependingEmbeddingsIntegration(_SavedModelParams, EmbeddingsIntegrationTests):
    """langchain-tests' standard integration tests (sync and async embedding) on the tiny model."""


def test_documents_and_queries_use_their_templates(asymmetric):
    """embed_documents equals encode_document, embed_query equals encode_query (the query template)."""
    embeddings = TokenPrependingEmbeddings.from_model(asymmetric, batch_size=2)
    documents = np.array(embeddings.embed_documents(TEXTS))
    query = np.array(embeddings.embed_query(TEXTS[0]))
    assert max_diff(documents, asymmetric.encode_document(TEXTS)) <= ATOL
    assert max_diff(query, asymmetric.encode_query(TEXTS[0])) <= ATOL
    assert max_diff(query, documents[0]) > 1e-3
    assert embeddings.embed_documents([]) == []


def test_normalize_embeddings_gives_unit_vectors(asymmetric):
    """normalize_embeddings=True returns the unit-length versions of the same vectors."""
    embeddings = TokenPrependingEmbeddings.from_model(asymmetric, normalize_embeddings=True)
    documents = np.array(embeddings.embed_documents(TEXTS))
    assert np.allclose(np.linalg.norm(documents, axis=1), 1.0, atol=1e-5)
    assert max_diff(documents, unit(asymmetric.encode_document(TEXTS))) <= ATOL


def test_from_model_wraps_the_model_without_loading_another(asymmetric, monkeypatch):
    """from_model uses the given SentenceTransformer as client and loads nothing."""
    monkeypatch.setattr(ModelSpec, "load", lambda self: pytest.fail("from_model loaded a model"))
    assert TokenPrependingEmbeddings.from_model(asymmetric).client is asymmetric


def test_embed_documents_reports_truncation_once(asymmetric, caplog):
    """embed_documents logs one truncation warning for the call, however many batches it takes."""
    long_text = " ".join(["word"] * (asymmetric.max_seq_length + 50))
    embeddings = TokenPrependingEmbeddings.from_model(asymmetric, batch_size=1)
    with caplog.at_level("WARNING"):
        vectors = embeddings.embed_documents([long_text, "Short.", long_text + " again"])
    assert len(vectors) == 3
    reports = [r.getMessage() for r in caplog.records if "did not fit" in r.getMessage()]
    assert len(reports) == 1 and reports[0].startswith("2 of 3 texts")


def test_async_methods_match_sync_and_do_not_block_the_event_loop(asymmetric, monkeypatch):
    """aembed_documents / aembed_query give the sync vectors and run the model outside the event loop's thread."""
    embeddings = TokenPrependingEmbeddings.from_model(asymmetric)
    release = threading.Event()
    encode_document = asymmetric.encode_document

    def wait_then_encode(*args, **kwargs):
        # Only the event loop sets `release`: if the embedding ran on the loop's thread, this would time out.
        assert release.wait(timeout=20), "the event loop was blocked while embedding"
        return encode_document(*args, **kwargs)

    monkeypatch.setattr(asymmetric, "encode_document", wait_then_encode)

    async def main():
        task = asyncio.create_task(embeddings.aembed_documents(TEXTS))
        await asyncio.sleep(0.05)
        release.set()
        return await task, await embeddings.aembed_query(TEXTS[0])

    documents, query = asyncio.run(main())
    monkeypatch.undo()
    assert max_diff(documents, embeddings.embed_documents(TEXTS)) <= ATOL
    assert max_diff(query, embeddings.embed_query(TEXTS[0])) <= ATOL


def test_concurrent_async_calls_give_the_sequential_vectors(asymmetric):
    """Many aembed_documents / aembed_query calls in flight at once (threads sharing one model) stay correct."""
    embeddings = TokenPrependingEmbeddings.from_model(asymmetric, batch_size=2)
    texts = TEXTS * 3

    async def main():
        documents = [embeddings.aembed_documents(texts[i:]) for i in range(len(texts))]
        queries = [embeddings.aembed_query(text) for text in texts]
        return await asyncio.gather(*documents), await asyncio.gather(*queries)

    documents, queries = asyncio.run(main())
    expected_documents = asymmetric.encode_document(texts)
    for i, vectors in enumerate(documents):
        assert max_diff(vectors, expected_documents[i:]) <= ATOL
    assert max_diff(queries, asymmetric.encode_query(texts)) <= ATOL


def test_constructs_from_backbone_template_and_preset(tp_backbone, tiny_preset, asymmetric):
    """A backbone + template (+ module_kwargs) and a preset give the same vectors as the equivalent saved model."""
    from_backbone = TokenPrependingEmbeddings(
        model_name_or_path=str(tp_backbone),
        template="prompteol",
        module_kwargs={"query_template": QUERY_TEMPLATE},
        device="cpu",
        **LAYERS,
    )
    assert max_diff(from_backbone.embed_query(TEXTS[0]), asymmetric.encode_query(TEXTS[0])) <= ATOL
    from_preset = TokenPrependingEmbeddings(preset=str(tiny_preset), device="cpu")
    module = from_preset.client[0]
    assert (module.tp_start, module.tp_exit, module.output_layer) == (LAYERS["tp_start"], 3, 3)
    documents = np.array(from_preset.embed_documents(TEXTS))
    assert max_diff(documents, asymmetric.encode_document(TEXTS)) <= ATOL


def test_invalid_settings_are_rejected(saved_model_dir):
    """Unknown fields fail validation, and a template for a saved model is refused by load_model."""
    with pytest.raises(ValueError, match="templat"):
        TokenPrependingEmbeddings(model_name_or_path=str(saved_model_dir), templat="prompteol")
    with pytest.raises(ValueError, match="saved model"):
        TokenPrependingEmbeddings(model_name_or_path=str(saved_model_dir), template="metaeol")


def test_docs_example_with_in_memory_vector_store(saved_model_dir, substitutions):
    """The docs' LangChain example runs: vectors equal the model's and the vector store answers a search."""
    namespace = run_example("langchain", substitutions(saved_model_dir))
    model = load_model(str(saved_model_dir), device="cpu")
    documents = unit(model.encode_document(TEXTS[:2]))
    assert max_diff(namespace["doc_vectors"], documents) <= ATOL
    assert max_diff(namespace["query_vector"], unit(model.encode_query("Who is making music?"))) <= ATOL
    assert len(namespace["hits"]) == 1 and namespace["hits"][0].page_content in TEXTS


def test_docs_example_stock_huggingface_embeddings(asymmetric_model_dir, asymmetric, substitutions):
    """The stock HuggingFaceEmbeddings loads a saved TP model and, with task kwargs, gives our vectors."""
    pytest.importorskip("langchain_huggingface")
    namespace = run_example("langchain-stock", substitutions(asymmetric_model_dir))
    ours = TokenPrependingEmbeddings.from_model(asymmetric)
    assert max_diff(namespace["stock_doc_vectors"], ours.embed_documents(TEXTS[:2])) <= ATOL
    query = "Who is making music?"
    assert max_diff(namespace["stock_query_vector"], ours.embed_query(query)) <= ATOL


def test_stock_huggingface_embeddings_minimal_form(asymmetric_model_dir, asymmetric):
    """With only trust_remote_code, HuggingFaceEmbeddings gives plain encode() vectors (the main template)."""
    HuggingFaceEmbeddings = pytest.importorskip("langchain_huggingface").HuggingFaceEmbeddings

    stock = HuggingFaceEmbeddings(
        model_name=str(asymmetric_model_dir), model_kwargs={"trust_remote_code": True, "device": "cpu"}
    )
    assert max_diff(stock.embed_documents(TEXTS), asymmetric.encode(TEXTS)) <= ATOL
    assert max_diff(stock.embed_query(TEXTS[0]), asymmetric.encode(TEXTS[0])) <= ATOL


def test_readme_example(saved_model_dir, substitutions):
    """The README's LangChain example runs and gives encode_document / encode_query vectors."""
    namespace = run_example("readme-langchain", substitutions(saved_model_dir))
    model = load_model(str(saved_model_dir), device="cpu")
    assert max_diff(namespace["vectors"], model.encode_document(TEXTS[:2])) <= ATOL
    assert max_diff(namespace["query"], model.encode_query("Who is making music?")) <= ATOL


def test_non_string_document_names_its_index(asymmetric):
    """A non-string document raises a ValueError naming its index in the caller's list."""
    embeddings = TokenPrependingEmbeddings.from_model(asymmetric)
    with pytest.raises(ValueError, match="Input 2 is of type NoneType"):
        embeddings.embed_documents(["a", "b", None])


def test_model_name_spelling_loads_that_model(asymmetric_model_dir, asymmetric):
    """model_name= / model= (HuggingFaceEmbeddings' spellings) load the given model, not the default one."""
    for alias in ("model_name", "model"):
        embeddings = TokenPrependingEmbeddings(**{alias: str(asymmetric_model_dir)}, device="cpu")
        assert embeddings.model_name == embeddings.model_name_or_path == str(asymmetric_model_dir)
        assert max_diff(embeddings.embed_query(TEXTS[0]), asymmetric.encode_query(TEXTS[0])) <= ATOL
        assert max_diff(embeddings.embed_documents(TEXTS), asymmetric.encode_document(TEXTS)) <= ATOL
    with pytest.raises(ValueError, match="name two models"):
        TokenPrependingEmbeddings(model_name=str(asymmetric_model_dir), model_name_or_path="smollm2")


def test_huggingface_embeddings_arguments_have_the_stock_meaning(saved_model_dir, tmp_path):
    """model_name, cache_folder, model_kwargs, encode_kwargs, query_encode_kwargs and show_progress give the vectors
    the stock HuggingFaceEmbeddings gives with the same arguments (on a one-template model)."""
    HuggingFaceEmbeddings = pytest.importorskip("langchain_huggingface").HuggingFaceEmbeddings

    arguments = dict(
        model_name=str(saved_model_dir),
        cache_folder=str(tmp_path / "cache"),
        model_kwargs={"trust_remote_code": True, "device": "cpu", "model_kwargs": {"dtype": torch.bfloat16}},
        encode_kwargs={"normalize_embeddings": True, "batch_size": 2},
        query_encode_kwargs={"normalize_embeddings": False},
        show_progress=False,
    )
    stock = HuggingFaceEmbeddings(**arguments)
    ours = TokenPrependingEmbeddings(**arguments)
    assert ours.client[0].model.dtype == stock._client[0].model.dtype == torch.bfloat16
    documents = np.array(ours.embed_documents(TEXTS))
    # bfloat16 vectors (the model dtype, as stock returns them): unit norm to bfloat16 precision.
    assert np.allclose(np.linalg.norm(documents, axis=1), 1.0, atol=1e-2)
    assert max_diff(documents, stock.embed_documents(TEXTS)) <= ATOL
    query = np.array(ours.embed_query(TEXTS[0]))
    assert abs(np.linalg.norm(query) - 1.0) > 1e-2  # query_encode_kwargs replaced encode_kwargs
    assert max_diff(query, stock.embed_query(TEXTS[0])) <= ATOL


def test_unsupported_huggingface_embeddings_arguments_are_refused(saved_model_dir):
    """model_kwargs keys with no meaning here, multi_process=True and two disagreeing devices fail in one line."""
    path = str(saved_model_dir)
    with pytest.raises(ValueError, match=r"model_kwargs \['prompts'\] are not supported"):
        TokenPrependingEmbeddings(model_name=path, model_kwargs={"prompts": {"query": "q: "}})
    with pytest.raises(ValueError, match="multi_process=True is not supported"):
        TokenPrependingEmbeddings(model_name=path, multi_process=True)
    with pytest.raises(ValueError, match="disagree"):
        TokenPrependingEmbeddings(model_name=path, device="cpu", model_kwargs={"device": "meta"})


def test_hub_id_brings_its_saved_settings(hub_repo, asymmetric_model_dir, saved_model_dir):
    """A hub id (simulated offline HF cache) gives the vectors of the same model loaded from its local folder,
    queries included; model_kwargs={"revision": ...} picks that snapshot."""
    local = TokenPrependingEmbeddings(model_name=str(asymmetric_model_dir), device="cpu")
    hub = TokenPrependingEmbeddings(model_name=hub_repo, device="cpu")
    assert max_diff(hub.embed_query(TEXTS[0]), local.embed_query(TEXTS[0])) <= ATOL
    assert max_diff(hub.embed_documents(TEXTS), local.embed_documents(TEXTS)) <= ATOL
    tagged = TokenPrependingEmbeddings(model_name=hub_repo, model_kwargs={"revision": "v1", "device": "cpu"})
    symmetric = load_model(str(saved_model_dir), device="cpu")
    assert max_diff(tagged.embed_query(TEXTS[0]), symmetric.encode_query(TEXTS[0])) <= ATOL
