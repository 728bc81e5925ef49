"""Joint tuning over templates, ensembles, demonstrations, TP, CP, layers and centering: stages, winner rules, scores
equal to a separate encode of the winner, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.evaluation import evaluate_sts
from sentence_transformers_tp.joint_tuning import Candidate, combination_entry, tune_joint
from sentence_transformers_tp.settings import Setting
from sentence_transformers_tp.tuning.cells import Scored, describe
from sentence_transformers_tp.tuning.passes import Search

from .conftest import write_tiny_preset
from .test_tuning import make_pairs, write_sts


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """STS-B dev (tuning), STS-B train (unlabeled centering text) and SICK-R trial (second dev set) fixtures."""
    root = tmp_path_factory.mktemp("joint")
    write_sts(root, *make_pairs(24, seed=0), split="dev")
    write_sts(root, *make_pairs(30, seed=1), split="train")
    sick = root / "sts" / "sickr"
    sick.mkdir(parents=True)
    left, right, gold = make_pairs(12, seed=2)
    rows = ["sentence1\tsentence2\tscore", *(f"{a}\t{b}\t{1 + s * 0.8:.2f}" for a, b, s in zip(left, right, gold))]
    (sick / "trial.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def module(tiny_llama) -> TokenPrependingTransformer:
    """The tiny 4-layer Llama (its own settings do not matter: every candidate sets its own)."""
    return TokenPrependingTransformer(str(tiny_llama), "prompteol", tp_start=1, tp_exit=1, output_layer=-1)


@pytest.fixture(scope="module")
def result(module, data_dir, tmp_path_factory):
    """A small joint search: 2 templates x (off + 1 band), 1 demonstration, 1 CP layer x (1 alpha + nr)."""
    return tune_joint(
        module,
        data_dir,
        sample=16,
        templates=("prompteol", ("pretended_cot", "knowledge")),
        tp_bands=[(1, 3)],
        demonstrations=[("A man is smoking.", "Smoking")],
        top_k=1,
        cp_layers=[1],
        cp_alphas=(2.0,),
        finalists=2,
        layer_spans=(),
        centering_sentences=20,
        batch_size=5,
        checkpoint=tmp_path_factory.mktemp("ckpt") / "joint.json",
    )


def test_stages_run_the_stated_number_of_passes(result):
    """Stage 1: 2 x 2 passes, stage 2: 1, stage 3: 2, stage 4: vanilla + finalists on all pairs and on the second set."""
    by_data = {d: [p for p in result.passes if p.data == d] for d in ("sample", "full", "second")}
    assert len(by_data["sample"]) == 4 + 1 + 2
    first = Candidate.from_setting(by_data["full"][0].setting)
    assert 2 <= len(by_data["full"]) <= 3 and first == Candidate("prompteol")
    assert [p.setting for p in by_data["second"]] == [p.setting for p in by_data["full"]]
    assert all(len(p.scores) == module_layers(result) for p in result.passes)


def module_layers(result) -> int:
    """Scores per pass: every output layer 0..num_layers."""
    return result.num_layers + 1


def test_winner_is_never_below_vanilla_and_matches_a_separate_encode(result, tiny_llama, data_dir):
    """The winner's full-data score is >= vanilla PromptEOL's best layer and equals evaluate_sts of the built model."""
    assert result.winner.best >= result.vanilla.best
    kwargs = result.module_kwargs()
    model = SentenceTransformer(modules=[TokenPrependingTransformer(str(tiny_llama), **kwargs)])
    score = evaluate_sts(model, data_dir, tasks=["stsb"], split="dev", batch_size=5).tasks["stsb"].spearman
    layer = result.output_layer % (result.num_layers + 1)
    assert score == pytest.approx(result.winner.scores[layer], abs=1e-4)


def test_centering_and_second_dev_set_are_reported(result):
    """Centering is measured on unlabeled train sentences; the second dev set reports the winner, vanilla's best layer
    and each finalist's score at its layer with its eligibility (not below vanilla's best there)."""
    assert result.centering_gain is not None and isinstance(result.centering_chosen, bool)
    second = result.second
    assert second["data"] == "sickr/trial"
    keys = {"winner_at_layer", "vanilla_at_its_layer", "vanilla_best_layer", "vanilla_best", "finalists"}
    assert keys <= set(second)
    on_second = {p.setting: p for p in result.passes if p.data == "second"}
    vanilla = on_second[result.vanilla.setting]
    assert (second["vanilla_best_layer"], second["vanilla_best"]) == (vanilla.best_layer, round(vanilla.best, 2))
    full = [p for p in result.passes if p.data == "full" and p.setting != result.vanilla.setting]
    assert [row["setting"] for row in second["finalists"]] == [describe(p.setting) for p in full]
    for row, item in zip(second["finalists"], full):
        score = on_second[item.setting].scores[item.best_layer]
        assert row["layer"] == item.best_layer and row["eligible"] == (score >= vanilla.best)
    eligible = {row["setting"] for row in second["finalists"] if row["eligible"]}
    assert result.winner is result.vanilla or describe(result.winner.setting) in eligible
    assert "eligible" in result.to_markdown()


def test_result_serialises_and_checkpoint_skips_finished_passes(result, module, data_dir, tmp_path):
    """to_dict is JSON, to_markdown names the winner, and a rerun with the checkpoint recomputes nothing."""
    data = json.loads(json.dumps(result.to_dict()))
    assert data["winner"]["label"] in result.to_markdown()
    checkpoint = tmp_path / "c.json"
    kwargs = dict(sample=16, templates=("prompteol",), tp_bands=[], demonstrations=[], cp_layers=[], finalists=1)
    first = tune_joint(
        module, data_dir, centering_sentences=0, second_task="", checkpoint=checkpoint, batch_size=5, **kwargs
    )
    again = tune_joint(
        module, data_dir, centering_sentences=0, second_task="", checkpoint=checkpoint, batch_size=5, **kwargs
    )
    np.testing.assert_equal([p.scores for p in again.passes], [p.scores for p in first.passes])
    assert all(p.seconds == q.seconds for p, q in zip(first.passes, again.passes))


def test_candidate_labels_and_simplicity():
    """Labels name every booster; the booster count orders ties."""
    plain = Candidate("prompteol")
    full = Candidate(("pretended_cot", "knowledge"), ("A man is smoking.", "Smoking"), (1, 3), (4, "ns", 2.0))
    assert full.label() == "pretended_cot+knowledge + demo(Smoking) + TP 1..2 + CP L4 ns 2"
    assert (plain.boosters, full.boosters) == (0, 4)
    assert full.module_kwargs(-1)["cp_layer"] == 4 and full.module_kwargs(-1)["demonstrations"] == [
        ["A man is smoking.", "Smoking"]
    ]


def test_winner_is_written_as_a_preset_combination(result, tiny_llama, tmp_path, monkeypatch):
    """write_combination stores the winner in a preset, and the default module of that backbone rebuilds it."""
    import sentence_transformers_tp.presets as presets
    from sentence_transformers_tp.joint_tuning import write_combination

    path = write_tiny_preset(tmp_path / "tiny.yaml", tiny_llama)
    summary = json.loads(json.dumps(result.to_dict()))
    write_combination(summary, path, "st-tp tune-boosters ...")
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    module = TokenPrependingTransformer(str(tiny_llama))
    kwargs = result.module_kwargs()
    assert (module.tp_start, module.tp_exit, module.output_layer) == (
        kwargs["tp_start"],
        kwargs["tp_exit"],
        kwargs["output_layer"],
    )
    assert module.cp_layer == kwargs.get("cp_layer") and module.template == kwargs["template"]
    stored = presets.load_preset_file(path).combination
    assert stored["command"] == "st-tp tune-boosters ..." and stored["score"]["n_pairs"] == 24
    record = stored["score"]["second_dev_set"]
    assert {"winner_at_layer", "vanilla_at_its_layer", "vanilla_best_layer", "vanilla_best"} <= set(record)
    assert all({"setting", "layer", "spearman", "eligible"} <= set(row) for row in record["finalists"])


def test_old_second_dev_set_records_still_load(tiny_llama, tmp_path):
    """A preset combination whose second_dev_set has only the old keys (winner_at_layer, vanilla_at_its_layer) loads."""
    import yaml

    import sentence_transformers_tp.presets as presets

    path = write_tiny_preset(tmp_path / "tiny.yaml", tiny_llama)
    data = yaml.safe_load(path.read_text())
    old = {"data": "sickr/trial", "winner_at_layer": 70.43, "vanilla_at_its_layer": 68.91}
    data["combination"] = {"template": "knowledge", "tp_start": 1, "tp_exit": 1, "output_layer": -1}
    data["combination"].update(status="tuned", score={"task": "stsb", "spearman": 80.6, "second_dev_set": old})
    path.write_text(yaml.safe_dump(data))
    assert presets.load_preset_file(path).combination["score"]["second_dev_set"] == old


class ScriptedSearch(Search):
    """A Search whose scores are scripted per data set and template (TP-on Settings score 0; no forward pass)."""

    scores: dict[tuple[str, str], list[float]] = {}

    def score(self, objective, setting, data, keep=False):
        """The scripted per-layer scores of ``(data, template)``, recorded like a real pass."""
        values = [0.0] * 5 if setting.tp_enabled else list(self.scores[(data, setting.template)])
        item = Scored((setting,), values, 0.0, data)
        self.passes.append(item)
        return item


def scripted_search(module, data_dir, monkeypatch, scores=None, **kwargs):
    """tune_joint over three templates (demonstrations, CP and centering off) with ScriptedSearch's scores, updated
    by ``scores``.

    On all pairs knowledge is best (60, layer 2), then pretended_cot (55, layer 3), then vanilla (50, layer 4); on the
    second set vanilla's best layer (1) scores 40, knowledge 35 at its layer 2 and pretended_cot 45 at its layer 3."""
    from sentence_transformers_tp.tuning import joint

    script = {
        ("sample", "prompteol"): [10, 10, 10, 10, 10],
        ("sample", "knowledge"): [30, 30, 30, 30, 30],
        ("sample", "pretended_cot"): [20, 20, 20, 20, 20],
        ("full", "prompteol"): [40, 40, 40, 40, 50],
        ("full", "knowledge"): [40, 40, 60, 40, 40],
        ("full", "pretended_cot"): [40, 40, 40, 55, 40],
        ("second", "prompteol"): [30, 40, 30, 30, 38],
        ("second", "knowledge"): [50, 50, 35, 50, 50],
        ("second", "pretended_cot"): [0, 0, 0, 45, 0],
    }
    monkeypatch.setattr(ScriptedSearch, "scores", {**script, **(scores or {})})
    monkeypatch.setattr(joint, "Search", ScriptedSearch)
    options = dict(templates=("prompteol", "knowledge", "pretended_cot"), tp_bands=[(1, 3)], demonstrations=[])
    options.update(cp_layers=[], finalists=3, centering_sentences=0, **kwargs)
    return tune_joint(module, data_dir, **options)


