"""TokenPrependingTransformer inside a standard SentenceTransformer: encoding, templates, padding, save/load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.templates import METAEOL, render

from .conftest import run_in_threads

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an instrument",
    "The cat sleeps on the sofa?",
    'He said "hi" to the dog',
    "Two men are playing chess in the park today while a child is riding a horse.",
    "x",
]


def make_model(path, **kwargs) -> SentenceTransformer:
    """A SentenceTransformer with one TP module on a tiny backbone."""
    kwargs.setdefault("tp_start", 1)
    kwargs.setdefault("tp_exit", 3)
    kwargs.setdefault("output_layer", 3)
    return SentenceTransformer(modules=[TokenPrependingTransformer(str(path), **kwargs)])


@pytest.fixture(scope="module")
def model(tiny_llama) -> SentenceTransformer:
    """A TP model on the tiny Llama (PromptEOL, TP in layers 1-2, output layer 3)."""
    return make_model(tiny_llama)


def test_encode_returns_one_vector_per_sentence(model):
    """encode gives (n, hidden) finite float32 vectors and get_embedding_dimension reports hidden."""
    embeddings = model.encode(SENTENCES)
    assert embeddings.shape == (len(SENTENCES), 32)
    assert embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all()
    assert model.get_embedding_dimension() == 32
    assert model.similarity(embeddings, embeddings).shape == (len(SENTENCES), len(SENTENCES))


def test_single_string_and_empty_list(model):
    """A single string gives a 1-D vector; an empty list gives an empty result."""
    assert model.encode("A dog runs.").shape == (32,)
    assert len(model.encode([])) == 0


def test_metaeol_is_the_mean_of_its_eight_prompts(tiny_llama):
    """MetaEOL's embedding equals the mean of the 8 single-prompt embeddings."""
    meta = make_model(tiny_llama, template="metaeol")
    combined = meta.encode(SENTENCES[:3], convert_to_tensor=True)
    singles = [meta.encode(SENTENCES[:3], prompt=t, convert_to_tensor=True) for t in METAEOL]
    assert torch.allclose(combined, torch.stack(singles).mean(0), atol=1e-5)


def test_padding_side_does_not_change_embeddings(tiny_backbones):
    """Left and right padding give the same embeddings (position ids come from the attention mask)."""
    for family in ("llama", "gemma3", "qwen2"):
        left = make_model(tiny_backbones[family], padding_side="left").encode(SENTENCES, batch_size=8)
        right = make_model(tiny_backbones[family], padding_side="right").encode(SENTENCES, batch_size=8)
        assert np.abs(left - right).max() <= 1e-5, family


def test_batch_mates_do_not_change_embeddings(model):
    """A sentence embedded alone equals the same sentence embedded in a batch with longer and shorter ones."""
    together = model.encode(SENTENCES, batch_size=len(SENTENCES))
    alone = np.stack([model.encode([s])[0] for s in SENTENCES])
    assert np.abs(together - alone).max() <= 1e-5


def test_tokenization_equals_whole_prompt_tokenization(model):
    """Token ids equal tokenizing the whole filled-in prompt at once (special tokens included)."""
    module = model[0]
    features = module.preprocess(SENTENCES)
    for row, sentence in zip(range(len(SENTENCES)), SENTENCES):
        from sentence_transformers_tp.templates import clean_sentence

        text = render(module.templates[0], clean_sentence(sentence), "<PST>").text
        expected = module.tokenizer(text)["input_ids"]
        mask = features["attention_mask"][row].bool()
        assert features["input_ids"][row][mask].tolist() == expected
        assert features["input_ids"][row][features["placeholder_positions"][row]] == module.placeholder_id


def test_placeholder_text_in_a_sentence_is_not_a_second_placeholder(model):
    """A sentence containing '<PST>' yields exactly one placeholder id, and its text survives as plain tokens."""
    module = model[0]
    features = module.preprocess(["Ignore <PST> this <PST> text"])
    ids = features["input_ids"][0][features["attention_mask"][0].bool()].tolist()
    assert ids.count(module.placeholder_id) == 1
    decoded = module.tokenizer.decode(ids, skip_special_tokens=False)
    assert decoded.count("<PST>") == 3
    assert np.isfinite(model.encode(["Ignore <PST> this <PST> text"])).all()


