"""The shared template-prefix KV cache: same embeddings as without it, for every family; prefix identity; safety."""

from __future__ import annotations

import json
import logging
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

import sentence_transformers_tp.prefix_cache as prefix_cache_module
from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.prefix_cache import PrefixEntry, PrefixKVCache, prefix_length, unsupported_reason
from sentence_transformers_tp.templates import clean_sentence, render

from .conftest import FAMILIES, requires_smollm2, run_in_threads

SENTENCES = [
    "A man is playing a guitar.",
    "'Quoted' start, then more words",
    "Two men are playing chess in the park today while a child is riding a horse.",
    "x",
    "",
    '"Double quotes" and a question?',
]

#: (template, tp_start, tp_exit, output_layer, padding_side): TP on and off, early exit and the final normed layer.
SETTINGS = [
    ("prompteol", 1, 3, 3, "left"),
    ("knowledge", 1, 1, -1, "right"),
    ("metaeol", 0, 4, 1, "left"),
    ("pretended_cot", 2, 4, -2, "right"),
]


def embed(module: TokenPrependingTransformer, sentences: list[str], cached: bool, **kwargs) -> torch.Tensor:
    """Embeddings through ``forward``: under inference mode (the cache is used) or plain no_grad (it is not)."""
    features = module.preprocess(sentences, **kwargs)
    with torch.inference_mode() if cached else torch.no_grad():
        states = module.forward(features)["sentence_embedding"]
    return states.clone()


def configure(module: TokenPrependingTransformer, tp_start: int, tp_exit: int, output_layer: int, side: str) -> None:
    """Change a module's TP band, output layer and padding side in place."""
    module.tp_start, module.tp_exit, module.output_layer, module.padding_side = tp_start, tp_exit, output_layer, side


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_equals_uncached_for_every_family(tiny_backbones, family):
    """For all 9 families (sliding-window Gemma too), cached and uncached embeddings agree to 1e-4 in fp32."""
    modules = {}
    for template, tp_start, tp_exit, output_layer, side in SETTINGS:
        if template not in modules:
            modules[template] = TokenPrependingTransformer(str(tiny_backbones[family]), template)
        module = modules[template]
        configure(module, tp_start, tp_exit, output_layer, side)
        assert module._prefix_cache_problem is None
        features = module.preprocess(SENTENCES)
        assert features["prefix_rest"] == []
        uncached = embed(module, SENTENCES, cached=False)
        cached = embed(module, SENTENCES, cached=True)
        assert len(module._prefix_kv) >= len(module.templates)
        diff = (cached - uncached).abs().max().item()
        assert diff <= 1e-4, (family, template, diff)


def test_prefix_is_the_template_text_before_the_placeholder(tiny_llama):
    """With TP on every sentence of a template shares one prefix: the tokens of the text before the placeholder."""
    module = TokenPrependingTransformer(str(tiny_llama), "metaeol", tp_start=1, tp_exit=3, output_layer=3)
    features = module.preprocess(SENTENCES)
    groups = features["prefix_groups"]
    assert len(groups) == 8
    for index, group in enumerate(groups):
        assert group.rows.tolist() == [row * 8 + index for row in range(len(SENTENCES))]
        before = module.templates[index].split("{placeholder}")[0]
        assert list(group.prefix_ids) == module.tokenizer(before)["input_ids"]
        assert (group.input_ids[:, 0] == module.placeholder_id).all()
        assert (group.placeholder_positions == 0).all()
        for j, row in enumerate(group.rows.tolist()):
            ids = features["input_ids"][row][features["attention_mask"][row].bool()].tolist()
            remainder = group.input_ids[j][group.attention_mask[j].bool()].tolist()
            assert ids == list(group.prefix_ids) + remainder
            assert group.last_positions[j] == len(remainder) - 1