def test_a_finalist_below_vanilla_on_the_second_set_is_not_chosen(module, data_dir, monkeypatch):
    """The best finalist on STS-B scores below vanilla's best layer on the second set, so the next eligible one wins;
    without a second set (second_task="") the best finalist wins as before."""
    result = scripted_search(module, data_dir, monkeypatch)
    assert result.winner.setting.template == "pretended_cot" and result.output_layer == 3
    second = result.second
    assert (second["vanilla_best_layer"], second["vanilla_best"], second["vanilla_at_its_layer"]) == (1, 40, 38)
    assert second["winner_at_layer"] == 45
    rows = {row["setting"]: row for row in second["finalists"]}
    assert rows["knowledge"] == {"setting": "knowledge", "layer": 2, "spearman": 35, "eligible": False}
    assert rows["pretended_cot"] == {"setting": "pretended_cot", "layer": 3, "spearman": 45, "eligible": True}
    entry = combination_entry(json.loads(json.dumps(result.to_dict())))
    assert entry["score"]["second_dev_set"]["finalists"] == second["finalists"]
    alone = scripted_search(module, data_dir, monkeypatch, second_task="")
    assert alone.winner.setting.template == "knowledge" and alone.second == {}
    assert not [p for p in alone.passes if p.data == "second"]


