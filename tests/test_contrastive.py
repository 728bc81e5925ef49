"""Contrastive Prompting, in-context demonstrations and template ensembles: equal to explicit reference loops on every
family, composable with TP, cached == uncached, batch invariant, thread safe, saved and reloaded."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.contrastive import CP_PROMPT
from sentence_transformers_tp.engine import UnsupportedArchitectureError, find_attention_output_projection
from sentence_transformers_tp.templates import clean_sentence, resolve_templates

from .conftest import FAMILIES, run_in_threads
from .reference import reference_rows

SENTENCES = ["A man is playing a guitar.", "Two men are playing chess in the park today.", "Hi"]
DEMO = [("A man is smoking.", "Smoking")]


def reference_cp(module, sentences, tp, cp_layer, alpha, mode, target):
    """CP (+TP) written out: the auxiliary prompt's projection input, then the main prompt with it subtracted."""
    placeholder = module.placeholder if tp[1] > tp[0] else None
    sentences = [clean_sentence(s) for s in sentences]
    aux_features = module.prompting.prepare(sentences, resolve_templates(CP_PROMPT), placeholder)
    aux = reference_rows(module, aux_features, tp, len(module.decoder_layers), attention_capture=cp_layer)
    features = module.prompting.prepare(sentences, module.templates, placeholder)
    k = features["num_prompts"]
    aux = aux.repeat_interleave(k, dim=0)

    def edit(values, rows, last):
        values = values.clone()
        main = values[rows, last]
        diff = main - aux
        if mode == "ns":
            values[rows, last] = alpha * diff
        else:
            values[rows, last] = diff * main.norm(dim=-1, keepdim=True) / (diff.norm(dim=-1, keepdim=True) + 1e-7)
        return values

    states = reference_rows(module, features, tp, target, attention_edit=(cp_layer, edit)).float()
    return states.view(-1, k, states.shape[-1]).mean(1)


def _embed(module, sentences, inference=False):
    context = torch.inference_mode() if inference else torch.no_grad()
    with context:
        return module.forward(module.preprocess(sentences))["sentence_embedding"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("tp", "cp_layer", "mode", "alpha", "output_layer"), [((1, 3), 1, "ns", 2.0, 3), ((1, 1), 2, "nr", 1.0, -1)]
)
def test_cp_equals_explicit_reference_loop(tiny_backbones, family, tp, cp_layer, mode, alpha, output_layer):
    """For every family, CP (alone and with TP) equals the explicit loop with plain hooks (<= 1e-5, fp32)."""
    module = TokenPrependingTransformer(
        str(tiny_backbones[family]),
        "prompteol",
        tp_start=tp[0],
        tp_exit=tp[1],
        output_layer=output_layer,
        cp_layer=cp_layer,
        cp_alpha=alpha,
        cp_mode=mode,
    ).eval()
    target = output_layer % (module.num_layers + 1)
    expected = reference_cp(module, SENTENCES, tp, cp_layer, alpha, mode, target)
    got = _embed(module, SENTENCES)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    plain = TokenPrependingTransformer(
        str(tiny_backbones[family]), "prompteol", tp_start=tp[0], tp_exit=tp[1], output_layer=output_layer
    ).eval()
    assert not torch.allclose(got, _embed(plain, SENTENCES), atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_boosters_cached_equal_uncached_and_batch_invariant(tiny_backbones, family):
    """CK + demonstration + TP + CP: the prefix-cached path equals the uncached one, and batch mates do not matter."""
    module = TokenPrependingTransformer(
        str(tiny_backbones[family]),
        "ck",
        demonstrations=DEMO,
        tp_start=1,
        tp_exit=3,
        output_layer=3,
        cp_layer=1,
        cp_alpha=0.5,
    ).eval()
    uncached = _embed(module, SENTENCES)
    cached = _embed(module, SENTENCES, inference=True)
    torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-5)
    alone = torch.cat([_embed(module, [s], inference=True) for s in SENTENCES])
    torch.testing.assert_close(alone, cached, rtol=0, atol=1e-5)
    assert len(module.prefix_kv) >= 3  # the two CK prompts and the auxiliary prompt


