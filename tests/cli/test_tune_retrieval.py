"""``st-tp tune-retrieval``: the search from the command line writes its report, JSON and the preset's task
settings, and rejects bad options before loading the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentence_transformers_tp.cli import main
from sentence_transformers_tp.presets import load_preset_file

from ..conftest import write_tiny_preset

BEIR = Path(__file__).parents[1] / "evaluation" / "fixtures" / "beir"


def test_tune_retrieval_writes_json_markdown_and_preset(tiny_llama, tmp_path, capsys):
    """The report is printed; --json holds the grid and task settings; --out adds them to the preset."""
    preset = write_tiny_preset(tmp_path / "tiny.yaml", tiny_llama)
    args = ["tune-retrieval", "--model", str(tiny_llama), "--retrieval", str(BEIR), "--sample", "0"]
    args += ["--corpus-sample", "-1", "--held-out", "0", "--tp-bands", "1-3", "--max-seq-length", "64"]
    args += ["--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"), "--out", str(preset)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Retrieval tuning" in out and "task_settings=" in out
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["settings"]["documents"] == 6 and summary["task_settings"]["document"]["max_seq_length"] == 64
    stored = load_preset_file(preset).task_settings
    assert stored["query"]["score"]["tuning_queries"] == 4 and stored["document"]["status"] == "tuned"
    assert (tmp_path / "r.md").read_text().startswith("## Retrieval tuning")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--query-templates", "retrieval_query"], "must include prompteol"),
        (["--document-templates", "prompteol,nope"], "unknown or no template"),
        (["--tp-bands", "1to3"], "cannot parse"),
        (["--sparse"], "add --hybrid"),
        (["--corpus-demonstrations", "-1"], "0 or more"),
        (["--sample", "0", "--corpus-demonstrations", "3"], "only 2 of the 6 documents can be drawn"),
    ],
)
def test_bad_options_are_one_line_errors(tiny_llama, capsys, extra, message):
    """A search without the vanilla baseline, an unknown template or a bad band is a one-line error (exit 1)."""
    args = ["tune-retrieval", "--model", str(tiny_llama), "--retrieval", str(BEIR), *extra]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_folder_is_reported_before_loading(capsys, tmp_path):
    """A missing BEIR folder is reported without loading any backbone."""
    assert main(["tune-retrieval", "--model", "no-such-model", "--retrieval", str(tmp_path / "none")]) == 1
    assert "no such folder" in capsys.readouterr().err


def test_tune_retrieval_hybrid_writes_the_fusion_as_the_preset_hybrid_block(tiny_llama, tmp_path, capsys):
    """--hybrid reports the fusion stage, records it in --json and writes a valid hybrid block with --out."""
    from sentence_transformers_tp.hybrid.preset import validate_fusion_block

    preset = write_tiny_preset(tmp_path / "tiny.yaml", tiny_llama)
    args = ["tune-retrieval", "--model", str(tiny_llama), "--retrieval", str(BEIR), "--sample", "0"]
    args += ["--corpus-sample", "-1", "--held-out", "0.25", "--tp-bands", "", "--no-default", "--hybrid"]
    args += ["--json", str(tmp_path / "r.json"), "--out", str(preset)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Hybrid fusion over dense, bm25" in out and "Tuned fusion: hybrid=" in out
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["hybrid"]["tuning_ndcg_at_10"] >= summary["hybrid"]["baselines"]["bm25"]["tuning"]
    stored = load_preset_file(preset)
    assert validate_fusion_block(stored.hybrid) == validate_fusion_block(summary["hybrid"]["block"])
    assert stored.hybrid["score"]["held_out_queries"] == 1 and stored.task_settings["query"]["status"] == "tuned"


def test_tune_retrieval_without_hybrid_leaves_the_preset_without_a_hybrid_block(tiny_llama, tmp_path):
    """The fusion stage is off by default: --out writes task settings only, --json has hybrid null."""
    preset = write_tiny_preset(tmp_path / "tiny.yaml", tiny_llama)
    args = ["tune-retrieval", "--model", str(tiny_llama), "--retrieval", str(BEIR), "--sample", "0"]
    args += ["--corpus-sample", "-1", "--held-out", "0", "--tp-bands", "", "--no-default"]
    args += ["--json", str(tmp_path / "r.json"), "--out", str(preset)]
    assert main(args) == 0
    assert json.loads((tmp_path / "r.json").read_text())["hybrid"] is None
    assert load_preset_file(preset).hybrid is None


def test_tune_retrieval_corpus_demonstrations_are_recorded_in_the_json(tiny_llama, tmp_path):
    """--corpus-demonstrations N records the drawn documents (relevant to no train query) and their labels."""
    args = ["tune-retrieval", "--model", str(tiny_llama), "--retrieval", str(BEIR), "--sample", "0"]
    args += ["--corpus-sample", "-1", "--held-out", "0", "--tp-bands", "", "--no-default"]
    args += ["--corpus-demonstrations", "2", "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    drawn = json.loads((tmp_path / "r.json").read_text())["corpus_demonstrations"]
    assert sorted(drawn["ids"]) == ["d3", "d5"] and set(drawn["labels"]) == {"d3", "d5"} and drawn["seconds"] >= 0