def test_tp_off_prefix_stops_before_the_sentence(tiny_llama):
    """With TP off the prefix ends before the sentence; rows whose start merges differently get their own key."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=1, output_layer=3)
    features = module.preprocess(SENTENCES)
    assert features["prefix_rest"] == []
    for group in features["prefix_groups"]:
        for j, row in enumerate(group.rows.tolist()):
            ids = features["input_ids"][row][features["attention_mask"][row].bool()].tolist()
            assert ids[: group.prefix_length] == list(group.prefix_ids)
            text = render(module.templates[0], clean_sentence(SENTENCES[row]), None)
            prefix_text = module.tokenizer.decode(list(group.prefix_ids), skip_special_tokens=True)
            assert text.text[: text.sentence_start].startswith(prefix_text)
        assert (group.placeholder_positions == -1).all()
    assert torch.allclose(embed(module, SENTENCES, True), embed(module, SENTENCES, False), atol=1e-5)


def test_prefix_length_rules():
    """Placeholder before the sentence: tokens before it; otherwise the tokens before the sentence but the last."""
    offsets = [(0, 0), (0, 4), (4, 13), (13, 15), (15, 16), (16, 21), (21, 23), (23, 24), (24, 30)]
    # "<s>This sentence : <PST> "A..." with the sentence starting at 23.
    assert prefix_length(offsets, sentence_start=23, placeholder_position=5) == 5
    assert prefix_length(offsets, sentence_start=23, placeholder_position=-1) == 6
    assert prefix_length(offsets, sentence_start=23, placeholder_position=8) == 6
    assert prefix_length(offsets, sentence_start=23, placeholder_position=3) == 3
    assert prefix_length(offsets, sentence_start=0, placeholder_position=-1) == 0
    assert prefix_length(offsets, sentence_start=23, placeholder_position=1) == 0  # too short to be worth it


def test_instruction_prompts_and_task_templates_are_keyed_by_their_ids(tiny_llama):
    """A prompt= instruction or a task template gives its own cache entry, and equal results to the uncached path."""
    module = TokenPrependingTransformer(
        str(tiny_llama),
        tp_start=1,
        tp_exit=3,
        output_layer=3,
        query_template='Query : "{sentence}" means in one word:"',
    )
    model = SentenceTransformer(modules=[module])
    plain = model.encode(SENTENCES, convert_to_tensor=True)
    instructed = model.encode(SENTENCES, prompt="Instruct: retrieve. ", convert_to_tensor=True)
    query = model.encode_query(SENTENCES, convert_to_tensor=True)
    assert len(module._prefix_kv) == 3
    assert torch.allclose(plain, embed(module, SENTENCES, False), atol=1e-5)
    assert torch.allclose(instructed, embed(module, SENTENCES, False, prompt="Instruct: retrieve. "), atol=1e-5)
    assert torch.allclose(query, embed(module, SENTENCES, False, task="query"), atol=1e-5)
    assert not torch.allclose(plain, instructed, atol=1e-3)


def test_each_prefix_is_built_once_and_reused(tiny_llama, monkeypatch):
    """A template's prefix is computed on first use only; later batches and calls reuse it."""
    builds = []
    original = prefix_cache_module.build_entry

    def counting(*args, **kwargs):
        builds.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(prefix_cache_module, "build_entry", counting)
    module = TokenPrependingTransformer(str(tiny_llama), "metaeol", tp_start=1, tp_exit=3, output_layer=3)
    model = SentenceTransformer(modules=[module])
    model.encode(SENTENCES, batch_size=2)
    assert len(builds) == 8 and len(set(builds)) == 8
    model.encode(SENTENCES[::-1], batch_size=3)
    assert len(builds) == 8
    assert module._prefix_kv.hits == 8 * (2 + 2)  # batches 2-3 of the first call, both batches of the second


