"""The PromptReps sparse channel: token restriction, log1p-relu weights, top-k, one forward, tied / untied heads,
SparseEncoder save / load and API, MTEB."""

from __future__ import annotations

import pytest
import torch

# The stopword list of the token restriction comes from bm25s (the hybrid extra).
pytest.importorskip("bm25s")

from sentence_transformers_tp.lm_head import MissingLMHeadError, read_lm_head
from sentence_transformers_tp.sparse import (
    PromptRepsSparse,
    PromptRepsTransformer,
    build_sparse_model,
    encode_dense_and_sparse,
    sparse_head,
    sparse_to_dicts,
)
from sentence_transformers_tp.word_ids import WordTokenIds, english_stopwords, text_words

from .conftest import build_backbone, build_tokenizer

TEXTS = [
    "A man is playing a guitar.",
    "The cat sleeps on the sofa!",
    "Two men are playing chess, and a child is riding a horse.",
    "A woman is slicing an onion.",
]


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """Tiny random checkpoints: Llama (untied LM head, saved in the checkpoint) and Gemma-3 (tied)."""
    root = tmp_path_factory.mktemp("sparse-backbones")
    return {family: build_backbone(root / family, family) for family in ("llama", "gemma3")}


@pytest.fixture(scope="module")
def sparse_models(backbones):
    """A sparse model per backbone, vanilla PromptEOL (TP off) at the last layer, prefix cache off."""
    return {
        family: build_sparse_model(
            str(path), "prompteol", tp_start=1, tp_exit=1, output_layer=-1, prefix_cache=False, device="cpu"
        )
        for family, path in backbones.items()
    }


def _count_forwards(module):
    calls = []
    handle = module.model.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


# ---------------------------------------------------------------------------------------------- token restriction


def test_text_words_lowercases_and_drops_stopwords_and_punctuation():
    """Words are lower-cased runs of letters and digits; NLTK English stopwords and punctuation are dropped."""
    assert text_words("The COVID-19 vaccine, and ITS effects!!  Vaccine?") == ["covid", "19", "vaccine", "effects"]
    assert text_words("...;;!") == [] and text_words("") == []
    assert len(english_stopwords()) == 179 and {"the", "and", "its", "wouldn't"} <= english_stopwords()


def test_word_ids_keep_both_spellings_of_byte_level_bpe():
    """Each word contributes its ids tokenized WITHOUT and WITH a leading space (two spellings in byte-level BPE)."""
    tokenizer = build_tokenizer()
    table = WordTokenIds(tokenizer)
    bare = tokenizer("guitar", add_special_tokens=False)["input_ids"]
    spaced = tokenizer(" guitar", add_special_tokens=False)["input_ids"]
    assert set(bare) != set(spaced)
    ids = table.text_ids("A GUITAR.")
    assert set(bare) | {i for i in spaced if tokenizer.decode([i]).strip()} == set(ids)
    assert len(ids) == len(set(ids))


def test_word_ids_exclude_specials_spaces_placeholder_and_stopwords():
    """No kept id is a special token, an excluded id (the placeholder), a lone space marker or a stopword's."""
    tokenizer = build_tokenizer()
    tokenizer.add_tokens(["<PST>"])
    placeholder = tokenizer.convert_tokens_to_ids("<PST>")
    table = WordTokenIds(tokenizer, exclude=[placeholder])
    ids = table.text_ids("<PST> the onion <s> </s>")
    assert placeholder not in ids and not set(ids) & set(tokenizer.all_special_ids)
    assert all(any(char.isalnum() for char in tokenizer.decode([i])) for i in ids)
    assert table.text_ids("the and of") == []
    assert set(table.text_ids("the onion")) == set(table.text_ids("onion"))


def test_padded_word_ids():
    """``padded`` gives one row per text, padded with -1."""
    table = WordTokenIds(build_tokenizer())
    padded = table.padded(["onion", "", "a dog runs in the park"])
    assert padded.shape[0] == 3 and padded.dtype == torch.long
    assert (padded[1] == -1).all()
    assert sorted(padded[0][padded[0] >= 0].tolist()) == sorted(table.text_ids("onion"))


# ---------------------------------------------------------------------------------------------- weights and top-k


