"""Setting / TaskSettings: one validation, one config form (presets and saved models load unchanged), label,
changes, and the module embedding under a Setting (``module.using``)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.demonstrations import Demonstration
from sentence_transformers_tp.interventions import ForwardSettings
from sentence_transformers_tp.presets import PRESET_DIR, RECORD_KEYS
from sentence_transformers_tp.settings import COMBINATION_KEYS, LAYER_KEYS, Setting, TaskSettings, span_mean

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SENTENCES = ["A man is playing a guitar.", "Someone plays an instrument", "The cat sleeps on the sofa?"]
PRESET_FILES = sorted(PRESET_DIR.glob("*.yaml"))


def _records_dropped(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if key not in RECORD_KEYS}


@pytest.mark.parametrize("path", PRESET_FILES, ids=[p.stem for p in PRESET_FILES])
def test_every_shipped_preset_round_trips_through_setting(path):
    """Each preset's template entries, combination and task_settings read into Settings and write back unchanged."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for entry in data["templates"].values():
        setting = Setting.from_config(entry)
        assert setting.to_config(LAYER_KEYS) == {key: entry[key] for key in LAYER_KEYS}
        setting.validate(data["num_layers"])
    base = Setting()
    if "combination" in data:
        combination = _records_dropped(data["combination"])
        base = Setting.from_config(combination)
        base.validate(data["num_layers"])
        assert base.combination() == combination
        assert set(combination) <= set(COMBINATION_KEYS)
    if "task_settings" in data:
        config = {task: _records_dropped(entry) for task, entry in data["task_settings"].items()}
        tasks = TaskSettings.from_config(config, base)
        tasks.validate(data["num_layers"])
        assert tasks.to_config(base) == config
        assert TaskSettings.from_config(tasks.to_config(base), base) == tasks


def test_old_saved_config_reads_and_writes_back_unchanged():
    """The settings keys of a config saved before Setting existed read into a Setting and write back the same."""
    config = json.loads((FIXTURES / "saved_module_config.json").read_text(encoding="utf-8"))
    setting = Setting.from_config(config)
    assert setting.template == ("pretended_cot", "knowledge")
    assert setting.demonstrations == (Demonstration("A man is smoking.", "Smoking"),)
    assert (setting.tp_start, setting.tp_exit, setting.output_layer) == (1, 3, -2)
    assert (setting.cp_layer, setting.cp_alpha, setting.cp_mode) == (2, 0.5, "nr")
    assert setting.to_config() == {key: config[key] for key in setting.to_config()}
    tasks = TaskSettings.from_config(config["task_settings"], setting)
    assert tasks.to_config(setting) == config["task_settings"]
    assert tasks["sts"].output_layer == 3 and tasks["STS"] is tasks["sts"]
    assert tasks["document"].demonstrations == () and tasks["document"].max_seq_length == 64
    assert tasks["document"].cp_layer == 2  # missing keys are the base's


def _saved_old_model(tiny_llama, tmp_path: Path) -> Path:
    """A saved model folder whose module config is the one written by the code before Setting existed."""
    folder = tmp_path / "old"
    SentenceTransformer(modules=[TokenPrependingTransformer(str(tiny_llama), tp_exit=3)]).save(str(folder))
    old_config = (FIXTURES / "saved_module_config.json").read_text(encoding="utf-8")
    (folder / "sentence_bert_config.json").write_text(old_config, encoding="utf-8")
    return folder