def test_vanilla_wins_when_no_finalist_is_eligible(module, data_dir, monkeypatch):
    """With every finalist below vanilla's best layer on the second set, vanilla PromptEOL is the winner."""
    result = scripted_search(module, data_dir, monkeypatch, {("second", "pretended_cot"): [0, 0, 0, 39.9, 0]})
    assert result.winner is result.vanilla
    assert not any(row["eligible"] for row in result.second["finalists"])


def test_min_gain_applies_among_the_eligible_finalists(module, data_dir, monkeypatch):
    """An eligible finalist that does not beat vanilla by more than min_gain on all pairs does not win."""
    result = scripted_search(module, data_dir, monkeypatch, {("full", "pretended_cot"): [40, 40, 40, 50.1, 40]})
    assert result.winner is result.vanilla


def test_demonstration_screen_counts_its_passes_and_keeps_the_best(module, data_dir):
    """With screen_sample, every candidate gets one screen pass with the best stage-1 setting; only the screen_top
    best go on to stage 2, and the record counts the passes and their seconds."""
    candidates = [("A man is smoking.", "Smoking"), ("A cat naps.", "Sleep"), ("A dog runs.", "Running")]
    candidates.append(("meat from a deer.", "Venison"))
    options = dict(templates=("prompteol",), tp_bands=[(1, 3)], demonstrations=candidates, top_k=2, cp_layers=[])
    options.update(finalists=1, centering_sentences=0, second_task="", batch_size=6)
    result = tune_joint(module, data_dir, sample=16, screen_sample=8, screen_top=2, **options)
    screen = [p for p in result.passes if p.data == "screen"]
    best_stage1 = max(result.passes[:2], key=lambda p: p.best).setting
    assert [p.setting for p in screen] == [best_stage1.replace(demonstrations=(demo,)) for demo in candidates]
    record = result.screen
    assert (record["candidates"], record["sample"], record["passes"]) == (4, 8, 4)
    assert record["seconds"] == round(sum(p.seconds for p in screen), 1)
    ranked = sorted(screen, key=lambda p: -p.best)[:2]
    assert record["kept"] == [p.setting.demonstrations[0].word for p in ranked]
    stage2 = [p for p in result.passes if p.data == "sample" and p.setting.demonstrations]
    single = [p for p in stage2 if len(p.setting.demonstrations) == 1]
    assert len(single) == 2 * 2 and {p.setting.demonstrations[0].word for p in single} == set(record["kept"])
    assert [len(p.setting.demonstrations) for p in stage2 if p not in single] == [2]  # the 2 kept in one prompt
    assert "Demonstration screen: 4 candidates" in result.to_markdown() and result.to_dict()["screen"] == record
    unscreened = tune_joint(module, data_dir, sample=16, screen_sample=8, screen_top=4, **options)
    assert unscreened.screen == {} and not [p for p in unscreened.passes if p.data == "screen"]
    with pytest.raises(ValueError, match="screen_top"):
        tune_joint(module, data_dir, screen_top=0, **options)