def test_sparse_values_are_log1p_relu_of_the_lm_head_logits_at_the_last_position(backbones, sparse_models):
    """The sparse vector holds log(1 + relu(logits)) of the causal LM's next-token logits at the last prompt
    position, at the text's word ids only, the top-k largest of them."""
    from transformers import AutoModelForCausalLM

    model = sparse_models["llama"]
    module = model[0]
    causal = AutoModelForCausalLM.from_pretrained(str(backbones["llama"])).eval()
    features = module.preprocess([TEXTS[2]], task="query")
    with torch.no_grad():
        logits = causal(input_ids=features["input_ids"], attention_mask=features["attention_mask"]).logits[0, -1]
    expected = torch.log1p(torch.relu(logits))
    vector = model.encode_query([TEXTS[2]], convert_to_sparse_tensor=False)[0]
    allowed = torch.tensor(word_ids := WordTokenIds(module.tokenizer, [module.placeholder_id]).text_ids(TEXTS[2]))
    assert len(word_ids) > 0
    nonzero = vector.nonzero().squeeze(1)
    assert set(nonzero.tolist()) <= set(word_ids)
    torch.testing.assert_close(vector[nonzero], expected[nonzero], rtol=1e-4, atol=1e-5)
    top = expected[allowed].topk(min(128, len(word_ids))).indices
    assert set(nonzero.tolist()) == {int(allowed[i]) for i in top if expected[allowed[i]] > 0}


def test_top_k_keeps_the_largest_word_weights(sparse_models):
    """``top_k`` caps the entries per vector and keeps the largest ones of the full restricted vector."""
    model = sparse_models["gemma3"]
    full = model.encode_document(TEXTS, convert_to_sparse_tensor=False)
    _, three = encode_dense_and_sparse(model, TEXTS, top_k=3)
    for row, dense_row in zip(sparse_to_dicts(three), full):
        assert 0 < len(row) <= 3
        assert sorted(row) == sorted(dense_row.topk(len(row)).indices.tolist())
    assert PromptRepsSparse(10, 4, top_k=5).top_k == 5
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        PromptRepsSparse(10, 4, top_k=0)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        build_sparse_model("unused", top_k=-1)


def test_text_without_words_falls_back_to_the_vocabulary_top_10(sparse_models):
    """A text with no usable word (empty, stopwords, punctuation) keeps the 10 largest weights of the vocabulary."""
    model = sparse_models["llama"]
    vectors = model.encode_document(["", "the of and", "?!"], convert_to_sparse_tensor=False)
    weights = sparse_head(model).weights(encode_final_states(model, ["", "the of and", "?!"]))
    for vector, expected in zip(vectors, weights):
        assert 0 < int((vector > 0).sum()) <= 10
        assert set(vector.nonzero().squeeze(1).tolist()) == {
            i for i in expected.topk(10).indices.tolist() if expected[i] > 0
        }


def encode_final_states(model, texts):
    """The final-layer states of the sparse model's first module for ``texts`` (documents)."""
    features = model[0].preprocess(texts, task="document")
    with torch.inference_mode():
        return model[0](features)["final_layer_embedding"]


# ---------------------------------------------------------------------------------------------- one forward


def test_dense_and_sparse_come_from_one_forward(backbones, sparse_models):
    """encode_dense_and_sparse, SparseEncoder.encode and a dense model's encode each run the backbone once per batch."""
    from sentence_transformers import SentenceTransformer

    from sentence_transformers_tp.module import TokenPrependingTransformer

    sparse_model = sparse_models["llama"]
    dense_module = TokenPrependingTransformer(
        str(backbones["llama"]), "prompteol", tp_start=1, tp_exit=3, prefix_cache=False
    )
    dense_model = SentenceTransformer(modules=[dense_module], device="cpu")
    sparse_head(dense_model)  # built once (reads the checkpoint), outside the counted calls
    for model in (sparse_model, dense_model):
        calls, handle = _count_forwards(model[0])
        try:
            encode_dense_and_sparse(model, TEXTS, batch_size=8)
            assert len(calls) == 1
            model.encode_document(TEXTS, batch_size=8)
            assert len(calls) == 2
        finally:
            handle.remove()


