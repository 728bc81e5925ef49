"""The forward engine: captures at several layers, early exit, plan checks, and the feature-detected cache argument
(no deprecated transformers API on any path)."""

from __future__ import annotations

import warnings

import pytest
import torch

from sentence_transformers_tp import TokenPrependingTransformer, engine


def test_cache_argument_is_feature_detected():
    """The KV-cache argument is 'cache' where the forward takes it (transformers >= 5.24), else 'past_key_values'."""

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return None

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, use_cache=None):
            return None

    assert engine.cache_argument(Old()) == "past_key_values"
    assert engine.cache_argument(New()) == "cache"


def test_no_deprecation_warnings_on_any_forward_path(tiny_llama):
    """Cached, uncached, all-layer and CP forwards raise no FutureWarning / DeprecationWarning."""
    module = TokenPrependingTransformer(str(tiny_llama), "metaeol", tp_start=1, tp_exit=3, output_layer=3, cp_layer=1)
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        with torch.inference_mode():
            module.embed(module.preprocess(["A dog runs."]), layers="all")
        with torch.no_grad():
            module.embed(module.preprocess(["A dog runs."]))


def test_several_captures_equal_single_ones_and_stop_early(tiny_llama):
    """Capturing layers (3, 1) in one forward equals two single-layer forwards; layer 3 of 4 never runs."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3).eval()
    features = module.preprocess(["A man plays a guitar.", "Hi"])
    calls = []
    handle = module._layers[3].register_forward_hook(lambda *a: calls.append(3))
    try:
        with torch.no_grad():
            both = module.embed(features, layers=[3, 1])
            one = module.embed(features, layers=1)
            three = module.embed(features, layers=3)
    finally:
        handle.remove()
    torch.testing.assert_close(both[:, 0], three[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(both[:, 1], one[:, 0], rtol=0, atol=0)
    assert calls == []


def test_bad_plans_are_refused():
    """Empty captures, out-of-range layers and mixed capture kinds raise ValueError before any forward."""
    layers = torch.nn.ModuleList([torch.nn.Linear(2, 2)] * 2)
    ids = torch.zeros((1, 2), dtype=torch.long)
    kwargs = dict(input_ids=ids, attention_mask=None, placeholder_positions=ids[:, 0], last_positions=ids[:, 0])
    for plan, match in [
        (engine.Plan(), "at least one layer"),
        (engine.Plan(capture=(3,)), "outside"),
        (engine.Plan(capture=(1,), capture_attention_input=0), "either"),
        (engine.Plan(capture_attention_input=2), "not a decoder layer"),
    ]:
        with pytest.raises(ValueError, match=match):
            engine.run(torch.nn.Identity(), layers, plan, **kwargs)
    with pytest.raises(ValueError, match="'all'"):
        engine.capture_layers("some", -1, 4)
