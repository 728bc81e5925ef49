"""LlamaIndex: TokenPrependingEmbedding (query/text, batch, async, VectorStoreIndex retrieval) and the stock
HuggingFaceEmbedding with a saved TP model."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("llama_index.core")

from llama_index.core import Document, VectorStoreIndex  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402

from sentence_transformers_tp.factory import load_model  # noqa: E402
from sentence_transformers_tp.integrations import ModelSpec  # noqa: E402
from sentence_transformers_tp.integrations.llamaindex import TokenPrependingEmbedding  # noqa: E402
from tests.conftest import requires_smollm2  # noqa: E402
from tests.integrations.conftest import ATOL, LAYERS, QUERY_TEMPLATE, max_diff, run_example, unit  # noqa: E402

TEXTS = ["A man is playing a guitar.", "The cat sleeps on the sofa.", "Stocks fell after the rate decision."]

#: Questions of the real-model retrieval test and the start of the docs example's document that answers each.
REAL_QUESTIONS = {
    "Which city has the famous iron tower?": "The Eiffel Tower",
    "How do plants make energy from sunlight?": "Photosynthesis",
    "What happened to shares when interest rates went up?": "The stock market",
    "Who scored goals in the soccer game?": "Lionel Messi",
    "How do I make a loaf of bread at home?": "To bake bread",
}


@pytest.fixture(autouse=True)
def _llama_index_cache(tmp_path_factory, monkeypatch):
    """Keep LlamaIndex's cache folder (used by the stock HuggingFaceEmbedding) out of the home directory."""
    monkeypatch.setenv("LLAMA_INDEX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "llama_index_cache"))


@pytest.fixture(scope="module")
def asymmetric(asymmetric_model_dir):
    """The saved asymmetric tiny model, loaded once."""
    return load_model(str(asymmetric_model_dir), device="cpu")


def test_query_and_text_embeddings_use_their_templates(asymmetric):
    """Queries use encode_query, texts encode_document (single and batch), normalised by default."""
    embedding = TokenPrependingEmbedding.from_model(asymmetric, embed_batch_size=2)
    assert embedding.class_name() == "TokenPrependingEmbedding"
    query = embedding.get_query_embedding(TEXTS[0])
    text = embedding.get_text_embedding(TEXTS[0])
    batch = embedding.get_text_embedding_batch(TEXTS)
    assert max_diff(query, unit(asymmetric.encode_query(TEXTS[0]))) <= ATOL
    assert max_diff(text, unit(asymmetric.encode_document(TEXTS[0]))) <= ATOL
    assert max_diff(batch, unit(asymmetric.encode_document(TEXTS))) <= ATOL
    assert max_diff(query, text) > 1e-3
    raw = TokenPrependingEmbedding.from_model(asymmetric, normalize=False)
    assert max_diff(raw.get_text_embedding_batch(TEXTS), asymmetric.encode_document(TEXTS)) <= ATOL


def test_from_model_wraps_the_model_without_loading_another(asymmetric, monkeypatch):
    """from_model uses the given SentenceTransformer as client and loads nothing."""
    monkeypatch.setattr(ModelSpec, "load", lambda self: pytest.fail("from_model loaded a model"))
    assert TokenPrependingEmbedding.from_model(asymmetric).client is asymmetric


def test_async_methods_match_sync_and_do_not_block_the_event_loop(asymmetric, monkeypatch):
    """aget_query_embedding / aget_text_embedding(_batch) give the sync vectors, off the event loop's thread."""
    embedding = TokenPrependingEmbedding.from_model(asymmetric)
    release = threading.Event()
    encode_document = asymmetric.encode_document

    def wait_then_encode(*args, **kwargs):
        assert release.wait(timeout=20), "the event loop was blocked while embedding"
        return encode_document(*args, **kwargs)

    monkeypatch.setattr(asymmetric, "encode_document", wait_then_encode)

    async def main():
        task = asyncio.create_task(embedding.aget_text_embedding_batch(TEXTS))
        await asyncio.sleep(0.05)
        release.set()
        batch = await task
        return batch, await embedding.aget_text_embedding(TEXTS[1]), await embedding.aget_query_embedding(TEXTS[0])

    batch, text, query = asyncio.run(main())
    monkeypatch.undo()
    assert max_diff(batch, embedding.get_text_embedding_batch(TEXTS)) <= ATOL
    assert max_diff(text, embedding.get_text_embedding(TEXTS[1])) <= ATOL
    assert max_diff(query, embedding.get_query_embedding(TEXTS[0])) <= ATOL


def test_constructs_from_saved_model_backbone_and_preset(asymmetric_model_dir, tp_backbone, tiny_preset, asymmetric):
    """A saved folder, a backbone + template (+ module_kwargs) and a preset all load and embed like the model."""
    saved = TokenPrependingEmbedding(str(asymmetric_model_dir), device="cpu")
    assert saved.model_name == str(asymmetric_model_dir)
    assert max_diff(saved.get_query_embedding(TEXTS[0]), unit(asymmetric.encode_query(TEXTS[0]))) <= ATOL
    backbone = TokenPrependingEmbedding(
        str(tp_backbone),
        template="prompteol",
        module_kwargs={"query_template": QUERY_TEMPLATE},
        device="cpu",
        **LAYERS,
    )
    assert max_diff(backbone.get_query_embedding(TEXTS[0]), unit(asymmetric.encode_query(TEXTS[0]))) <= ATOL
    preset = TokenPrependingEmbedding(preset=str(tiny_preset), device="cpu")
    assert max_diff(preset.get_text_embedding_batch(TEXTS), unit(asymmetric.encode_document(TEXTS))) <= ATOL
    with pytest.raises(ValueError, match="templat"):
        TokenPrependingEmbedding(str(asymmetric_model_dir), templat="prompteol")


def test_vector_store_index_retrieves_the_matching_document(saved_model_dir):
    """In an in-memory VectorStoreIndex, a query identical to a document retrieves that document first."""
    embedding = TokenPrependingEmbedding(str(saved_model_dir), device="cpu")
    texts = [*TEXTS, "Two men are playing chess.", "A child is riding a horse."]
    index = VectorStoreIndex([TextNode(text=text, id_=str(i)) for i, text in enumerate(texts)], embed_model=embedding)
    retriever = index.as_retriever(similarity_top_k=2)
    for i, text in enumerate(texts):
        results = retriever.retrieve(text)
        assert results[0].node.node_id == str(i)
        assert results[0].score == pytest.approx(1.0, abs=1e-4)
    documents = VectorStoreIndex.from_documents([Document(text=t) for t in texts], embed_model=embedding)
    assert documents.as_retriever(similarity_top_k=1).retrieve(texts[3])[0].node.get_content() == texts[3]


def test_docs_example_vector_store_index(saved_model_dir, substitutions):
    """The docs' LlamaIndex example runs offline (no LLM, no OpenAI) and retrieves one of its documents."""
    namespace = run_example("llamaindex", substitutions(saved_model_dir))
    best = namespace["best"]
    assert best.node.get_content() in [document.text for document in namespace["documents"]]
    assert -1.0 <= best.score <= 1.0


@requires_smollm2
@pytest.mark.real_model
def test_docs_example_retrieves_the_right_topic_with_smollm2():
    """With the real SmolLM2 (PromptEOL + TP), every question retrieves the document of its topic."""
    namespace = run_example("llamaindex", {"tp-smollm2": "smollm2"})
    assert namespace["best"].node.get_content().startswith("The Eiffel Tower")
    retriever = namespace["retriever"]
    for question, answer in REAL_QUESTIONS.items():
        assert retriever.retrieve(question)[0].node.get_content().startswith(answer), question


def test_docs_example_stock_huggingface_embedding(asymmetric_model_dir, asymmetric, substitutions):
    """The stock HuggingFaceEmbedding loads a saved TP model: normalised encode() vectors (main template)."""
    pytest.importorskip("llama_index.embeddings.huggingface")
    namespace = run_example("llamaindex-stock", substitutions(asymmetric_model_dir))
    texts = TEXTS[:2]
    assert max_diff(namespace["stock_text_vectors"], unit(asymmetric.encode_document(texts))) <= ATOL
    query = "Who is making music?"
    assert max_diff(namespace["stock_query_vector"], unit(asymmetric.encode(query))) <= ATOL
    assert namespace["stock"]._model.prompts["query"] == ""


def test_stock_huggingface_embedding_with_the_query_template(asymmetric_model_dir, asymmetric):
    """query_instruction=<query template> makes the stock class give encode_query's vectors."""
    HuggingFaceEmbedding = pytest.importorskip("llama_index.embeddings.huggingface").HuggingFaceEmbedding

    stock = HuggingFaceEmbedding(
        model_name=str(asymmetric_model_dir), trust_remote_code=True, device="cpu", query_instruction=QUERY_TEMPLATE
    )
    query = np.array(stock.get_query_embedding(TEXTS[0]))
    assert max_diff(query, unit(asymmetric.encode_query(TEXTS[0]))) <= ATOL


def test_readme_example(saved_model_dir, substitutions):
    """The README's LlamaIndex example builds an index and retrieves one of its documents."""
    namespace = run_example("readme-llamaindex", substitutions(saved_model_dir))
    assert namespace["best"].node.get_content() in {
        "The Eiffel Tower is in Paris.",
        "Bread needs flour, water and yeast.",
    }


def test_model_name_loads_that_model(asymmetric_model_dir, asymmetric):
    """model_name=PATH (HuggingFaceEmbedding's spelling) loads and reports that model, not the default SmolLM2."""
    embedding = TokenPrependingEmbedding(model_name=str(asymmetric_model_dir), device="cpu")
    assert embedding.model_name == embedding.model_name_or_path == str(asymmetric_model_dir)
    assert embedding.client.get_embedding_dimension() == 32
    assert max_diff(embedding.get_query_embedding(TEXTS[0]), unit(asymmetric.encode_query(TEXTS[0]))) <= ATOL
    assert max_diff(embedding.get_text_embedding_batch(TEXTS), unit(asymmetric.encode_document(TEXTS))) <= ATOL
    with pytest.raises(ValueError, match="disagree"):
        TokenPrependingEmbedding("smollm2", model_name=str(asymmetric_model_dir))


def test_huggingface_embedding_arguments_have_the_stock_meaning(saved_model_dir, tmp_path):
    """model_name, max_length, query_instruction, text_instruction, normalize, embed_batch_size, cache_folder,
    trust_remote_code, device, show_progress_bar and model_kwargs give the stock HuggingFaceEmbedding's vectors."""
    HuggingFaceEmbedding = pytest.importorskip("llama_index.embeddings.huggingface").HuggingFaceEmbedding

    arguments = dict(
        model_name=str(saved_model_dir),
        max_length=40,
        query_instruction="Represent the question : ",
        text_instruction="Represent the passage : ",
        normalize=False,
        embed_batch_size=2,
        cache_folder=str(tmp_path / "cache"),
        trust_remote_code=True,
        device="cpu",
        show_progress_bar=False,
        model_kwargs={"dtype": torch.bfloat16},
    )
    stock = HuggingFaceEmbedding(**arguments)
    ours = TokenPrependingEmbedding(**arguments)
    assert ours.client.max_seq_length == stock._model.max_seq_length == 40
    assert ours.client[0].model.dtype == stock._model[0].model.dtype == torch.bfloat16
    texts = [*TEXTS, " ".join(["word"] * 80)]  # the last one is truncated to max_length
    assert max_diff(ours.get_text_embedding_batch(texts), stock.get_text_embedding_batch(texts)) <= ATOL
    assert max_diff(ours.get_query_embedding(texts[0]), stock.get_query_embedding(texts[0])) <= ATOL
    plain = TokenPrependingEmbedding(str(saved_model_dir), device="cpu", normalize=False)
    assert max_diff(ours.get_query_embedding(texts[0]), plain.get_query_embedding(texts[0])) > 1e-3
    assert ours.max_seq_length == 40 and ours.embed_batch_size == 2


def test_unsupported_huggingface_embedding_arguments_are_refused(saved_model_dir):
    """parallel_process / target_devices, two disagreeing lengths and unknown arguments fail with a clear error."""
    path = str(saved_model_dir)
    with pytest.raises(ValueError, match="parallel_process / target_devices are not supported"):
        TokenPrependingEmbedding(path, parallel_process=True)
    with pytest.raises(ValueError, match="disagree"):
        TokenPrependingEmbedding(path, max_length=16, max_seq_length=32)
    with pytest.raises(ValueError, match="pooling"):
        TokenPrependingEmbedding(path, pooling="mean")


def test_hub_id_brings_its_saved_settings(hub_repo, asymmetric_model_dir, saved_model_dir):
    """A hub id (simulated offline HF cache) gives the local folder's vectors; revision= picks that snapshot; the
    token is used but never stored in the serialized fields."""
    local = TokenPrependingEmbedding(str(asymmetric_model_dir), device="cpu")
    hub = TokenPrependingEmbedding(model_name=hub_repo, device="cpu", token="hf_secret")
    assert hub.model_name == hub_repo
    assert max_diff(hub.get_query_embedding(TEXTS[0]), local.get_query_embedding(TEXTS[0])) <= ATOL
    assert max_diff(hub.get_text_embedding_batch(TEXTS), local.get_text_embedding_batch(TEXTS)) <= ATOL
    assert "hf_secret" not in hub.to_json() and "hf_secret" not in repr(hub.model_spec("hf_secret"))
    tagged = TokenPrependingEmbedding(hub_repo, revision="v1", device="cpu")
    symmetric = load_model(str(saved_model_dir), device="cpu")
    assert max_diff(tagged.get_query_embedding(TEXTS[0]), unit(symmetric.encode_query(TEXTS[0]))) <= ATOL