def test_dense_and_sparse_match_the_dense_and_sparse_models(backbones):
    """The dense part equals the dense model's encode_query, the sparse part the sparse model's encode_query, with
    TP on and in input order (batches sorted by length inside)."""
    from sentence_transformers import SentenceTransformer

    from sentence_transformers_tp.module import TokenPrependingTransformer

    settings = dict(tp_start=1, tp_exit=3, output_layer=-2)
    dense_model = SentenceTransformer(
        modules=[TokenPrependingTransformer(str(backbones["llama"]), "prompteol", **settings)], device="cpu"
    )
    sparse_model = build_sparse_model(str(backbones["llama"]), "prompteol", device="cpu", **settings)
    texts = [*TEXTS, "onion", ""]
    for model in (dense_model, sparse_model):
        dense, sparse = encode_dense_and_sparse(model, texts, task="query", batch_size=3)
        assert dense.shape == (len(texts), 32) and sparse.shape == (len(texts), sparse_head(model).vocab_size)
        torch.testing.assert_close(torch.from_numpy(dense), dense_model.encode_query(texts, convert_to_tensor=True))
        torch.testing.assert_close(sparse.to_dense(), sparse_model.encode_query(texts).to_dense())


def test_dense_part_is_the_span_mean_and_sparse_keeps_the_final_layer(backbones):
    """With layer_span=2 the dense part equals the dense model's span-mean embedding and the sparse part is unchanged
    (it reads the final normed layer)."""
    from sentence_transformers import SentenceTransformer

    from sentence_transformers_tp.module import TokenPrependingTransformer

    settings = dict(tp_start=1, tp_exit=3, output_layer=-2, prefix_cache=False)
    dense_model = SentenceTransformer(
        modules=[TokenPrependingTransformer(str(backbones["llama"]), "prompteol", layer_span=2, **settings)],
        device="cpu",
    )
    plain = build_sparse_model(str(backbones["llama"]), "prompteol", device="cpu", **settings)
    spanned = build_sparse_model(str(backbones["llama"]), "prompteol", device="cpu", layer_span=2, **settings)
    dense, sparse = encode_dense_and_sparse(spanned, TEXTS, task="query", batch_size=3)
    torch.testing.assert_close(torch.from_numpy(dense), dense_model.encode_query(TEXTS, convert_to_tensor=True))
    _, sparse_plain = encode_dense_and_sparse(plain, TEXTS, task="query", batch_size=3)
    torch.testing.assert_close(sparse.to_dense(), sparse_plain.to_dense())


def test_encode_dense_and_sparse_applies_later_dense_modules(backbones):
    """Modules after the TP module of a dense model (here Normalize) apply to the dense part, as in encode."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize

    from sentence_transformers_tp.module import TokenPrependingTransformer

    module = TokenPrependingTransformer(str(backbones["gemma3"]), "prompteol")
    model = SentenceTransformer(modules=[module, Normalize()], device="cpu")
    dense, _ = encode_dense_and_sparse(model, TEXTS)
    torch.testing.assert_close(torch.from_numpy(dense), model.encode_document(TEXTS, convert_to_tensor=True))
    torch.testing.assert_close(torch.from_numpy(dense).norm(dim=1), torch.ones(len(TEXTS)))


def test_encode_dense_and_sparse_empty_and_bad_input(sparse_models):
    """No texts give empty results of the right widths; a non-TP model, a bare string or a bad batch size is a clear
    error."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize

    model = sparse_models["gemma3"]
    dense, sparse = encode_dense_and_sparse(model, [])
    assert dense.shape == (0, 32) and sparse.shape == (0, 401) and sparse._nnz() == 0
    with pytest.raises(ValueError, match="first module is a TokenPrependingTransformer"):
        encode_dense_and_sparse(SentenceTransformer(modules=[Normalize()]), TEXTS)
    with pytest.raises(ValueError, match="not one string"):
        encode_dense_and_sparse(model, "one text")
    with pytest.raises(ValueError, match="Input 1 is of type int"):
        encode_dense_and_sparse(model, ["a", 3])
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        encode_dense_and_sparse(model, TEXTS, batch_size=0)