def test_old_saved_model_loads_unchanged_and_saves_the_same_config(tiny_llama, tmp_path):
    """A model saved by the old code loads with every setting, embeds as the same explicit module, and re-saves the
    same sentence_bert_config.json."""
    folder = _saved_old_model(tiny_llama, tmp_path)
    config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
    loaded = SentenceTransformer(str(folder), trust_remote_code=True)
    direct = TokenPrependingTransformer(str(folder))
    for module in (loaded[0], direct):
        assert module.template == ["pretended_cot", "knowledge"]
        assert module.query_template == "prompteol" and module.task_settings == config["task_settings"]
        assert (module.tp_start, module.tp_exit, module.output_layer, module.cp_layer) == (1, 3, -2, 2)
    explicit = TokenPrependingTransformer(
        str(folder),
        ["pretended_cot", "knowledge"],
        tp_start=1,
        tp_exit=3,
        output_layer=-2,
        demonstrations=[("A man is smoking.", "Smoking")],
        cp_layer=2,
        cp_alpha=0.5,
        cp_mode="nr",
    )
    expected = SentenceTransformer(modules=[explicit]).encode(SENTENCES)
    np.testing.assert_allclose(loaded.encode(SENTENCES), expected, atol=1e-6)
    loaded.save(str(tmp_path / "again"))
    assert json.loads((tmp_path / "again" / "sentence_bert_config.json").read_text(encoding="utf-8")) == config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"template": "no slot"}, "template"),
        ({"template": 3}, "template"),
        ({"tp_start": 1.0}, "tp_start must be an integer"),
        ({"tp_start": -1}, "tp_start must be >= 0"),
        ({"tp_start": 1, "tp_exit": 9}, "tp_exit=9 is larger"),
        ({"output_layer": 7}, "out of range"),
        ({"output_layer": "last"}, "output_layer must be an integer"),
        ({"cp_layer": 4}, "cp_layer"),
        ({"cp_mode": "xx"}, "cp_mode"),
        ({"cp_alpha": 0}, "cp_alpha"),
        ({"cp_prompt": "no slot"}, "cp_prompt"),
        ({"max_seq_length": 0}, "max_seq_length must be a positive integer"),
    ],
)
def test_validate_names_the_bad_setting(change, message):
    """validate(num_layers) rejects each bad value with a one-line ValueError naming it."""
    with pytest.raises(ValueError, match=message) as info:
        Setting().replace(**change).validate(4)
    assert "\n" not in str(info.value)


def test_validate_without_a_backbone_skips_only_the_layer_ranges():
    """validate(None) checks types and values but not the ranges that need the backbone's depth."""
    Setting(tp_exit=90, output_layer=70, cp_layer=50).validate(None)
    with pytest.raises(ValueError, match="tp_start must be an integer"):
        Setting(tp_start="1").validate(None)


def test_demonstrations_are_parsed_and_bad_ones_refused():
    """Demonstrations are stored parsed (hashable); a malformed one fails when the Setting is built."""
    setting = Setting(demonstrations=[["A dog runs.", "Dog"]])
    assert setting.demonstrations == (Demonstration("A dog runs.", "Dog"),)
    assert hash(setting) == hash(Setting(demonstrations=(("A dog runs.", "Dog"),)))
    with pytest.raises(ValueError, match="one word"):
        Setting(demonstrations=[["x", "two words"]])


def test_task_settings_refuse_unknown_keys_and_bad_shapes():
    """Task entries with unknown keys, a non-dict entry or two spellings of one task are refused, naming the task."""
    with pytest.raises(ValueError, match=r"task_settings\['query'\] has unknown settings"):
        TaskSettings.from_config({"query": {"bogus": 1}}, Setting())
    with pytest.raises(ValueError, match="dict of settings"):
        TaskSettings.from_config({"query": "knowledge"}, Setting())
    with pytest.raises(ValueError, match="both"):
        TaskSettings.from_config({"STS": {}, "sts": {}}, Setting())
    with pytest.raises(ValueError, match=r"task_settings\['query'\]: tp_exit=9"):
        TaskSettings.from_config({"query": {"tp_exit": 9}}, Setting()).validate(4)


def test_task_settings_written_from_settings_hold_only_the_differences():
    """TaskSettings built from Settings write only the keys that differ from the base."""
    base = Setting(template="knowledge", output_layer=28)
    tasks = TaskSettings({"query": base.replace(tp_exit=4), "document": base})
    assert tasks.to_config(base) == {"query": {"tp_exit": 4}, "document": {}}


