"""Tuning of the TP layers and the output layer: grid correctness, winner rules, presets and the ``st-tp tune`` CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.cli import main
from sentence_transformers_tp.evaluation import STSData, cosine_scores, evaluate_sts
from sentence_transformers_tp.presets import Preset, get_preset, load_preset_file
from sentence_transformers_tp.tuning import (
    TP_OFF,
    TuningResult,
    default_tp_exits,
    encode_all_layers,
    parse_int_list,
    tune,
)

WORDS = ["man", "woman", "dog", "cat", "child", "chef", "pilot", "horse"]
ACTIONS = ["plays a guitar", "runs in the park", "sleeps on the sofa", "slices an onion", "rides a bike"]


def make_pairs(n: int = 24, seed: int = 0) -> tuple[list[str], list[str], list[float]]:
    """Deterministic pseudo-random STS pairs (with some repeated sentences) and gold scores."""
    rng = np.random.default_rng(seed)
    sentence = lambda: f"A {WORDS[rng.integers(len(WORDS))]} {ACTIONS[rng.integers(len(ACTIONS))]}."
    left = [sentence() for _ in range(n)]
    right = [sentence() for _ in range(n)]
    gold = [float(x) for x in rng.uniform(0, 5, size=n).round(2)]
    return left, right, gold


def write_sts(root: Path, left: list[str], right: list[str], gold: list[float], split: str = "dev") -> Path:
    """Write ``root/sts/stsb/<split>.tsv`` in the evaluation data layout and return ``root``."""
    folder = root / "sts" / "stsb"
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["sentence1\tsentence2\tscore", *(f"{a}\t{b}\t{s}" for a, b, s in zip(left, right, gold))]
    (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def module(tiny_llama) -> TokenPrependingTransformer:
    """A PromptEOL TP module on the tiny 4-layer Llama."""
    return TokenPrependingTransformer(str(tiny_llama), "prompteol", tp_start=1, tp_exit=3, output_layer=2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A data directory with 24 STS-B dev pairs."""
    return write_sts(tmp_path_factory.mktemp("data"), *make_pairs())


@pytest.fixture(scope="module")
def result(module, data_dir) -> TuningResult:
    """The full tuning grid of the tiny module on the tiny data (batch size 5, so batches are padded)."""
    return tune(module, data_dir, batch_size=5)


def test_default_candidates_and_int_lists():
    """Default tp_exit candidates are tp_start+1..min(12, L); int lists accept ranges and commas."""
    assert default_tp_exits(30) == list(range(2, 13))
    assert default_tp_exits(4) == [2, 3, 4]
    assert default_tp_exits(18, tp_start=0) == list(range(1, 13))
    assert parse_int_list("2-5,8, 8,10") == [2, 3, 4, 5, 8, 10]
    assert parse_int_list("-1,3") == [-1, 3]
    with pytest.raises(ValueError, match="abc"):
        parse_int_list("2,abc")


def test_grid_covers_vanilla_every_candidate_and_every_layer(result):
    """The grid has TP off plus (1, e) for e in 2..4, each with L + 1 = 5 layer scores; metadata is recorded."""
    assert result.keys() == [TP_OFF, (1, 2), (1, 3), (1, 4)]
    assert all(len(scores) == 5 for scores in result.grid.values())
    assert (result.task, result.split, result.n_pairs, result.num_layers) == ("stsb", "dev", 24, 4)
    assert result.n_sentences == len(set(make_pairs()[0] + make_pairs()[1]))


@pytest.mark.parametrize(
    ("key", "output_layer"),
    [(TP_OFF, -1), (TP_OFF, 2), ((1, 2), 1), ((1, 3), 3), ((1, 4), -1), ((1, 4), 2)],
)
def test_single_pass_scores_equal_separate_full_encodes(tiny_llama, data_dir, result, key, output_layer):
    """Each grid cell equals evaluate_sts of a model built with that (tp_start, tp_exit, output_layer)."""
    start, exit_ = (1, 1) if key == TP_OFF else key
    model = SentenceTransformer(
        modules=[
            TokenPrependingTransformer(
                str(tiny_llama), "prompteol", tp_start=start, tp_exit=exit_, output_layer=output_layer
            )
        ]
    )
    expected = evaluate_sts(model, data_dir, tasks=["stsb"], split="dev", batch_size=5).tasks["stsb"].spearman
    assert abs(result.cell(key, output_layer).spearman - expected) <= 1e-6