def test_sparse_to_dicts():
    """Rows become {token_id: weight} dicts of their non-zero entries."""
    sparse = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.5, 0.0, 0.5]]).to_sparse()
    assert sparse_to_dicts(sparse) == [{1: 2.0}, {}, {0: 1.5, 2: 0.5}]
    assert sparse_to_dicts(torch.tensor([[0.0, 1.0]])) == [{1: 1.0}]


# ---------------------------------------------------------------------------------------------- LM head


def test_tied_head_uses_the_input_embeddings(sparse_models):
    """A tied backbone (Gemma-3) uses its input embedding matrix itself; the head holds no weight of its own."""
    model = sparse_models["gemma3"]
    head = model[1]
    assert head.tied and not list(head.parameters())
    assert head.head_weight() is model[0].model.get_input_embeddings().weight


def test_untied_head_is_read_from_the_checkpoint(backbones, sparse_models):
    """An untied backbone (Llama) gets the checkpoint's lm_head.weight; the placeholder's extra row is zero."""
    head = sparse_models["llama"][1]
    weight = read_lm_head(backbones["llama"])
    assert not head.tied and head.weight.shape == (weight.shape[0] + 1, weight.shape[1])
    torch.testing.assert_close(head.weight[: weight.shape[0]], weight)
    assert not head.weight[weight.shape[0] :].any()
    assert not torch.equal(
        head.weight[: weight.shape[0]], sparse_models["llama"][0].model.get_input_embeddings().weight[:-1]
    )


def test_untied_checkpoint_without_lm_head_is_a_clear_error(tmp_path):
    """An untied backbone saved without its head (AutoModel) cannot give sparse vectors: a clear error."""
    from transformers import AutoModel

    source = build_backbone(tmp_path / "full", "llama")
    AutoModel.from_pretrained(str(source)).save_pretrained(tmp_path / "base")
    build_tokenizer().save_pretrained(tmp_path / "base")
    with pytest.raises(MissingLMHeadError, match="does not tie its LM head"):
        build_sparse_model(str(tmp_path / "base"), "prompteol")


def test_unattached_tied_head_is_a_clear_error():
    """A tied head used outside a model (not attached to a backbone) says how to attach it."""
    with pytest.raises(RuntimeError, match="not attached to a backbone"):
        PromptRepsSparse(10, 4, tied=True).head_weight()
    with pytest.raises(ValueError, match="needs the features of a PromptRepsTransformer"):
        PromptRepsSparse(10, 4, tied=True)({"sentence_embedding": torch.zeros(1, 4)})


# ---------------------------------------------------------------------------------------------- SparseEncoder


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_sparse_encoder_save_and_load_with_trust_remote_code(sparse_models, family, tmp_path):
    """A saved sparse model loads with SparseEncoder(path, trust_remote_code=True) and encodes identically;
    only an untied head writes its weight."""
    from sentence_transformers import SparseEncoder

    model = sparse_models[family]
    model.save(str(tmp_path / "model"))
    loaded = SparseEncoder(str(tmp_path / "model"), trust_remote_code=True, device="cpu")
    assert isinstance(loaded[0], PromptRepsTransformer) and isinstance(loaded[1], PromptRepsSparse)
    assert (tmp_path / "model" / "1_PromptRepsSparse" / "model.safetensors").exists() == (family == "llama")
    for encode in ("encode_query", "encode_document"):
        torch.testing.assert_close(
            getattr(loaded, encode)(TEXTS).to_dense(), getattr(model, encode)(TEXTS).to_dense(), rtol=1e-5, atol=1e-6
        )
    with pytest.raises(ValueError, match="trust_remote_code"):
        SparseEncoder(str(tmp_path / "model"), device="cpu")


def test_sparse_encoder_api(sparse_models):
    """encode_query / encode_document give sparse vocabulary-sized tensors; decode, sparsity and similarity (dot)
    work on them."""
    model = sparse_models["llama"]
    queries = model.encode_query(TEXTS[:2])
    documents = model.encode_document(TEXTS)
    assert queries.is_sparse and queries.shape == (2, model.get_embedding_dimension()) == (2, 401)
    decoded = model.decode(documents[3], top_k=3)
    words = set(text_words(TEXTS[3]))
    assert decoded and all(any(token.lstrip("Ġ").lower() in word for word in words) for token, _ in decoded)
    stats = model.sparsity(documents)
    assert 0 < stats["active_dims"] <= 128 and stats["sparsity_ratio"] > 0.5
    assert model.similarity_fn_name == "dot"
    torch.testing.assert_close(model.similarity(queries, documents), queries.to_dense() @ documents.to_dense().T)
    assert model.model_card_data.model_name.startswith("sentence-transformers-tp/")
    assert model.model_card_data.model_name.endswith("-promptreps")