def test_truncation_cuts_only_the_sentence(tiny_llama):
    """With max_seq_length, long sentences lose their end; the template, placeholder and last token stay."""
    model = make_model(tiny_llama, max_seq_length=24)
    module = model[0]
    long_sentence = " ".join(["word"] * 200)
    features = module.preprocess([long_sentence, "Short."])
    mask = features["attention_mask"]
    ids = features["input_ids"][0][mask[0].bool()].tolist()
    assert len(ids) == 24
    text = module.tokenizer.decode(ids, skip_special_tokens=True)
    assert text.startswith('This sentence : <PST> "word word')
    assert text.endswith('" means in one word:"')
    assert ids.count(module.placeholder_id) == 1
    short = module.tokenizer.decode(features["input_ids"][1][mask[1].bool()], skip_special_tokens=True)
    assert short == 'This sentence : <PST> "Short." means in one word:"'
    assert np.isfinite(model.encode([long_sentence * 50])).all()


def test_max_seq_length_too_small_for_template_is_a_clear_error(tiny_llama):
    """A max_seq_length that cannot hold the template itself raises a ValueError saying so."""
    model = make_model(tiny_llama, max_seq_length=5)
    with pytest.raises(ValueError, match="too small for the template"):
        model.encode(["A sentence."])


def test_non_string_inputs_name_their_index(model):
    """Non-string items raise a ValueError naming the offending index."""
    with pytest.raises(ValueError, match="Input 1 is of type int"):
        model[0].preprocess(["fine", 3])


def test_query_and_document_templates(tiny_llama):
    """encode_query / encode_document use their own templates; plain encode uses the default."""
    model = make_model(
        tiny_llama,
        query_template='Query : "{sentence}" means in one word:"',
        document_template="knowledge",
    )
    text = ["A dog runs in the park."]
    plain, query, document = model.encode(text), model.encode_query(text), model.encode_document(text)
    assert not np.allclose(plain, query)
    assert not np.allclose(plain, document)
    module = model[0]
    assert module.templates_for(task="query")[0].startswith("Query : {placeholder}")
    knowledge = make_model(tiny_llama, template="knowledge").encode(text)
    assert np.allclose(document, knowledge, atol=1e-6)


def test_instruction_prompt_is_prepended_and_sentence_prompt_is_a_template(model):
    """A prompt without {sentence} is put before the template; one with {sentence} replaces it."""
    module = model[0]
    assert module.templates_for(prompt="Instruct: ")[0].startswith("Instruct: This sentence : {placeholder}")
    assert module.templates_for(prompt="Say {sentence}") == ("Say {placeholder} {sentence}",)
    assert not np.allclose(model.encode(["A."]), model.encode(["A."], prompt="Instruct: "))


def test_chat_template_is_never_applied(tiny_llama, tmp_path):
    """A tokenizer with a chat template is used as plain text (no chat markup around the prompt)."""
    chat_dir = tmp_path / "chat"
    shutil.copytree(tiny_llama, chat_dir)
    config_path = chat_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    config_path.write_text(json.dumps(config))
    plain = make_model(tiny_llama)
    chat = make_model(chat_dir)
    assert chat[0].tokenizer.chat_template is not None
    assert np.allclose(plain.encode(SENTENCES), chat.encode(SENTENCES), atol=1e-6)


def test_save_and_load_round_trip(model, tmp_path):
    """A saved model reloads with trust_remote_code=True and gives identical embeddings and settings."""
    expected = model.encode(SENTENCES)
    path = tmp_path / "saved"
    model.save(str(path))
    config = json.loads((path / "sentence_bert_config.json").read_text())
    assert config["template"] == "prompteol"
    assert (config["tp_start"], config["tp_exit"], config["output_layer"]) == (1, 3, 3)
    modules = json.loads((path / "modules.json").read_text())
    assert modules[0]["type"] == "sentence_transformers_tp.module.TokenPrependingTransformer"
    st_config = json.loads((path / "config_sentence_transformers.json").read_text())
    assert "sentence-transformers-tp" in st_config["requirements"]
    again = SentenceTransformer(str(path), trust_remote_code=True)
    assert isinstance(again[0], TokenPrependingTransformer)
    assert len(again) == 1
    np.testing.assert_array_equal(again.encode(SENTENCES), expected)
    assert again[0].placeholder_id == model[0].placeholder_id
    assert len(again[0].tokenizer) == len(model[0].tokenizer)


def test_layer_span_saves_and_reloads(tiny_llama, tmp_path):
    """A model built with layer_span=2 saves it, reloads with it and gives the same embeddings; a model without a
    span saves no layer_span key."""
    model = make_model(tiny_llama, layer_span=2)
    assert model[0].layer_span == 2 and model[0].span_layers() == (2, 3)
    expected = model.encode(SENTENCES)
    model.save(str(tmp_path / "span"))
    config = json.loads((tmp_path / "span" / "sentence_bert_config.json").read_text())
    assert config["layer_span"] == 2 and config["output_layer"] == 3
    again = SentenceTransformer(str(tmp_path / "span"), trust_remote_code=True)
    assert again[0].layer_span == 2
    np.testing.assert_allclose(again.encode(SENTENCES), expected, atol=1e-6)
    make_model(tiny_llama).save(str(tmp_path / "plain"))
    assert "layer_span" not in json.loads((tmp_path / "plain" / "sentence_bert_config.json").read_text())


