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
from sentence_transformers_tp.joint_tuning import Candidate, tune_joint

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
        centering_sentences=20,
        batch_size=5,
        checkpoint=tmp_path_factory.mktemp("ckpt") / "joint.json",
    )


def test_stages_run_the_stated_number_of_passes(result):
    """Stage 1: 2 x 2 passes, stage 2: 1, stage 3: 2, stage 4: vanilla + finalists, stage 6: 2 (second dev set)."""
    by_data = {d: [p for p in result.passes if p.data == d] for d in ("sample", "full", "second")}
    assert len(by_data["sample"]) == 4 + 1 + 2
    first = Candidate.from_setting(by_data["full"][0].setting)
    assert 2 <= len(by_data["full"]) <= 3 and first == Candidate("prompteol")
    assert len(by_data["second"]) == 2
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
    """Centering is measured on unlabeled train sentences; the second dev set reports the winner and vanilla."""
    assert result.centering_gain is not None and isinstance(result.centering_chosen, bool)
    assert result.second["data"] == "sickr/trial"
    assert {"winner_at_layer", "vanilla_at_its_layer"} <= set(result.second)


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


def test_final_sample_stands_in_for_all_pairs_and_is_recorded(module, data_dir):
    """final_sample scores stages 4-6 on a seeded sample of that size; the combination entry records both sizes."""
    from sentence_transformers_tp.joint_tuning import combination_entry

    small = tune_joint(
        module,
        data_dir,
        sample=12,
        templates=("prompteol",),
        tp_bands=[],
        demonstrations=[],
        cp_layers=[],
        finalists=1,
        final_sample=10,
        centering_sentences=0,
        batch_size=6,
    )
    assert (small.settings["n_pairs"], small.settings["split_pairs"]) == (10, 24)
    assert {p.data for p in small.passes} == {"sample", "full", "second"}
    entry = combination_entry(json.loads(json.dumps(small.to_dict())))
    assert (entry["score"]["n_pairs"], entry["score"]["of_pairs"]) == (10, 24)
    with pytest.raises(ValueError, match="final_sample"):
        tune_joint(module, data_dir, final_sample=0)