def test_custom_demonstrations_in_task_settings_round_trip_through_config_and_yaml():
    """A task Setting with custom demonstrations writes them as pairs and reads back equal, through YAML too."""
    base = Setting(template="knowledge")
    demos = [Demonstration("A passage from the corpus.", "Topic"), Demonstration("Horses", "Horse")]
    tasks = TaskSettings({"query": base.replace(demonstrations=demos, output_layer=2), "document": base})
    config = tasks.to_config(base)
    assert config["query"] == {"demonstrations": [d.as_pair() for d in demos], "output_layer": 2}
    again = TaskSettings.from_config(yaml.safe_load(yaml.safe_dump(config)), base)
    assert dict(again) == dict(tasks) and again["query"].demonstrations == tuple(demos)


def test_forward_settings_is_the_engine_projection():
    """forward_settings() carries the TP band and CP; without_tp() is the one spelling of TP off."""
    setting = Setting(tp_start=2, tp_exit=5, cp_layer=1, cp_alpha=0.5, cp_mode="nr")
    assert setting.forward_settings() == ForwardSettings(tp_start=2, tp_exit=5, cp_layer=1, cp_alpha=0.5, cp_mode="nr")
    assert setting.tp_enabled and not setting.without_tp().tp_enabled
    assert setting.without_tp().tp_start == 2


def test_label_names_every_part():
    """label() names template(s), demonstrations, TP band, CP and layer."""
    assert Setting().label() == "prompteol, L-1"
    setting = Setting(
        template=("pretended_cot", "knowledge"),
        demonstrations=[("A dog runs.", "Dog")],
        tp_start=1,
        tp_exit=4,
        cp_layer=2,
        cp_alpha=0.5,
        output_layer=28,
    )
    assert setting.label() == "pretended_cot+knowledge + demo(Dog) + TP 1..3 + CP L2 ns 0.5, L28"
    assert Setting(template="Say {sentence}").label().startswith("custom-")


def test_changes_counts_departures_from_vanilla_prompteol():
    """changes(): 0 for vanilla PromptEOL at any layer; template, ensemble members, demonstrations, TP, CP count."""
    assert Setting(output_layer=20).changes() == 0
    assert Setting(template="knowledge").changes() == 1
    assert Setting(template=("pretended_cot", "knowledge")).changes() == 2
    demos = [("A dog runs.", "Dog"), ("A cat naps.", "Cat")]
    assert Setting(demonstrations=demos, tp_exit=4, cp_layer=1).changes() == 4


@pytest.fixture(scope="module")
def module(tiny_llama) -> TokenPrependingTransformer:
    """A TP module on the tiny Llama (PromptEOL, TP 1..2, output layer 3)."""
    return TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3).eval()


def test_using_embeds_as_a_module_built_with_that_setting(module, tiny_llama):
    """Under using(setting) the module embeds exactly as a module constructed with that setting, and is unchanged
    afterwards."""
    model = SentenceTransformer(modules=[module])
    before = model.encode(SENTENCES)
    setting = Setting(template="knowledge", demonstrations=[("A dog runs.", "Dog")], tp_exit=1, output_layer=2)
    other = TokenPrependingTransformer(
        str(tiny_llama), "knowledge", demonstrations=[("A dog runs.", "Dog")], tp_exit=1, output_layer=2
    )
    with module.using(setting):
        assert module.setting == setting and module.own_setting != setting
        assert (module.template, module.output_layer, module.tp_enabled) == ("knowledge", 2, False)
        inside = model.encode(SENTENCES)
    np.testing.assert_allclose(inside, SentenceTransformer(modules=[other]).encode(SENTENCES), atol=1e-6)
    np.testing.assert_allclose(model.encode(SENTENCES), before, atol=0)
    assert module.setting == module.own_setting


def test_using_applies_the_token_budget(module):
    """A setting's max_seq_length is the token budget under using()."""
    long_text = "word " * 200
    with module.using(module.setting.replace(max_seq_length=40)):
        assert module.preprocess([long_text])["input_ids"].shape[1] <= 40
    assert module.preprocess([long_text])["input_ids"].shape[1] > 40