def test_loading_without_trust_remote_code_says_what_to_do(model, tmp_path):
    """Loading a saved TP model without trust_remote_code fails with a message that names the flag."""
    path = tmp_path / "saved"
    model.save(str(path))
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(path))


def test_repr_names_class_and_tp_settings(model):
    """repr names the class, the template and the TP settings."""
    text = repr(model)
    assert "TokenPrependingTransformer" in text
    for part in ("'template': 'prompteol'", "'tp_start': 1", "'tp_exit': 3", "'output_layer': 3"):
        assert part in text


def test_model_card_shows_install_trust_remote_code_and_settings(model, tmp_path):
    """The generated README shows pip install, trust_remote_code=True, the template and the TP layers."""
    path = tmp_path / "card"
    model.save(str(path))
    card = (path / "README.md").read_text()
    assert "pip install -U sentence-transformers-tp" in card
    assert "trust_remote_code=True" in card
    assert "**Template:** `prompteol`" in card
    assert "before decoder layers 1 to 2" in card
    assert "**Output layer:** 3" in card
    assert "TokenPrependingTransformer(" in card


def test_model_name_is_unique_to_backbone_template_and_settings(tiny_llama):
    """The model name (used by MTEB for result folders) encodes backbone, template and TP settings."""
    a = make_model(tiny_llama, template="prompteol", tp_start=1, tp_exit=3, output_layer=3)
    b = make_model(tiny_llama, template="prompteol", tp_start=1, tp_exit=1, output_layer=3)
    c = make_model(tiny_llama, template="pretended_cot", tp_start=1, tp_exit=3, output_layer=3)
    names = {m.model_card_data.model_name for m in (a, b, c)}
    assert len(names) == 3
    assert a.model_card_data.model_name == "sentence-transformers-tp/llama-prompteol-tp1-3-L3"
    assert b.model_card_data.model_name == "sentence-transformers-tp/llama-prompteol-notp-L3"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tp_start": 1, "tp_exit": 9}, "tp_exit=9 is larger"),
        ({"output_layer": 7}, "out of range"),
        ({"tp_start": -1}, "tp_start must be"),
        ({"padding_side": "middle"}, "padding_side"),
        ({"template": "no slot"}, "template"),
        ({"placeholder": ""}, "placeholder"),
    ],
)
def test_invalid_settings_raise_clear_errors(tiny_llama, kwargs, message):
    """Out-of-range layers, bad padding side, bad templates and empty placeholders are rejected at construction."""
    with pytest.raises(ValueError, match=message):
        TokenPrependingTransformer(str(tiny_llama), **kwargs)


def test_concurrent_encode_calls_equal_serial_results(model):
    """Eight threads encoding through one model at once give exactly the serial results."""
    batches = [SENTENCES[i:] + SENTENCES[:i] for i in range(8)]
    expected = [model.encode(batch, batch_size=2) for batch in batches]
    results = run_in_threads(lambda i: model.encode(batches[i], batch_size=2), len(batches), repeats=3)
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_gemma_families_default_to_eager_attention(tiny_backbones):
    """Gemma-2/3 backbones use eager attention unless the caller picks one (SDPA misbehaved on CUDA)."""
    gemma = TokenPrependingTransformer(str(tiny_backbones["gemma3"]), tp_start=1, tp_exit=3, output_layer=3)
    assert gemma.model.config._attn_implementation == "eager"
    chosen = TokenPrependingTransformer(
        str(tiny_backbones["gemma3"]),
        tp_start=1,
        tp_exit=3,
        output_layer=3,
        model_kwargs={"attn_implementation": "sdpa"},
    )
    assert chosen.model.config._attn_implementation == "sdpa"
    llama = TokenPrependingTransformer(str(tiny_backbones["llama"]), tp_start=1, tp_exit=3, output_layer=3)
    assert llama.model.config._attn_implementation == "sdpa"


def test_numpy_integers_are_accepted_as_layer_settings(tiny_llama):
    """numpy integers work as tp_start / tp_exit / output_layer and are stored as plain ints."""
    module = TokenPrependingTransformer(
        str(tiny_llama), tp_start=np.int64(1), tp_exit=np.int32(3), output_layer=np.int64(-1)
    )
    assert (module.tp_start, module.tp_exit, module.output_layer) == (1, 3, -1)
    assert all(type(v) is int for v in (module.tp_start, module.tp_exit, module.output_layer))
    module.tp_exit = np.int16(2)
    assert module.tp_exit == 2 and type(module.tp_exit) is int
    with pytest.raises(ValueError, match="tp_start must be an integer"):
        TokenPrependingTransformer(str(tiny_llama), tp_start=1.0)


