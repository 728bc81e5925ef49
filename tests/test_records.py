"""records.describe / records.label: every record names the whole setting (template, demos, TP, CP, layer, tasks)."""

from __future__ import annotations

import json

import pytest
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp.module import TokenPrependingTransformer
from sentence_transformers_tp.records import describe, label, template_display_name

DEMO = [["A man is playing on a guitar and singing.", "Music"]]


@pytest.fixture(scope="module")
def boosted(tiny_llama):
    """Knowledge + one demonstration + CP at layer 1, TP off at layer -2, with query / document task settings."""
    module = TokenPrependingTransformer(
        str(tiny_llama),
        "knowledge",
        tp_start=1,
        tp_exit=1,
        output_layer=-2,
        demonstrations=DEMO,
        cp_layer=1,
        cp_alpha=0.5,
        task_settings={"query": {"tp_start": 1, "tp_exit": 3}, "document": {"template": "prompteol"}},
    )
    return SentenceTransformer(modules=[module], device="cpu")


def test_label_names_demonstrations_cp_and_task_settings(boosted):
    """A boosted model's label shows its template, demonstration count, CP, layer, TP state and task settings."""
    assert label(boosted) == "Knowledge + 1 demo + CP L1 ns 0.5, L-2 (no TP) [query: TP 1:3; document: PromptEOL]"
    assert label(boosted[0]) == label(boosted) == label(describe(boosted))


def test_describe_is_plain_json_with_the_whole_setting(boosted):
    """describe() records demonstrations, CP, task settings and the prompt limit, and round-trips through JSON."""
    description = describe(boosted)
    assert json.loads(json.dumps(description)) == description
    assert description["template"] == "knowledge" and description["demonstrations"] == DEMO
    assert (description["cp_layer"], description["cp_alpha"], description["cp_mode"]) == (1, 0.5, "ns")
    assert description["task_settings"] == {
        "query": {"tp_start": 1, "tp_exit": 3},
        "document": {"template": "prompteol"},
    }
    assert description["tp_enabled"] is False and description["output_layer"] == -2
    assert description["max_seq_length"] == boosted.max_seq_length and description["num_layers"] == 4


def test_changes_replace_settings_and_a_new_template_drops_the_boosters(boosted):
    """describe(..., tp_exit=3) changes only the band; a changed template drops demonstrations and CP."""
    assert label(describe(boosted, tp_exit=3)).startswith("Knowledge + 1 demo + CP L1 ns 0.5 + TP 1:3, L-2 [")
    plain = describe(boosted, template="prompteol")
    assert plain["demonstrations"] == [] and plain["cp_layer"] is None and plain["cp_alpha"] is None
    assert label(plain, notes=["usual layer"]).startswith("PromptEOL, L-2 (no TP, usual layer) [")
    with pytest.raises(ValueError, match="not settings: tp_layers"):
        describe(boosted, tp_layers=3)


def test_plain_model_keeps_the_short_label(tiny_llama):
    """Without boosters or task settings the label is the short form: template + TP band, layer."""
    module = TokenPrependingTransformer(str(tiny_llama), "prompteol", tp_start=1, tp_exit=3, output_layer=-1)
    assert label(module) == "PromptEOL + TP 1:3, L-1"
    description = describe(module)
    assert description["demonstrations"] == [] and description["task_settings"] == {}
    assert description["cp_layer"] is None and description["cp_prompt"] is None


def test_layer_span_is_described_only_when_not_1(tiny_llama):
    """describe() and label() name a layer span other than 1 (``L2-3 mean``) and leave it out otherwise."""
    module = TokenPrependingTransformer(str(tiny_llama), "prompteol", tp_start=1, tp_exit=3, output_layer=3)
    assert "layer_span" not in describe(module) and label(module) == "PromptEOL + TP 1:3, L3"
    assert describe(module, layer_span=2)["layer_span"] == 2
    assert label(describe(module, layer_span=2)) == "PromptEOL + TP 1:3, L2-3 mean"


def test_template_display_names_of_ensembles_and_user_templates():
    """Ensembles join the display names of their members; user templates get their hash label."""
    assert template_display_name(["pretended_cot", "knowledge"]) == "Pretended CoT+Knowledge"
    assert template_display_name("metaeol") == "MetaEOL"
    assert template_display_name('This : "{sentence}" means in one word:"').startswith("custom-")


def test_models_without_tp_module_are_refused():
    """describe() of something without TP settings is a one-line ValueError."""
    with pytest.raises(ValueError, match="no TokenPrependingTransformer"):
        describe(object())


def test_smollm2_default_is_recorded_with_its_demonstration_and_task_settings():
    """The SmolLM2 default (preset combination + retrieval task settings) is not recorded as plain "prompteol":
    the label names the demonstrations, the layer span and what query / document change."""
    from types import SimpleNamespace

    from sentence_transformers_tp.presets import get_preset

    preset = get_preset("smollm2")
    module = SimpleNamespace(
        **{"cp_layer": None, "cp_alpha": 1.0, "cp_mode": "ns", "max_seq_length": 512, "num_layers": 30},
        **preset.combination_settings(),
        task_settings=preset.task_settings_config(),
        backbone_name="smollm2",
    )
    assert label(module) == (
        "PromptEOL + 2 demos, L24-26 mean (no TP) "
        "[query: Knowledge + 1 demo + L29; document: retrieval_document + no demos + L29]"
    )
    assert describe(module)["demonstrations"] == [
        ["A man is performing a trick on a surfboard in the water", "surfboard"],
        ["A little dog is running on the sand", "Beach"],
    ]