def test_demonstration_extras_add_ck_a_template_ensemble_and_more_shots():
    """Stage 2 adds CK (searched, without a demonstration yet) and the two best single templates' ensemble, each
    with the best demonstration at the best template's band, then the best setting with its 2 best demonstrations
    in one prompt (3 when there are 3); nothing without stage-2 passes."""
    from sentence_transformers_tp.settings import Setting
    from sentence_transformers_tp.tuning.joint import demonstration_extras

    def scored(setting: Setting, best: float) -> Scored:
        return Scored((setting,), [0.0, best], data="sample")

    knowledge = Setting(template="knowledge", tp_start=1, tp_exit=4)
    stage1 = [scored(knowledge, 70.0), scored(Setting(template="pretended_cot"), 65.0), scored(Setting("ck"), 60.0)]
    music, smoking = ("A man plays a guitar.", "Music"), ("A man is smoking.", "Smoking")
    stage2 = [scored(knowledge.replace(demonstrations=(music,)), 72.0)]
    stage2.append(scored(knowledge.replace(demonstrations=(smoking,)), 71.0))
    extras = demonstration_extras(stage1, stage2, ("prompteol", "pretended_cot", "knowledge", "ck"))
    assert extras == [
        Setting(template="ck", demonstrations=(music,)),
        knowledge.replace(template=("knowledge", "pretended_cot"), demonstrations=(music,)),
        knowledge.replace(demonstrations=(music, smoking)),
    ]
    horse = ("A jockey riding a horse.", "Equestrian")
    stage2.append(scored(knowledge.replace(demonstrations=(horse,)), 71.5))
    stage2.append(scored(Setting(template="pretended_cot", demonstrations=(horse,)), 75.0))  # another base: its own
    extras = demonstration_extras(stage1, stage2[:3], ("knowledge",))
    assert extras[-2:] == [
        knowledge.replace(demonstrations=(music, horse)),
        knowledge.replace(demonstrations=(music, horse, smoking)),
    ]
    # The best base now holds only one demonstration: no multi-shot setting.
    assert all(len(s.demonstrations) == 1 for s in demonstration_extras(stage1, stage2, ("knowledge",)))
    assert demonstration_extras(stage1, [], ("ck",)) == []
    assert demonstration_extras(stage1, stage2, ("knowledge",))[0].template == ("knowledge", "pretended_cot")