def test_using_is_per_thread(module):
    """A using() block in one thread does not change what another thread embeds."""
    model = SentenceTransformer(modules=[module])
    expected = model.encode(SENTENCES)
    inside, outside = threading.Event(), threading.Event()
    results = {}

    def other_thread() -> None:
        inside.wait(30)
        results["other"] = model.encode(SENTENCES)
        outside.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with module.using(module.setting.without_tp().replace(output_layer=1)):
        inside.set()
        outside.wait(30)
        results["using"] = model.encode(SENTENCES)
    thread.join()
    np.testing.assert_allclose(results["other"], expected, atol=0)
    assert np.abs(results["using"] - expected).max() > 1e-3


def test_using_refuses_an_invalid_setting_before_the_block(module):
    """An invalid setting is refused by using() itself; the module stays as it was."""
    with pytest.raises(ValueError, match="out of range"):
        with module.using(Setting(output_layer=9)):
            pytest.fail("the block must not run")
    assert module.output_layer == 3


def test_task_settings_for_resolves_tasks_on_the_module_setting(tiny_llama):
    """task_settings_for(task) is the task's entry on the module's setting, else the module's setting."""
    module = TokenPrependingTransformer(
        str(tiny_llama),
        tp_exit=3,
        output_layer=3,
        query_template="knowledge",
        task_settings={"STS": {"output_layer": 2}},
    )
    assert module.task_settings_for("query") == module.own_setting.replace(template="knowledge")
    assert module.task_settings_for("sts").output_layer == 2
    assert module.task_settings_for("clustering") == module.own_setting == module.task_settings_for(None)
    module.output_layer = 1
    assert module.task_settings_for("query").output_layer == 1  # entries follow the module's setting


def test_layer_setters_change_the_whole_setting_atomically(module):
    """A rejected property or booster change leaves the module's setting exactly as it was."""
    before = module.own_setting
    with pytest.raises(ValueError, match="cp_layer"):
        module.set_boosters("knowledge", demonstrations=[("A dog runs.", "Dog")], cp_layer=7)
    with pytest.raises(ValueError, match="tp_exit=9"):
        module.tp_exit = 9
    assert module.own_setting == before


def test_load_drops_saved_keys_it_does_not_know(tiny_llama, tmp_path):
    """A saved config with a key from a newer version still loads (the key is dropped), like Dense.load."""
    folder = _saved_old_model(tiny_llama, tmp_path)
    config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
    (folder / "sentence_bert_config.json").write_text(json.dumps({**config, "future_setting": 1}), encoding="utf-8")
    module = SentenceTransformer(str(folder), trust_remote_code=True)[0]
    assert module.template == ["pretended_cot", "knowledge"] and "future_setting" not in module.get_config_dict()


# ---------------------------------------------------------------------------------------------- layer span


@pytest.mark.parametrize(
    ("setting", "num_layers", "message"),
    [
        (Setting(layer_span=0), 4, "layer_span must be >= 1, got 0"),
        (Setting(layer_span=2.0), 4, "layer_span must be an integer"),
        (Setting(output_layer=2, layer_span=3), 4, "starts at layer 0"),
        (Setting(output_layer=-1, layer_span=5), 4, "layer_span=5 ending at output_layer -1 \\(layer 4\\)"),
        (Setting(output_layer=2, layer_span=3), None, "a span must start at layer 1 or later"),
    ],
)
def test_layer_span_validation_errors(setting, num_layers, message):
    """validate() refuses a layer_span that is not an int >= 1 or whose range starts below layer 1."""
    with pytest.raises(ValueError, match=message):
        setting.validate(num_layers)


def test_layer_span_valid_ranges_resolve_to_their_layers():
    """A span starting at layer 1 or later validates and output_layers() names the span's layers ending there."""
    Setting(output_layer=-1, layer_span=99).validate(None)  # the range is only known with the depth
    assert Setting(output_layer=-1, layer_span=4).output_layers(4) == (1, 2, 3, 4)
    assert Setting(output_layer=3, layer_span=3).output_layers(4) == (1, 2, 3)
    assert Setting(output_layer=-2).output_layers(4) == (3,)
    Setting(output_layer=3, layer_span=3).validate(4)