def test_all_layer_states_match_module_output_for_metaeol(tiny_llama):
    """For MetaEOL (8 prompts averaged) the per-layer states equal the module's embedding at that layer."""
    texts = ["A dog runs.", "Two men are playing chess in the park today.", "x"]
    meta = TokenPrependingTransformer(str(tiny_llama), "metaeol", tp_start=1, tp_exit=3, output_layer=-1)
    states = encode_all_layers(meta, texts, tp_start=1, tp_exit=3, batch_size=2)
    assert states.shape == (3, 5, 32)
    for layer in (0, 2, 4):
        meta.output_layer = layer
        expected = SentenceTransformer(modules=[meta]).encode(texts, batch_size=2)
        np.testing.assert_allclose(states[:, layer], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("template", ["prompteol", "metaeol"])
@pytest.mark.parametrize(("tp_start", "tp_exit"), [(1, 3), (1, 1)])
def test_all_layer_states_use_the_prefix_cache_and_match_the_uncached_pass(tiny_llama, template, tp_start, tp_exit):
    """The tuner runs on top of the cached template prefixes (one entry per prompt) and equals the uncached pass."""
    texts = ["A dog runs.", "Two men are playing chess in the park today.", "x", 'He said "hi".']
    cached = TokenPrependingTransformer(str(tiny_llama), template)
    uncached = TokenPrependingTransformer(str(tiny_llama), template, prefix_cache=False)
    states = encode_all_layers(cached, texts, tp_start=tp_start, tp_exit=tp_exit, batch_size=3)
    expected = encode_all_layers(uncached, texts, tp_start=tp_start, tp_exit=tp_exit, batch_size=3)
    np.testing.assert_allclose(states, expected, atol=1e-5, rtol=1e-5)
    assert len(cached._prefix_kv) == (8 if template == "metaeol" else 1)
    assert len(uncached._prefix_kv) == 0


def test_tuning_leaves_module_settings_unchanged(module, result):
    """tune restores the module's own tp_start/tp_exit/output_layer."""
    assert (module.tp_start, module.tp_exit, module.output_layer) == (1, 3, 2)


def test_planted_best_configuration_is_found(module):
    """Gold scores equal to the cosines of TP 1-3 (tp_exit 3) at the final layer make that cell the unique winner."""
    left, right, _ = make_pairs(30, seed=1)
    texts = list(dict.fromkeys(left + right))
    states = encode_all_layers(module, texts, tp_start=1, tp_exit=3)
    row = {text: i for i, text in enumerate(texts)}
    gold = cosine_scores(states[[row[t] for t in left], 4], states[[row[t] for t in right], 4])
    planted = tune(module, data=STSData(left, right, [float(g) for g in gold]))
    best = planted.best
    assert (best.tp_start, best.tp_exit, best.output_layer) == (1, 3, 4)
    assert best.settings() == {"tp_start": 1, "tp_exit": 3, "output_layer": -1}
    assert best.spearman == pytest.approx(100.0)
    others = [
        v for key, scores in planted.grid.items() for layer, v in enumerate(scores) if (key, layer) != ((1, 3), 4)
    ]
    assert max(v for v in others if not math.isnan(v)) < 100.0 - 1e-9


def test_identical_cells_tie_to_the_narrower_band(module):
    """Layer k only sees replacements before layers < k, so TP 1-3 and 1-4 tie at layer 3; the narrower band wins."""
    left, right, _ = make_pairs(30, seed=2)
    texts = list(dict.fromkeys(left + right))
    states = encode_all_layers(module, texts, tp_start=1, tp_exit=3)
    row = {text: i for i, text in enumerate(texts)}
    gold = cosine_scores(states[[row[t] for t in left], 3], states[[row[t] for t in right], 3])
    planted = tune(module, data=STSData(left, right, [float(g) for g in gold]), tp_exits=[3, 4])
    assert planted.grid[(1, 3)][3] == pytest.approx(planted.grid[(1, 4)][3], abs=1e-9)
    assert (planted.best.tp_exit, planted.best.output_layer) == (3, 3)


def test_winner_is_never_below_the_best_vanilla_layer(result):
    """Vanilla is in the search space: the winner scores at least as high as every TP-off layer and every cell."""
    finite = [v for scores in result.grid.values() for v in scores if not math.isnan(v)]
    vanilla = [v for v in result.grid[TP_OFF] if not math.isnan(v)]
    assert result.best.spearman >= max(vanilla)
    assert result.best.spearman == pytest.approx(max(finite))
    assert result.best_vanilla.spearman == pytest.approx(max(vanilla))


def fake_result(off: list[float], tp: dict[tuple[int, int], list[float]], min_gain: float = 0.0) -> TuningResult:
    """A result with a hand-made grid (2 layers)."""
    return TuningResult(grid={TP_OFF: off, **tp}, num_layers=2, backbone="tiny", n_pairs=10, min_gain=min_gain)


def test_ties_prefer_vanilla_then_simpler_settings():
    """Exact ties go to TP off, then to the narrower TP band, then to the final layer; min_gain protects vanilla."""
    tie = fake_result([50.0, 70.0, 60.0], {(1, 2): [50.0, 60.0, 70.0]})
    assert not tie.best.tp_enabled and tie.best.output_layer == 1
    better = fake_result([50.0, 70.0, 60.0], {(1, 2): [50.0, 60.0, 70.5]})
    assert better.best.key == (1, 2) and better.best.preset_output_layer == -1
    assert fake_result([50.0, 70.0, 60.0], {(1, 2): [50.0, 60.0, 70.5]}, min_gain=1.0).best.key == TP_OFF
    bands = fake_result([1.0, 1.0, 1.0], {(1, 2): [0.0, 80.0, 0.0], (1, 3): [0.0, 80.0, 0.0]})
    assert bands.best.key == (1, 2)
    layers = fake_result([1.0, 80.0, 80.0], {})
    assert layers.best.output_layer == 2
    nan = fake_result([float("nan"), 10.0, float("nan")], {(1, 2): [float("nan")] * 3})
    assert nan.best.key == TP_OFF and nan.best.output_layer == 1


def test_result_serialises_and_renders(result, tmp_path):
    """to_dict / from_dict round-trip the grid; to_markdown has a row per setting and the per-layer grid."""
    path = result.save_json(tmp_path / "grid.json")
    again = TuningResult.from_dict(json.loads(path.read_text()))
    assert again.keys() == result.keys()
    for key in result.grid:
        np.testing.assert_allclose(again.grid[key], result.grid[key], atol=1e-5)
    assert again.best.settings() == result.best.settings()
    text = result.to_markdown()
    assert "TP off (vanilla)" in text and "| layer | off | 1..1 | 1..2 | 1..3 |" in text
    assert text.count("\n| 4 (L) |") == 1


def test_to_preset_writes_score_and_updates_a_base_preset(result):
    """to_preset stores the winner with status tuned and its score; a base preset keeps its other templates."""
    preset = result.to_preset("tiny", command="st-tp tune --model tiny")
    entry = preset.templates["prompteol"]
    assert preset.settings("prompteol") == result.best.settings()
    assert entry["status"] == "tuned" and entry["command"] == "st-tp tune --model tiny"
    assert set(entry["score"]) == {
        "task",
        "split",
        "n_pairs",
        "spearman",
        "vanilla_best_spearman",
        "vanilla_best_layer",
    }
    assert entry["score"]["spearman"] >= entry["score"]["vanilla_best_spearman"]
    base = Preset(
        name="tiny",
        backbone="tiny",
        templates={"knowledge": {"tp_start": 1, "tp_exit": 2, "output_layer": -2}},
        num_layers=4,
    )
    merged = result.to_preset(base=base)
    assert set(merged.templates) == {"knowledge", "prompteol"} and base.templates.keys() == {"knowledge"}
    with pytest.raises(ValueError, match="layers"):
        result.to_preset(base=Preset(name="x", backbone="x", templates=base.templates, num_layers=30))


def test_to_preset_rejects_user_templates():
    """Presets only hold built-in templates, so a user template's result cannot become one."""
    custom = TuningResult(
        grid={TP_OFF: [1.0, 2.0]}, num_layers=1, template="Say {sentence} in one word:", backbone="b"
    )
    with pytest.raises(ValueError, match="built-in"):
        custom.to_preset()


def test_checkpoint_skips_finished_passes(module, data_dir, tmp_path, monkeypatch):
    """A rerun with the same checkpoint reuses every finished pass instead of encoding again."""
    checkpoint = tmp_path / "ckpt.json"
    first = tune(module, data_dir, tp_exits=[2, 3], checkpoint=checkpoint)
    import sentence_transformers_tp.tuning.passes as passes

    def fail(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(passes, "encode_all_layers", fail)
    again = tune(module, data_dir, tp_exits=[2, 3], checkpoint=checkpoint)
    assert again.keys() == first.keys()
    assert all(np.allclose(again.grid[k], first.grid[k], atol=1e-5, equal_nan=True) for k in first.grid)


def test_sample_tunes_on_a_seeded_draw_and_records_it(module, data_dir, tmp_path):
    """``sample`` tunes on the seeded draw, records it in the result and preset score, and keys the checkpoint."""
    checkpoint = tmp_path / "ckpt.json"
    result = tune(module, data_dir, tp_exits=[2], sample=10, sample_seed=4, checkpoint=checkpoint)
    assert result.n_pairs == 10
    assert result.to_dict()["sample"] == 10 and result.to_dict()["sample_seed"] == 4
    assert result.score_entry()["sample"] == 10 and result.score_entry()["sample_seed"] == 4
    assert TuningResult.from_dict(result.to_dict()).sample_seed == 4
    # Another draw of the same size must not reuse the checkpoint: its scores differ.
    other = tune(module, data_dir, tp_exits=[2], sample=10, sample_seed=5, checkpoint=checkpoint)
    assert not np.allclose(other.grid[TP_OFF], result.grid[TP_OFF], equal_nan=True)


def test_bad_candidates_and_data_are_rejected(module, data_dir):
    """tp_exit beyond the layers, a missing split and too few pairs give clear errors."""
    with pytest.raises(ValueError, match="exceed"):
        tune(module, data_dir, tp_exits=[2, 9])
    with pytest.raises(FileNotFoundError, match="test"):
        tune(module, data_dir, split="test")
    with pytest.raises(ValueError, match="at least 2"):
        tune(module, data_dir, limit=1)
    with pytest.raises(ValueError, match="template"):
        tune(module, data_dir, template="metaeol")


def test_cli_tune_writes_a_preset_and_a_loadable_model(tiny_llama, data_dir, tmp_path, capsys):
    """`st-tp tune --out --save --json` prints the grid, writes a valid preset and saves the tuned model."""
    out = tmp_path / "tiny.yaml"
    saved = tmp_path / "model"
    grid = tmp_path / "grid.json"
    argv = ["tune", "--model", str(tiny_llama), "--data-dir", str(data_dir), "--tp-exits", "2-4"]
    code = main([*argv, "--out", str(out), "--name", "tiny", "--save", str(saved), "--json", str(grid)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Winner:" in printed and "| layer |" in printed
    preset = load_preset_file(out)
    data = json.loads(grid.read_text())
    assert preset.name == "tiny" and preset.num_layers == 4 and preset.status == "tuned"
    assert preset.settings("prompteol") == {k: data["best"][k] for k in ("tp_start", "tp_exit", "output_layer")}
    entry = preset.templates["prompteol"]
    assert entry["command"].startswith("st-tp tune --model") and "--out" in entry["command"]
    assert entry["score"]["spearman"] == pytest.approx(data["best"]["spearman"], abs=0.01)
    model = SentenceTransformer(str(saved), trust_remote_code=True)
    tp = model[0]
    assert {"tp_start": tp.tp_start, "tp_exit": tp.tp_exit, "output_layer": tp.output_layer} == preset.settings(
        "prompteol"
    )
    # The saved model reproduces the tuned score.
    score = evaluate_sts(model, data_dir, tasks=["stsb"], split="dev").tasks["stsb"].spearman
    assert score == pytest.approx(data["best"]["spearman"], abs=1e-4)

    # A second template updates the same file and keeps the first one; from_preset builds the tuned model.
    assert main([*argv, "--template", "knowledge", "--out", str(out)]) == 0
    both = get_preset(out)
    assert set(both.templates) == {"prompteol", "knowledge"}
    built = TokenPrependingTransformer.from_preset(str(out), "knowledge", model_name_or_path=str(tiny_llama))
    assert {"tp_start": built.tp_start, "tp_exit": built.tp_exit, "output_layer": built.output_layer} == (
        both.settings("knowledge")
    )


def test_cli_tune_reports_errors(tiny_llama, tmp_path, capsys):
    """A data directory without the split gives a one-line error and exit code 1."""
    assert main(["tune", "--model", str(tiny_llama), "--data-dir", str(tmp_path)]) == 1
    assert "st-tp tune: error:" in capsys.readouterr().err