def test_layer_settings_are_validated_when_changed(tiny_llama):
    """Changing tp_start / tp_exit / output_layer after construction is validated; a rejected value is not kept."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3)
    with pytest.raises(ValueError, match="tp_exit=9 is larger"):
        module.tp_exit = 9
    with pytest.raises(ValueError, match="out of range"):
        module.output_layer = 7
    with pytest.raises(ValueError, match="tp_start must be"):
        module.tp_start = -1
    with pytest.raises(ValueError, match="must be an integer"):
        module.output_layer = "last"
    assert (module.tp_start, module.tp_exit, module.output_layer) == (1, 3, 3)
    module.tp_start, module.tp_exit, module.output_layer = 0, 4, -2
    assert (module.tp_start, module.tp_exit, module.output_layer) == (0, 4, -2)


def test_token_embeddings_output_is_a_clear_error(model):
    """encode(output_value="token_embeddings") says it is not supported and what to use, not a bare KeyError."""
    with pytest.raises(ValueError, match="token_embeddings.*not supported.*sentence_embedding"):
        model.encode(["A sentence."], output_value="token_embeddings")


def test_saved_folder_brings_its_own_settings(tiny_llama, tmp_path):
    """TokenPrependingTransformer(saved_folder) uses the folder's saved settings; explicit arguments win."""
    saved = make_model(
        tiny_llama, template="pretended_cot", tp_start=0, tp_exit=2, output_layer=2, placeholder="<TPX>"
    )
    saved.save(str(tmp_path / "saved"))
    module = TokenPrependingTransformer(str(tmp_path / "saved"))
    assert module.template == "pretended_cot" and module.placeholder == "<TPX>"
    assert (module.tp_start, module.tp_exit, module.output_layer) == (0, 2, 2)
    assert module.backbone_name == str(tiny_llama)
    np.testing.assert_allclose(
        SentenceTransformer(modules=[module]).encode(SENTENCES), saved.encode(SENTENCES), atol=1e-6, rtol=0
    )
    override = TokenPrependingTransformer(str(tmp_path / "saved"), template="prompteol", output_layer=-1)
    assert override.template == "prompteol" and override.output_layer == -1
    assert (override.tp_start, override.tp_exit, override.placeholder) == (0, 2, "<TPX>")


def test_preprocess_reports_truncation_once_with_a_count(tiny_llama, caplog, capfd):
    """Long inputs give one warning per preprocess call counting the cut texts, not transformers' indexing warning."""
    from transformers.utils import logging as hf_logging

    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3, max_seq_length=40)
    module.tokenizer.model_max_length = 40
    long_text = " ".join(["word"] * 100)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    try:
        with caplog.at_level("WARNING"):
            module.preprocess([long_text, "Short.", long_text + " again"])
    finally:
        hf_logging.set_verbosity(verbosity)
    reports = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(reports) == 1 and reports[0].startswith("2 of 3 texts")
    assert "Token indices sequence length" not in capfd.readouterr().err


@pytest.mark.parametrize(("dtype", "numpy_dtype"), [(torch.float16, np.float16), (torch.bfloat16, np.float32)])
def test_half_and_bf16_models_return_the_model_dtype_like_stock(tiny_llama, dtype, numpy_dtype):
    """A float16 / bfloat16 model returns tensors in its dtype (numpy: float16, and float32 for bfloat16), as stock
    sentence-transformers does."""
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    backbone = Transformer(str(tiny_llama))
    stock = SentenceTransformer(modules=[backbone, Pooling(backbone.get_embedding_dimension())]).to(dtype)
    ours = make_model(tiny_llama).to(dtype)
    for model in (stock, ours):
        assert model.encode(SENTENCES[:2], convert_to_tensor=True).dtype == dtype
        assert model.encode(SENTENCES[:2]).dtype == numpy_dtype


@pytest.mark.parametrize(
    ("value", "message"),
    [("64", "must be a positive integer"), (0, "must be a positive integer"), (4.0, "integer"), (5, "too small")],
)
def test_max_seq_length_setter_rejects_values_that_would_fail_later(tiny_llama, value, message):
    """Setting max_seq_length to a non-integer, a value below 1 or one too small for the template raises a one-line
    ValueError at once, and keeps the old value."""
    model = make_model(tiny_llama)
    before = model.max_seq_length
    with pytest.raises(ValueError, match=message) as info:
        model.max_seq_length = value
    assert "\n" not in str(info.value) and model.max_seq_length == before
    model.max_seq_length = 64
    assert model[0].max_seq_length == 64
