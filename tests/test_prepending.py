"""The TP mechanism: hooks equal an explicit loop over the layers, for every family; hook hygiene; early exit."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel, LlamaModel, T5Config, T5Model

from sentence_transformers_tp import TokenPrependingTransformer, engine
from sentence_transformers_tp.prepending import (
    TokenPrepending,
    UnsupportedArchitectureError,
    active_hook_count,
    check_decoder_only,
    find_decoder_layers,
    resolve_output_layer,
)

from .conftest import FAMILIES, build_config
from .reference import reference_rows

SENTENCES = ["A man is playing a guitar.", "Two men are playing chess in the park today.", "Hi"]


def reference_embeddings(module: TokenPrependingTransformer, features: dict) -> torch.Tensor:
    """Token Prepending written out as an explicit loop over the decoder layers (no TP hooks)."""
    all_rows = bool((features["placeholder_positions"] >= 0).all())
    tp = (module.tp_start, module.tp_exit) if all_rows else (0, 0)
    target = resolve_output_layer(module.output_layer, len(module._layers))
    states = reference_rows(module, features, tp, target).float()
    k = features["num_prompts"]
    return states.view(-1, k, states.shape[-1]).mean(1)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("tp_start", "tp_exit", "output_layer"), [(1, 3, 3), (0, 4, -1), (1, 2, 1), (2, 4, -2)])
def test_hooks_equal_explicit_reference_loop(tiny_backbones, family, tp_start, tp_exit, output_layer):
    """For every family, TP via hooks equals the explicit loop over layers (max abs diff <= 1e-5, fp32)."""
    module = TokenPrependingTransformer(
        str(tiny_backbones[family]), "prompteol", tp_start=tp_start, tp_exit=tp_exit, output_layer=output_layer
    )
    module.eval()
    features = module.preprocess(SENTENCES)
    expected = reference_embeddings(module, features)
    with torch.no_grad():
        got = module.forward(dict(features))["sentence_embedding"]
    assert got.shape == (len(SENTENCES), module.get_embedding_dimension())
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()


@pytest.mark.parametrize("family", FAMILIES)
def test_tp_changes_the_embedding(tiny_backbones, family):
    """TP on gives a different embedding than the same prompt with TP off (the mechanism is not a no-op)."""
    on = TokenPrependingTransformer(str(tiny_backbones[family]), tp_start=1, tp_exit=3, output_layer=3)
    off = TokenPrependingTransformer(str(tiny_backbones[family]), tp_start=1, tp_exit=1, output_layer=3)
    with torch.no_grad():
        a = on.forward(on.preprocess(SENTENCES[:1]))["sentence_embedding"]
        b = off.forward(off.preprocess(SENTENCES[:1]))["sentence_embedding"]
    assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("output_layer", [0, 1, 2, 3, -1, -2, -5])
def test_tp_off_equals_vanilla_prompt_hidden_states(tiny_llama, output_layer):
    """TP off equals a plain HF forward of the vanilla prompt, read at hidden_states[output_layer]."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=3, tp_exit=3, output_layer=output_layer)
    features = module.preprocess(["A woman is slicing an onion."])
    text = module.tokenizer.decode(features["input_ids"][0], skip_special_tokens=True)
    assert text == 'This sentence : "A woman is slicing an onion." means in one word:"'
    assert "<PST>" not in module.tokenizer.convert_ids_to_tokens(features["input_ids"][0])
    with torch.no_grad():
        got = module.forward(dict(features))["sentence_embedding"][0]
        reference = AutoModel.from_pretrained(str(tiny_llama))
        out = reference(input_ids=features["input_ids"], output_hidden_states=True)
    assert len(out.hidden_states) == 5
    assert torch.allclose(got, out.hidden_states[output_layer][0, -1], atol=1e-5)


def test_output_layer_semantics_final_is_normed(tiny_llama):
    """-1 and num_layers both mean the final normed output: the final norm applied to the last layer's output."""
    last = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=-1)
    four = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=4)
    features = last.preprocess(["x"])
    outputs = []
    handle = last._layers[3].register_forward_hook(lambda m, a, o: outputs.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        got = last.forward(dict(features))["sentence_embedding"]
        other = four.forward(dict(features))["sentence_embedding"]
    handle.remove()
    expected = last.model.norm(outputs[0][:, -1])
    assert torch.allclose(got, other)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, outputs[0][:, -1], atol=1e-3)