def test_cp_auxiliary_pass_stops_at_its_layer(tiny_llama):
    """The auxiliary forward runs decoder layers 0..cp_layer only (and the main forward stops at the output layer)."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=1, output_layer=3, cp_layer=1).eval()
    calls = []
    handles = [
        layer.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, layer in enumerate(module.decoder_layers)
    ]
    try:
        _embed(module, ["A dog runs."])
    finally:
        for handle in handles:
            handle.remove()
    # Layer 1 of the auxiliary pass stops inside its attention: its forward hook never fires.
    assert calls == [0, 0, 1, 2]


def test_ensemble_is_the_mean_of_its_templates(tiny_llama):
    """template=["pretended_cot", "knowledge"] (= "ck") is the raw mean of the two single-template embeddings."""
    kwargs = {"tp_start": 1, "tp_exit": 3, "output_layer": 3}
    ck = _embed(
        TokenPrependingTransformer(str(tiny_llama), ["pretended_cot", "knowledge"], **kwargs).eval(), SENTENCES
    )
    named = _embed(TokenPrependingTransformer(str(tiny_llama), "ck", **kwargs).eval(), SENTENCES)
    cot = _embed(TokenPrependingTransformer(str(tiny_llama), "pretended_cot", **kwargs).eval(), SENTENCES)
    ke = _embed(TokenPrependingTransformer(str(tiny_llama), "knowledge", **kwargs).eval(), SENTENCES)
    torch.testing.assert_close(ck, (cot + ke) / 2, rtol=0, atol=1e-6)
    torch.testing.assert_close(named, ck, rtol=0, atol=0)


def test_demonstration_prompt_matches_the_paper_and_keeps_tp_on_the_query(tiny_llama):
    """A demonstration gives the scaling_sentemb prompt; the placeholder sits before the query sentence only."""
    module = TokenPrependingTransformer(str(tiny_llama), demonstrations=DEMO, tp_start=1, tp_exit=3, output_layer=3)
    features = module.preprocess(["A dog runs."])
    tokens = features["input_ids"][0]
    text = module.tokenizer.decode(tokens, skip_special_tokens=True)
    assert text == (
        'This sentence : "A man is smoking." means in one word:"Smoking". This sentence : <PST> "A dog runs." means in '
        'one word:"'
    )
    assert int((tokens == module.placeholder_id).sum()) == 1
    # The demonstration lies in the cached prefix: only placeholder + sentence + suffix remain per row.
    (group,) = features["prefix_groups"]
    assert (
        int(features["placeholder_positions"][0]) - (tokens.shape[0] - features["input_ids"].shape[1])
        >= len(group.prefix_ids) - 1
    )


def test_boosters_round_trip_through_save_and_load(tiny_llama, tmp_path):
    """Demonstrations, ensembles and CP settings are saved in the config and give the same vectors after loading."""
    module = TokenPrependingTransformer(
        str(tiny_llama),
        ["pretended_cot", "knowledge"],
        demonstrations=DEMO,
        tp_start=1,
        tp_exit=3,
        output_layer=3,
        cp_layer=2,
        cp_alpha=2.0,
        cp_mode="ns",
    )
    model = SentenceTransformer(modules=[module])
    before = model.encode(SENTENCES, convert_to_tensor=True)
    model.save(str(tmp_path / "saved"))
    again = SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True)
    loaded = again[0]
    assert (loaded.cp_layer, loaded.cp_alpha, loaded.cp_mode) == (2, 2.0, "ns")
    assert loaded.demonstrations == [list(DEMO[0])] and loaded.template == ["pretended_cot", "knowledge"]
    torch.testing.assert_close(again.encode(SENTENCES, convert_to_tensor=True), before, rtol=0, atol=1e-6)
    assert "cp2ns2" in module.model_slug() and "-icl" in module.model_slug()


def test_cp_is_thread_safe(tiny_llama):
    """Concurrent encodes with CP (8 threads) equal the serial results."""
    model = SentenceTransformer(
        modules=[TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3, cp_layer=1)]
    )
    inputs = [[s] * (i + 1) for i, s in enumerate(SENTENCES * 3)][:8]
    serial = [model.encode(batch) for batch in inputs]
    parallel = run_in_threads(lambda i: model.encode(inputs[i]), 8, repeats=2)
    for a, b in zip(serial, parallel):
        assert abs(a - b).max() <= 1e-6


def test_bad_cp_settings_get_clear_errors(tiny_llama, tiny_backbones):
    """Out-of-range layers, unknown modes, bad alphas and prompts without a slot are refused before any work."""
    for kwargs, match in [
        ({"cp_layer": 4}, "cp_layer"),
        ({"cp_layer": 1, "cp_mode": "xx"}, "cp_mode"),
        ({"cp_layer": 1, "cp_alpha": 0}, "cp_alpha"),
        ({"cp_layer": 1, "cp_prompt": "no slot"}, "cp_prompt"),
    ]:
        with pytest.raises(ValueError, match=match):
            TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3, **kwargs)
    with pytest.raises(UnsupportedArchitectureError, match="attention output projection"):
        find_attention_output_projection(torch.nn.Linear(2, 2))


def test_variants_switch_to_a_plain_template_and_restore_the_boosters(tiny_llama):
    """apply_variant(template=...) runs the plain template without demonstrations/CP, then restores everything."""
    from sentence_transformers_tp.evaluation.variants import Variant, apply_variant

    module = TokenPrependingTransformer(
        str(tiny_llama), "ck", demonstrations=DEMO, tp_start=1, tp_exit=3, output_layer=3, cp_layer=1
    ).eval()
    model = SentenceTransformer(modules=[module])
    before = model.encode(SENTENCES)
    plain = TokenPrependingTransformer(str(tiny_llama), "prompteol", tp_start=1, tp_exit=1, output_layer=-1).eval()
    with apply_variant(model, Variant("vanilla", 1, 1, -1, template="prompteol")):
        assert module.cp_layer is None and module.demonstrations is None
        vanilla = model.encode(SENTENCES)
    assert abs(vanilla - SentenceTransformer(modules=[plain]).encode(SENTENCES)).max() <= 1e-6
    assert (module.template, module.cp_layer, module.demonstrations) == ("ck", 1, [list(DEMO[0])])
    assert abs(model.encode(SENTENCES) - before).max() <= 1e-6
    with pytest.raises(ValueError, match="cp_layer"):
        module.set_boosters("prompteol", cp_layer=7)
    assert module.template == "ck"


def test_model_card_names_the_boosters(tiny_llama, tmp_path):
    """The saved model card states the demonstrations and the Contrastive Prompting settings."""
    module = TokenPrependingTransformer(
        str(tiny_llama), "ck", demonstrations=DEMO, tp_start=1, tp_exit=3, output_layer=3, cp_layer=1, cp_alpha=2.0
    )
    model = SentenceTransformer(modules=[module])
    model.save(str(tmp_path / "m"))
    card = (tmp_path / "m" / "README.md").read_text(encoding="utf-8")
    assert '"A man is smoking." -> Smoking' in card
    assert "Contrastive Prompting:** on" in card and "decoder layer 1" in card and "cp_alpha=2.0" in card
    assert "averaged over the 2 prompts" in card