def test_early_exit_with_the_cache_runs_only_the_layers_below_the_output_layer(tiny_llama):
    """With output_layer=2 of 4, layers 2 and 3 never run: the prefix (first call) and the rest stop at layer 2."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=2, output_layer=2)
    calls = []
    handles = [
        layer.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, layer in enumerate(module._layers)
    ]
    try:
        embed(module, ["A dog runs in the park."], cached=True)
        assert calls == [0, 1, 0, 1]  # the prefix once, then the remainder
        calls.clear()
        embed(module, ["A cat sleeps."], cached=True)
        assert calls == [0, 1]
    finally:
        for handle in handles:
            handle.remove()
    assert [entry.depth for entry in module._prefix_kv._entries.values()] == [2]


def test_results_do_not_depend_on_cache_state_padding_or_batch_mates(tiny_backbones):
    """Cold and warm calls are identical; padding side and batch mates change nothing beyond 1e-5."""
    for family in ("llama", "gemma3"):
        module = TokenPrependingTransformer(str(tiny_backbones[family]), tp_start=1, tp_exit=3, output_layer=3)
        cold = embed(module, SENTENCES, cached=True)
        warm = embed(module, SENTENCES, cached=True)
        assert torch.equal(cold, warm)
        module.padding_side = "right"
        assert (embed(module, SENTENCES, cached=True) - cold).abs().max() <= 1e-5
        alone = torch.cat([embed(module, [s], cached=True) for s in SENTENCES])
        assert (alone - cold).abs().max() <= 1e-5


def test_concurrent_encodes_share_entries_without_mutating_them(tiny_llama):
    """Threads encoding different templates at once get the serial results and leave the cached tensors intact."""
    module = TokenPrependingTransformer(str(tiny_llama), "metaeol", tp_start=1, tp_exit=3, output_layer=3)
    model = SentenceTransformer(modules=[module])
    prompts = [None, "Instruct: a. ", None, "Instruct: b. "]
    expected = [model.encode(SENTENCES, batch_size=2, prompt=p) for p in prompts]
    snapshot = {key: [t.clone() for t in entry.keys] for key, entry in module._prefix_kv._entries.items()}
    results = run_in_threads(
        lambda i: model.encode(SENTENCES, batch_size=2, prompt=prompts[i]), len(prompts), repeats=2
    )
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    for key, keys in snapshot.items():
        assert all(torch.equal(a, b) for a, b in zip(module._prefix_kv._entries[key].keys, keys))


def test_weight_changes_and_dtype_moves_never_serve_stale_prefixes(tiny_llama):
    """Weights modified in place, or the model moved to another dtype, give fresh prefixes (equal to uncached)."""
    module = TokenPrependingTransformer(str(tiny_llama), "knowledge", tp_start=1, tp_exit=3, output_layer=3)
    model = SentenceTransformer(modules=[module])
    before = model.encode(SENTENCES, convert_to_tensor=True)
    with torch.no_grad():
        for projection in (module._layers[0].self_attn.k_proj, module._layers[0].self_attn.v_proj):
            torch.nn.init.normal_(projection.weight, std=0.5)  # in place: the same tensors, new values
    after = model.encode(SENTENCES, convert_to_tensor=True)
    assert not torch.allclose(before, after, atol=1e-4)
    assert torch.allclose(after, embed(module, SENTENCES, False), atol=1e-5)
    model.to(torch.float64)
    doubled = model.encode(SENTENCES, convert_to_tensor=True)
    assert torch.allclose(doubled, embed(module, SENTENCES, False), atol=1e-7)
    assert all(entry.keys[0].dtype == torch.float64 for entry in module._prefix_kv._entries.values())


def test_pickling_drops_the_cache(tiny_llama):
    """A module with filled cache pickles (multi-process pools); the copy starts empty and embeds the same."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3)
    expected = embed(module, SENTENCES, cached=True)
    assert len(module._prefix_kv) == 1
    copy = pickle.loads(pickle.dumps(module))
    assert len(copy._prefix_kv) == 0
    assert torch.allclose(embed(copy, SENTENCES, cached=True), expected, atol=1e-6)