def test_layer_span_config_is_written_only_when_not_1():
    """to_config / combination write layer_span only when it is not 1; from_config and task entries read it."""
    assert "layer_span" not in Setting().to_config() and "layer_span" not in Setting().combination()
    setting = Setting(output_layer=3, layer_span=2)
    assert setting.to_config()["layer_span"] == 2 and setting.combination()["layer_span"] == 2
    assert Setting.from_config(setting.to_config()) == setting
    assert Setting.from_config(json.loads(json.dumps(setting.combination()))) == setting
    tasks = TaskSettings.from_config({"sts": {"layer_span": 2}}, Setting(output_layer=3))
    assert tasks["sts"].layer_span == 2 and tasks.to_config(Setting(output_layer=3)) == {"sts": {"layer_span": 2}}
    with pytest.raises(ValueError, match="unknown settings"):
        TaskSettings.from_config({"sts": {"layer_spam": 2}}, Setting())


def test_layer_span_label_and_changes():
    """label() shows a span other than 1 (``L26-28 mean``, ``L-1 mean of 3``); changes() counts it as one."""
    assert Setting(output_layer=28).label() == "prompteol, L28"
    assert Setting(output_layer=28, layer_span=3).label() == "prompteol, L26-28 mean"
    assert Setting(layer_span=3).label() == "prompteol, L-1 mean of 3"
    assert Setting(output_layer=28, layer_span=3).changes() == 1
    assert Setting(template="knowledge", layer_span=2).changes() == 2


def test_span_mean_is_the_mean_of_the_span_ending_at_each_layer():
    """span_mean(states, s)[:, k] is the mean of layers k-s+1..k, NaN for k < s; s=1 gives the states back; numpy
    and torch alike."""
    rng = np.random.default_rng(0)
    states = rng.normal(size=(2, 6, 5)).astype(np.float32)
    np.testing.assert_array_equal(span_mean(states, 1), states)
    out = span_mean(states, 3)
    assert out.shape == states.shape and out.dtype == np.float32
    assert np.isnan(out[:, :3]).all()
    for k in range(3, 6):
        np.testing.assert_allclose(out[:, k], states[:, k - 2 : k + 1].mean(1), rtol=1e-6, atol=1e-6)
    tensor = span_mean(torch.from_numpy(states), 3)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor.numpy(), out, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="span must be an integer >= 1"):
        span_mean(states, 0)


def test_layer_span_1_embeds_as_before(module):
    """An explicit layer_span=1 embeds bit-identically to the setting without it."""
    model = SentenceTransformer(modules=[module])
    before = model.encode(SENTENCES)
    with module.using(module.setting.replace(layer_span=1)):
        np.testing.assert_array_equal(model.encode(SENTENCES), before)


@pytest.mark.parametrize("template", ["prompteol", ("prompteol", "knowledge")], ids=["single", "ensemble"])
def test_layer_span_embedding_is_the_mean_of_the_single_layer_embeddings(module, template):
    """layer_span=3 at output layer 3 equals the mean of the embeddings of three Settings at layers 1, 2 and 3
    (for an ensemble too), and span_mean over the all-layer states gives the same."""
    model = SentenceTransformer(modules=[module])
    base = module.setting.replace(template=template)
    singles = []
    for layer in (1, 2, 3):
        with module.using(base.replace(output_layer=layer)):
            singles.append(model.encode(SENTENCES))
    with module.using(base.replace(output_layer=3, layer_span=3)):
        spanned = model.encode(SENTENCES)
        assert module.span_layers() == (1, 2, 3)
        with torch.inference_mode():
            states = module.embed(module.preprocess(SENTENCES), layers="all")
    np.testing.assert_allclose(spanned, np.mean(singles, axis=0), atol=1e-5)
    np.testing.assert_allclose(span_mean(states, 3)[:, 3].numpy(), spanned, atol=1e-5)