def test_layers_after_output_layer_are_not_computed(tiny_llama):
    """Early exit: with output_layer=2 of 4, decoder layers 2 and 3 never run, and no TP hook stays behind."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=2, output_layer=2)
    calls = []
    handles = [
        layer.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, layer in enumerate(module._layers)
    ]
    try:
        with torch.no_grad():
            module.forward(module.preprocess(["A dog runs in the park."]))
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [0, 1]
    assert active_hook_count(module._layers) == 0


def test_hooks_are_removed_when_the_forward_raises(tiny_llama):
    """A forward that raises leaves no hooks behind, and the next call is correct."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3)
    features = module.preprocess(SENTENCES)
    with torch.no_grad():
        expected = module.forward(dict(features))["sentence_embedding"]

    def boom(_module, _args):
        raise RuntimeError("simulated out of memory")

    handle = module._layers[2].register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="simulated"):
        with torch.no_grad():
            module.forward(dict(features))
    handle.remove()
    assert active_hook_count(module._layers) == 0
    assert all(len(layer._forward_pre_hooks) == 0 for layer in module._layers)
    with torch.no_grad():
        again = module.forward(dict(features))["sentence_embedding"]
    assert torch.equal(again, expected)


def test_recorded_hidden_states_are_not_overwritten(tiny_llama):
    """The placeholder write goes into a copy: a layer input recorded elsewhere keeps its original values."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=-1)
    features = module.preprocess(["A cat sleeps on the sofa."])
    recorded = []
    # Registered before the engine's hooks, so it sees the very tensor object the TP hook then edits.
    handle = module._layers[1].register_forward_pre_hook(lambda m, args: recorded.append(args[0]))
    try:
        with torch.no_grad():
            module.forward(dict(features))
    finally:
        handle.remove()
    ph, last = int(features["placeholder_positions"][0]), int(features["last_positions"][0])
    assert not torch.allclose(recorded[0][0, ph], recorded[0][0, last])


def test_rows_without_placeholder_are_left_unchanged(tiny_llama):
    """In a TP batch, a row whose placeholder position is -1 gets exactly its vanilla (no TP) states."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3)
    features = module.preprocess(SENTENCES)
    ids, mask = features["input_ids"], features["attention_mask"]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    last = features["last_positions"]
    mixed = features["placeholder_positions"].clone()
    mixed[1] = -1

    def states(placeholder_positions):
        plan = engine.Plan(capture=(3,), interventions=(TokenPrepending(1, 3),))
        with torch.no_grad():
            captured = engine.run(
                module.model,
                module._layers,
                plan,
                input_ids=ids,
                attention_mask=mask,
                position_ids=position_ids,
                placeholder_positions=placeholder_positions,
                last_positions=last,
            )
        return captured.layers[:, 0]

    with_tp = states(features["placeholder_positions"])
    without_tp = states(torch.full_like(mixed, -1))
    got = states(mixed)
    torch.testing.assert_close(got[[0, 2]], with_tp[[0, 2]], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[1], without_tp[1], rtol=0, atol=1e-6)
    assert not torch.allclose(with_tp[1], without_tp[1])


def test_tp_hooks_need_no_host_device_synchronisation():
    """The TP and early-exit hooks use no data-dependent op (nonzero, item): a forward on the meta device runs.

    On a GPU such an op would stall the host until the device catches up, once per TP layer and batch.
    """
    config = build_config("llama", vocab_size=64)
    with torch.device("meta"):
        model = LlamaModel(config).eval()
        input_ids = torch.ones((3, 7), dtype=torch.long)
        position_ids = torch.arange(7)[None].expand(3, -1)
        placeholder, last = torch.tensor([2, 2, -1]), torch.tensor([6, 6, 6])
    plan = engine.Plan(capture=(3,), interventions=(TokenPrepending(1, 3),))
    with torch.inference_mode():
        # No attention mask: Hugging Face's own mask preparation inspects the mask's values.
        captured = engine.run(
            model,
            find_decoder_layers(model),
            plan,
            input_ids=input_ids,
            attention_mask=None,
            position_ids=position_ids,
            placeholder_positions=placeholder,
            last_positions=last,
            use_cache=True,  # as a plain model call does (no packed-sequence detection, which reads values)
        )
    assert captured.layers.shape == (3, 1, 32)
    assert captured.layers.device.type == "meta"


def test_unsupported_architectures_get_a_clear_error():
    """Encoder-only and encoder-decoder models are rejected with a message naming what is expected."""
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(UnsupportedArchitectureError, match="decoder-only"):
        check_decoder_only(bert)
    t5 = T5Model(T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=8))
    with pytest.raises(UnsupportedArchitectureError, match="decoder-only"):
        check_decoder_only(t5)
    with pytest.raises(UnsupportedArchitectureError, match="num_hidden_layers"):
        find_decoder_layers(torch.nn.Linear(2, 2))


def test_resolve_output_layer_range():
    """Output layers follow hidden_states indexing and out-of-range values raise."""
    assert resolve_output_layer(-1, 30) == 30
    assert resolve_output_layer(-2, 30) == 29
    assert resolve_output_layer(27, 32) == 27
    assert resolve_output_layer(-31, 30) == 0
    with pytest.raises(ValueError, match="out of range"):
        resolve_output_layer(31, 30)
    with pytest.raises(ValueError, match="out of range"):
        resolve_output_layer(-32, 30)