def test_switch_off_is_saved_and_runs_uncached(tiny_llama, tmp_path):
    """prefix_cache=False builds no entries, is saved in the config and survives a reload."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3, prefix_cache=False)
    model = SentenceTransformer(modules=[module])
    embeddings = model.encode(SENTENCES)
    assert len(module._prefix_kv) == 0 and not module.prefix_cache_active()
    model.save(str(tmp_path / "saved"))
    assert json.loads((tmp_path / "saved" / "sentence_bert_config.json").read_text())["prefix_cache"] is False
    again = SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True)
    assert again[0].prefix_cache is False
    np.testing.assert_allclose(again.encode(SENTENCES), embeddings, atol=1e-6)


def test_training_and_gradients_never_use_the_cache(tiny_llama):
    """With gradients (plain forward) or a backbone in train mode, every prompt runs whole."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3)
    module.forward(module.preprocess(SENTENCES))["sentence_embedding"].sum().backward()
    module.model.train()
    with torch.inference_mode():
        module.forward(module.preprocess(SENTENCES))
    assert len(module._prefix_kv) == 0


def test_unsupported_backbones_fall_back_with_a_logged_reason(tiny_llama, caplog):
    """Layer kinds other than (sliding) attention are reported; such a module embeds without the cache."""
    recurrent = SimpleNamespace(
        config=SimpleNamespace(get_text_config=lambda decoder=True: None), forward=lambda **kwargs: None
    )
    assert "layer layout" in unsupported_reason(recurrent)
    from transformers import Qwen3NextConfig

    linear = SimpleNamespace(config=Qwen3NextConfig(num_hidden_layers=4), forward=lambda **kwargs: None)
    assert "linear_attention" in unsupported_reason(linear)
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3)
    module._prefix_cache_problem = "it has linear_attention layers"
    with caplog.at_level(logging.WARNING):
        embeddings = embed(module, SENTENCES, cached=True)
    assert len(module._prefix_kv) == 0
    assert "prefix KV cache is off" in caplog.text and "linear_attention" in caplog.text
    assert torch.allclose(embeddings, embed(module, SENTENCES, cached=False), atol=0)


def test_lru_keeps_a_bounded_number_of_prefixes():
    """The store keeps max_prefixes entries, dropping the least recently used, and never a shallower copy."""
    store = PrefixKVCache(max_prefixes=2)
    context = store.sync(torch.nn.Linear(2, 2))

    def entry(ids, depth=1):
        return PrefixEntry(ids, (torch.zeros(1, 1, len(ids), 2),) * depth, (torch.zeros(1, 1, len(ids), 2),) * depth)

    store.put(entry((1, 2)), context)
    store.put(entry((3, 4)), context)
    assert store.get((1, 2), 1, context) is not None  # (1, 2) is now the most recent
    store.put(entry((5, 6)), context)
    assert len(store) == 2
    assert store.get((3, 4), 1, context) is None
    store.put(entry((1, 2), depth=3), context)
    store.put(entry((1, 2), depth=1), context)
    assert store.get((1, 2), 3, context).depth == 3
    assert store.get((1, 2), 4, context) is None
    with pytest.raises(ValueError):
        PrefixKVCache(max_prefixes=0)


@pytest.mark.real_model
@requires_smollm2
def test_real_smollm2_cached_equals_uncached():
    """On the real SmolLM2, MetaEOL embeddings (8 cached prefixes) with and without the cache agree to fp32 rounding.

    Its hidden states reach |x| ~ 100 at layer 20 (~550 at layer 28), so the bound is relative: 1e-5 of the largest
    value, the level that padding side or batch mates already change the uncached path by (docs/performance.md).
    """
    module = TokenPrependingTransformer("smollm2", "metaeol", tp_start=1, tp_exit=7, output_layer=20)
    sentences = SENTENCES[:2]
    uncached = embed(module, sentences, cached=False)
    diff = (embed(module, sentences, cached=True) - uncached).abs().max().item()
    assert len(module._prefix_kv) == 8
    assert diff <= 1e-5 * uncached.abs().max().item(), diff
