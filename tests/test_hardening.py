"""Hostile and odd input, failures mid-encode, loading broken models, numerics and memory."""

from __future__ import annotations

import gc
import json
import resource

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.factory import save_model
from sentence_transformers_tp.inputs import check_texts
from sentence_transformers_tp.prepending import active_hook_count

from .conftest import requires_smollm2

ODD_INPUTS = [
    "",
    "   ",
    "\n\t\r",
    "control \x00\x01\x1b[31m chars\x7f",
    "emoji 😀👍🏽 and ZWJ 👨‍👩‍👧",
    "mixed scripts: Ελληνικά, русский, العربية, 日本語, हिन्दी",
    'quotes "inside" and \'single\' and "unbalanced',
    'ends with a quote"',
    "contains the placeholder <PST> and {sentence} and {placeholder}",
    "<PST>",
    'means in one word:"',
]


@pytest.fixture(scope="module")
def model(tiny_llama) -> SentenceTransformer:
    """A tiny TP model with a small max_seq_length, so truncation is exercised."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3, max_seq_length=48)
    return SentenceTransformer(modules=[module])


def test_odd_strings_embed_to_finite_vectors_equal_to_one_by_one(model):
    """Empty, whitespace, control characters, emoji, mixed scripts, quotes and placeholder text all embed; the
    batch result equals the one-by-one result."""
    batch = model.encode(ODD_INPUTS, batch_size=len(ODD_INPUTS))
    single = np.stack([model.encode([text])[0] for text in ODD_INPUTS])
    assert np.isfinite(batch).all()
    np.testing.assert_allclose(batch, single, atol=1e-5, rtol=0)


def test_every_prompt_has_exactly_one_placeholder_and_keeps_the_template_end(model):
    """Each prompt has one placeholder id and ends with the template's last token, whatever the input."""
    module = model[0]
    features = module.preprocess(ODD_INPUTS)
    reference = module.preprocess(["plain"])
    last_id = int(reference["input_ids"][0, reference["last_positions"][0]])
    for row in range(len(ODD_INPUTS)):
        ids = features["input_ids"][row][features["attention_mask"][row].bool()].tolist()
        assert ids.count(module.placeholder_id) == 1
        assert ids[-1] == last_id


@pytest.mark.parametrize(
    ("bad", "index", "kind"),
    [
        (["fine", None], 1, "NoneType"),
        ([None], 0, "NoneType"),
        (["a", "b", 7], 2, "int"),
        (["a", b"bytes"], 1, "bytes"),
        (["a", ["nested"]], 1, "list"),
        ([3.5, "a"], 0, "float"),
    ],
)
def test_non_string_items_raise_naming_the_index(model, bad, index, kind):
    """None and non-string items raise a ValueError naming the type; check_texts names the index in the list."""
    with pytest.raises(ValueError, match=f"is of type {kind}"):
        model.encode(bad)
    with pytest.raises(ValueError, match=f"Input {index} is of type {kind}"):
        check_texts(bad)


def test_very_long_text_is_truncated_keeping_the_template(model):
    """A 100k-character text is truncated to max_seq_length; the template end is kept; no error."""
    text = "word " * 20_000
    features = model[0].preprocess([text])
    assert int(features["attention_mask"].sum()) == 48
    decoded = model[0].tokenizer.decode(features["input_ids"][0], skip_special_tokens=True)
    assert decoded.endswith('" means in one word:"')
    assert np.isfinite(model.encode([text])).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_property_arbitrary_unicode_never_crashes(model, texts):
    """Arbitrary unicode text: no crash, finite vectors, and the batch result equals the one-by-one result."""
    batch = model.encode(texts, batch_size=len(texts))
    assert batch.shape == (len(texts), model.get_embedding_dimension())
    assert np.isfinite(batch).all()
    single = np.stack([model.encode([text])[0] for text in texts])
    np.testing.assert_allclose(batch, single, atol=1e-5, rtol=0)


class _Interrupt:
    """A pre-hook that raises on the n-th call of a layer."""

    def __init__(self, error: BaseException, on_call: int) -> None:
        self.error, self.on_call, self.calls = error, on_call, 0

    def __call__(self, _module, _args):
        self.calls += 1
        if self.calls == self.on_call:
            raise self.error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("CUDA out of memory (simulated)")])
def test_interrupted_encode_leaves_no_state_behind(model, error):
    """KeyboardInterrupt or an OOM error in the second batch leaves no hooks; the next call is correct."""
    sentences = [f"Sentence number {i} is here." for i in range(8)]
    expected = model.encode(sentences, batch_size=2)
    layers = model[0]._layers
    handle = layers[1].register_forward_pre_hook(_Interrupt(error, on_call=2))
    try:
        with pytest.raises(type(error)):
            model.encode(sentences, batch_size=2)
    finally:
        handle.remove()
    assert active_hook_count(layers) == 0
    assert all(not layer._forward_pre_hooks and not layer._forward_hooks for layer in layers)
    np.testing.assert_array_equal(model.encode(sentences, batch_size=2), expected)