def test_query_and_document_templates_apply_to_the_sparse_vector(backbones):
    """Per-task templates (the PromptReps Query / Passage wordings) reach the sparse vector: the two differ."""
    model = build_sparse_model(
        str(backbones["gemma3"]), "prompteol", query_template="retrieval_query", document_template="retrieval_document"
    )
    assert not torch.equal(model.encode_query(TEXTS).to_dense(), model.encode_document(TEXTS).to_dense())


def test_mteb_evaluates_it_as_a_sparse_model(sparse_models):
    """MTEB wraps it in its SparseEncoderWrapper (model type sparse) and scores the offline retrieval fixture."""
    import mteb
    from mteb.models import SparseEncoderWrapper

    from sentence_transformers_tp.evaluation.mteb_retrieval import local_retrieval_task

    from .evaluation.test_retrieval import BEIR

    model = sparse_models["gemma3"]
    wrapper = SparseEncoderWrapper(model)
    assert wrapper.mteb_model_meta.model_type == ["sparse"]
    assert wrapper.mteb_model_meta.name == model.model_card_data.model_name
    result = mteb.evaluate(
        model,
        [local_retrieval_task(BEIR, "train")],
        cache=None,
        show_progress_bar=False,
        encode_kwargs={"batch_size": 4},
    )
    assert result.model_name == model.model_card_data.model_name
    assert 0.0 <= result.task_results[0].scores["train"][0]["ndcg_at_10"] <= 1.0


def test_readme_sparse_example_runs(backbones, tmp_path, monkeypatch):
    """The README's sparse example runs on a tiny backbone; its saved model loads back as a SparseEncoder."""
    import re
    from pathlib import Path

    from sentence_transformers import SparseEncoder

    readme = Path(__file__).resolve().parents[1] / "README.md"
    match = re.search(
        r"<!-- example: readme-sparse -->\n```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S
    )
    assert match is not None
    monkeypatch.chdir(tmp_path)
    code = match.group(1).replace('"smollm2"', repr(str(backbones["gemma3"])))
    namespace: dict = {"__name__": "__main__"}
    exec(compile(code, str(readme), "exec"), namespace)
    assert namespace["scores"].shape == (1, 2)
    assert namespace["dense"].shape == (1, 32) and namespace["sparse"].shape == (1, 401)
    assert isinstance(SparseEncoder("smollm2-promptreps", trust_remote_code=True)[1], PromptRepsSparse)


def test_pickled_sparse_model_keeps_its_tied_head_on_its_own_backbone(sparse_models):
    """A pickled copy (as multi-process pools send it) encodes the same, its tied head on the copy's embeddings."""
    import pickle

    model = sparse_models["gemma3"]
    copy = pickle.loads(pickle.dumps(model))
    assert copy[1].head_weight() is copy[0].model.get_input_embeddings().weight
    assert copy[1].head_weight() is not model[1].head_weight()
    torch.testing.assert_close(copy.encode_document(TEXTS).to_dense(), model.encode_document(TEXTS).to_dense())


def test_saved_model_card_shows_trust_remote_code_usage(sparse_models, tmp_path):
    """The saved model card loads the model with trust_remote_code=True after installing the package, and keeps
    the sparse-encoder tags and the unique model name."""
    model = sparse_models["llama"]
    model.save(str(tmp_path / "model"))
    card = (tmp_path / "model" / "README.md").read_text(encoding="utf-8")
    assert "pip install -U sentence-transformers-tp" in card
    assert 'SparseEncoder("path/to/this-model", trust_remote_code=True)' in card
    assert "model.encode_query(" in card and "model.decode(" in card
    assert "sparse-encoder" in card and "promptreps" in card and "token-prepending" in card
    assert model.model_card_data.model_name.endswith("-promptreps")
