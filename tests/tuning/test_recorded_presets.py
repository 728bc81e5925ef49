"""The one winner rule reproduces every tuned winner recorded in the packaged presets (configs/*.yaml) from the
grids recorded with them (docs/tuning.md, docs/results.md; transcribed in fixtures/recorded_tuning.json).

The presets hold only their winners' scores; the grids behind them are in the docs at 1-2 decimals, so scores are
compared to 0.005. The paper presets (llama, mistral, qwen2-7b, gemma-2-9b) were not tuned here: nothing to rerun.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentence_transformers_tp.presets import PRESET_DIR, load_preset_file
from sentence_transformers_tp.settings import Setting
from sentence_transformers_tp.tuning import TuningResult, choose_winner
from sentence_transformers_tp.tuning.cells import Scored

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "recorded_tuning.json").read_text(encoding="utf-8"))


def preset(name: str):
    """A packaged preset."""
    return load_preset_file(PRESET_DIR / f"{name}.yaml")


def nan_row(num_layers: int, layer: int, score: float) -> list[float]:
    """Scores of a pass recorded only at its best layer."""
    return [score if k == layer else float("nan") for k in range(num_layers + 1)]


@pytest.mark.parametrize("grid", RECORDED["layer_grids"], ids=lambda g: f"{g['preset']}-{g['template']}")
def test_layer_grid_winners_are_the_preset_template_entries(grid):
    """`st-tp tune`'s winner on the recorded grid is the preset's template entry, with its recorded scores."""
    entry = preset(grid["preset"]).templates[grid["template"]]
    rows = {key: [float("nan") if v is None else v for v in values] for key, values in grid["grid"].items()}
    result = TuningResult(
        grid={("off" if key == "off" else tuple(int(x) for x in key.split("-"))): row for key, row in rows.items()},
        num_layers=grid["num_layers"],
        template=grid["template"],
        min_gain=grid["min_gain"],
        n_pairs=grid["n_pairs"],
    )
    assert result.best.settings() == {key: entry[key] for key in ("tp_start", "tp_exit", "output_layer")}
    score = entry["score"]
    assert result.best.spearman == pytest.approx(score["spearman"], abs=0.005)
    assert result.best_vanilla.spearman == pytest.approx(score["vanilla_best_spearman"], abs=0.005)
    assert result.best_vanilla.preset_output_layer == score["vanilla_best_layer"]


@pytest.mark.parametrize("run", RECORDED["joint"], ids=lambda r: r["preset"])
def test_joint_winners_are_the_preset_combinations(run):
    """`st-tp tune-boosters`'s winner among the recorded full-data passes is the preset's combination (with a
    recorded second dev set: among vanilla and the finalists not below vanilla's best layer there)."""
    combination = preset(run["preset"]).combination
    passes = [
        Scored((Setting.from_config(c),), nan_row(run["num_layers"], k, s), data="full") for c, k, s in run["passes"]
    ]
    if "second" in run:
        floor, at_layer = run["second"]["vanilla_best"], run["second"]["at_layer"]
        passes = [passes[0], *(p for p, s in zip(passes[1:], at_layer[1:]) if s >= floor)]
    winner = choose_winner(passes, passes[0], run["min_gain"])
    layer = -1 if winner.best_layer == run["num_layers"] else winner.best_layer
    expected = Setting.from_config({key: combination[key] for key in combination if key not in ("status", "score")})
    assert winner.setting == expected.replace(output_layer=-1)
    assert layer == combination["output_layer"]
    assert winner.best == pytest.approx(combination["score"]["spearman"], abs=0.005)
    assert passes[0].best == pytest.approx(combination["score"]["vanilla_prompteol_best_spearman"], abs=0.005)


@pytest.mark.parametrize("run", RECORDED["retrieval"], ids=lambda r: r["preset"])
def test_retrieval_winners_are_the_preset_task_settings(run):
    """`st-tp tune-retrieval`'s winner on the recorded grid is the preset's query / document task settings."""
    task_settings = preset(run["preset"]).task_settings
    queries = [Setting.from_config(c) for c in run["query"]]
    documents = [Setting.from_config({**c, "max_seq_length": run["max_seq_length"]}) for c in run["document"]]
    cells = [
        Scored((q, d), nan_row(run["num_layers"], k, s))
        for q, row in zip(queries, run["cells"])
        for d, (s, k) in zip(documents, row)
    ]
    winner = choose_winner(cells, cells[0], run["min_gain"])
    layer = -1 if winner.best_layer == run["num_layers"] else winner.best_layer
    for task, setting in zip(("query", "document"), winner.settings):
        entry = {key: v for key, v in task_settings[task].items() if key not in ("status", "score", "command")}
        assert setting.replace(output_layer=entry["output_layer"]) == Setting.from_config(entry)
        assert layer == entry["output_layer"]
    score = task_settings["query"]["score"]
    assert winner.best == pytest.approx(score["ndcg_at_10"], abs=0.005)
    assert cells[0].best == pytest.approx(score["vanilla_prompteol_ndcg_at_10"], abs=0.005)
    assert cells[0].best_layer == score["vanilla_prompteol_layer"]