def test_loading_without_the_package_says_how_to_install_it(model, tmp_path, monkeypatch):
    """When sentence-transformers-tp is not installed, loading a saved model names the pip command."""
    from sentence_transformers.util import environment

    path = tmp_path / "saved"
    model.save(str(path))
    real = environment.get_installed_version
    monkeypatch.setattr(
        environment,
        "get_installed_version",
        lambda name: None if name == "sentence-transformers-tp" else real(name),
    )
    with pytest.raises(ImportError, match='pip install -U "sentence-transformers-tp>='):
        SentenceTransformer(str(path), trust_remote_code=True)


def test_corrupted_module_config_fails_with_a_clear_message(model, tmp_path):
    """A corrupted sentence_bert_config.json names the file and what to do."""
    path = tmp_path / "saved"
    model.save(str(path))
    (path / "sentence_bert_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="sentence_bert_config.json.*(rebuild|re-save)"):
        SentenceTransformer(str(path), trust_remote_code=True)


def test_missing_module_config_fails_instead_of_using_defaults(model, tmp_path):
    """A saved model without its TP config is refused rather than silently rebuilt with default settings."""
    path = tmp_path / "saved"
    model.save(str(path))
    (path / "sentence_bert_config.json").unlink()
    with pytest.raises(ValueError, match="sentence_bert_config.json"):
        SentenceTransformer(str(path), trust_remote_code=True)


def test_config_with_wrong_types_fails_with_a_clear_message(model, tmp_path):
    """A module config whose TP settings have the wrong type is rejected naming the key."""
    path = tmp_path / "saved"
    model.save(str(path))
    config_path = path / "sentence_bert_config.json"
    config = json.loads(config_path.read_text())
    config["tp_exit"] = "seven"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="tp_exit"):
        SentenceTransformer(str(path), trust_remote_code=True)


def test_atomic_save_keeps_the_old_model_when_saving_fails(model, tmp_path, monkeypatch):
    """save_model into an existing folder leaves the previous model intact if the save fails midway."""
    path = tmp_path / "saved"
    save_model(model, path)
    before = sorted(p.name for p in path.iterdir())
    expected = SentenceTransformer(str(path), trust_remote_code=True).encode(["x"])

    def failing_save(self, output_path, *args, **kwargs):
        with open(f"{output_path}/partial.bin", "wb") as handle:
            handle.write(b"half a model")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(TokenPrependingTransformer, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, path)
    monkeypatch.undo()
    assert sorted(p.name for p in path.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name != "saved"]
    np.testing.assert_array_equal(SentenceTransformer(str(path), trust_remote_code=True).encode(["x"]), expected)


def test_atomic_save_replaces_an_existing_model(model, tmp_path, tiny_llama):
    """save_model over an existing folder replaces it completely (no stale files)."""
    path = tmp_path / "saved"
    path.mkdir()
    (path / "stale.txt").write_text("old")
    save_model(model, path)
    assert not (path / "stale.txt").exists()
    assert (path / "modules.json").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_half_precision_gives_finite_vectors(tiny_llama, dtype):
    """fp32, bf16 and fp16 weights all give finite vectors in the model's dtype (as stock sentence-transformers;
    issue 21 item 8: this test asserted float32 before)."""
    module = TokenPrependingTransformer(
        str(tiny_llama), tp_start=1, tp_exit=3, output_layer=-1, model_kwargs={"dtype": dtype}
    )
    assert module.model.dtype == dtype
    embeddings = SentenceTransformer(modules=[module]).encode(ODD_INPUTS[:5], convert_to_tensor=True)
    assert embeddings.dtype == dtype
    assert torch.isfinite(embeddings).all()


@pytest.mark.real_model
@requires_smollm2
def test_bf16_is_close_to_fp32_on_smollm2():
    """On the real SmolLM2, bf16 embeddings have cosine similarity >= 0.99 with fp32 ones (mean and min)."""
    sentences = ["A man is playing a guitar.", "The stock market fell.", "A dog runs in the park.", "Hello!"]
    vectors = {}
    for dtype in (torch.float32, torch.bfloat16):
        module = TokenPrependingTransformer(
            "smollm2", tp_start=1, tp_exit=7, output_layer=-1, model_kwargs={"dtype": dtype}
        )
        vectors[dtype] = SentenceTransformer(modules=[module]).encode(sentences, convert_to_tensor=True)
    cosine = torch.nn.functional.cosine_similarity(vectors[torch.float32], vectors[torch.bfloat16])
    assert cosine.min() >= 0.99, cosine


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover


def test_ten_thousand_encode_calls_do_not_grow_memory(model):
    """10,000 consecutive encode calls leave no hooks and do not grow memory (RSS growth < 30 MB)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(300):
            model.encode(["warm up"], show_progress_bar=False)
        gc.collect()
        before = _rss_mb()
        for i in range(10_000):
            model.encode([f"call {i % 50}"], show_progress_bar=False)
        gc.collect()
        after = _rss_mb()
    finally:
        torch.set_num_threads(threads)
    assert active_hook_count(model[0]._layers) == 0
    assert after - before < 30, (before, after)