def test_layer_spans_are_scored_from_the_same_passes_and_match_a_built_model(
    module, tiny_llama, data_dir, monkeypatch
):
    """Stage 4 scores vanilla and each finalist with the mean of 2 layers from the states of their own passes (no
    extra forward), and a span's score at a layer equals evaluate_sts of the model built with that layer_span."""
    forwards: list[Setting] = []
    embed = Search.embed
    monkeypatch.setattr(
        Search, "embed", lambda self, texts, setting: forwards.append(setting) or embed(self, texts, setting)
    )
    options = dict(templates=("prompteol",), tp_bands=[(1, 3)], demonstrations=[], cp_layers=[], finalists=1)
    options.update(centering_sentences=0, batch_size=5, sample=16)
    plain = tune_joint(module, data_dir, layer_spans=(), **options)
    plain_forwards = len(forwards)
    result = tune_joint(module, data_dir, layer_spans=(2,), **options)
    assert len(forwards) == 2 * plain_forwards and all(setting.layer_span == 1 for setting in forwards)
    spans = [p for p in result.passes if p.setting.layer_span == 2]
    assert len([p for p in spans if p.data == "full"]) == len([p for p in plain.passes if p.data == "full"])
    assert {p.data for p in spans} == {"full", "second"}
    span = next(p for p in spans if p.data == "full" and p.setting == Setting(layer_span=2))
    assert np.isnan(span.scores[:2]).all()
    built = TokenPrependingTransformer(
        str(tiny_llama), "prompteol", tp_start=1, tp_exit=1, output_layer=3, layer_span=2
    )
    report = evaluate_sts(SentenceTransformer(modules=[built]), data_dir, tasks=["stsb"], split="dev", batch_size=5)
    assert report.tasks["stsb"].spearman == pytest.approx(span.scores[3], abs=1e-4)
    assert "mean of 2 layers" in result.to_markdown()
