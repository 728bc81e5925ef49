"""``st-tp evaluate --retrieval DIR --hybrid``: one row per channel and the hybrid; MTEB's HybridSearch row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentence_transformers_tp.cli import main
from tests.hybrid.helpers import build_tiny_sparse_encoder

from .conftest import FIXTURE_DATA
from .test_retrieval import BEIR

pytest.importorskip("bm25s")


def _evaluate(tmp_path: Path, *args: str) -> tuple[int, list[dict]]:
    out = tmp_path / "result.json"
    code = main(
        [
            "evaluate",
            "--retrieval",
            str(BEIR),
            "--retrieval-split",
            "train",
            "--no-progress",
            "--json",
            str(out),
            *args,
        ]
    )
    return code, json.loads(out.read_text(encoding="utf-8")) if out.exists() else []


def test_hybrid_rows_in_the_table_and_json(tiny_llama, tmp_path, capsys) -> None:
    """--hybrid prints and records a dense, a bm25 and a hybrid row; --mteb adds MTEB HybridSearch's row, same nDCG@10."""
    code, rows = _evaluate(
        tmp_path, "--model", str(tiny_llama), "--hybrid", "--fusion-weights", "dense=0.3,bm25=0.7", "--mteb"
    )
    assert code == 0
    retrieval = [row for row in rows if row["kind"] == "retrieval"]
    labels = [row["label"] for row in retrieval]
    assert [label.rsplit(" ", 1)[-1] for label in labels[:2]] == ["dense", "bm25"]
    assert "hybrid rsf dense 0.30 + bm25 0.70" in labels[2]
    assert retrieval[2]["settings"]["hybrid_source"] == "given"
    out = capsys.readouterr().out
    assert all(label in out for label in labels)
    mteb_rows = [row for row in rows if row["label"].endswith("(MTEB HybridSearch)")]
    assert len(mteb_rows) == 1
    mteb_task = next(iter(mteb_rows[0]["tasks"].values()))
    assert mteb_task["score"] == pytest.approx(retrieval[2]["tasks"]["beir"]["ndcg_at_10"], abs=1e-3)


def test_hybrid_with_a_saved_sparse_encoder_and_index(tiny_llama, tmp_path) -> None:
    """--sparse-model adds the sparse channel; --hybrid-index saves the index and a rerun reuses it."""
    from sentence_transformers_tp.evaluation.retrieval import load_beir

    data = load_beir(BEIR, "train")
    sparse = build_tiny_sparse_encoder(tmp_path / "splade-src", [*data.documents(), *data.queries.values()])
    sparse.save(str(tmp_path / "splade"))
    args = ["--model", str(tiny_llama), "--hybrid", "--sparse-model", str(tmp_path / "splade"), "--fusion", "rrf"]
    code, rows = _evaluate(tmp_path, *args, "--hybrid-index", str(tmp_path / "index"))
    assert code == 0
    assert [row["label"].rsplit(" ", 1)[-1] for row in rows[:3]] == ["dense", "sparse", "bm25"]
    assert "hybrid rrf" in rows[3]["label"] and (tmp_path / "index" / "hybrid_index.json").is_file()
    stamp = (tmp_path / "index" / "hybrid_index.json").stat().st_mtime_ns
    code, again = _evaluate(tmp_path, *args, "--hybrid-index", str(tmp_path / "index"))
    assert code == 0 and (tmp_path / "index" / "hybrid_index.json").stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert [r["tasks"]["beir"]["ndcg_at_10"] for r in again] == [r["tasks"]["beir"]["ndcg_at_10"] for r in rows]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fusion", "rrf"], "need(s) --hybrid"),
        (["--hybrid", "--fusion-weights", "dense=x"], "is not a number"),
        (["--hybrid", "--fusion-weights", "colbert=1"], "CHANNEL=WEIGHT"),
        (["--hybrid", "--fusion-weights", "sparse=0.5,bm25=0.5"], "add --sparse or --sparse-model"),
        (["--sparse"], "need(s) --hybrid"),
        (["--hybrid", "--sparse", "--sparse-model", "x"], "not both"),
        (["--hybrid", "--sparse", "--mteb"], "use --sparse-model PATH"),
        (["--hybrid", "--sparse-model", "/nonexistent/splade"], "not found"),
        (["--hybrid", "--fusion", "rrf", "--hybrid-out", "p.yaml"], "leave out --fusion"),
        (["--hybrid", "--hybrid-out", "/nonexistent/preset.yaml"], "preset.yaml"),
        (["--hybrid-out", "p.yaml"], "need(s) --hybrid"),
    ],
)
def test_hybrid_option_errors(args, message, capsys) -> None:
    """Bad --hybrid options exit 1 with a one-line message before any model is loaded."""
    assert main(["evaluate", "--model", "/nonexistent/model", "--retrieval", str(BEIR), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("st-tp evaluate: error: ") and message in err


def test_hybrid_sparse_channel_of_the_model_itself(tiny_llama, tmp_path) -> None:
    """--sparse adds the PromptReps sparse channel of the model's own backbone: dense, sparse, bm25 and hybrid rows."""
    code, rows = _evaluate(tmp_path, "--model", str(tiny_llama), "--hybrid", "--sparse", "--fusion", "rsf")
    assert code == 0
    assert [row["label"].rsplit(" ", 1)[-1] for row in rows[:3]] == ["dense", "sparse", "bm25"]
    assert rows[3]["settings"]["hybrid"]["channels"] == ["dense", "sparse", "bm25"]


def test_hybrid_needs_retrieval(capsys) -> None:
    """--hybrid without --retrieval is an error."""
    assert main(["evaluate", "--model", "/nonexistent/model", "--data-dir", str(FIXTURE_DATA), "--hybrid"]) == 1
    assert "--hybrid needs --retrieval" in capsys.readouterr().err


def test_hybrid_out_stores_the_chosen_fusion_in_the_preset(tiny_llama, tmp_path) -> None:
    """--hybrid-out writes the fusion chosen on half of the queries as the preset's hybrid block, other keys kept."""
    import shutil

    from sentence_transformers_tp.presets import PRESET_DIR, load_preset_file

    preset = Path(shutil.copy(PRESET_DIR / "smollm2.yaml", tmp_path / "smollm2.yaml"))
    before = load_preset_file(preset)
    code, rows = _evaluate(tmp_path, "--model", str(tiny_llama), "--hybrid", "--hybrid-out", str(preset))
    assert code == 0
    hybrid_row = rows[-1]["settings"]
    assert hybrid_row["hybrid_source"] == "tuned"
    after = load_preset_file(preset)
    block = after.hybrid
    assert {key: block[key] for key in ("channels", "fusion", "weights")} == {
        key: hybrid_row["hybrid"][key] for key in ("channels", "fusion", "weights")
    }
    assert block["status"] == "tuned" and block["score"]["split"] == "train"
    assert block["score"]["documents"] == rows[0]["tasks"]["beir"]["n_docs"]
    assert (
        block["score"]["tuning_queries"] + block["score"]["held_out_queries"] == rows[0]["tasks"]["beir"]["n_queries"]
    )
    assert after.task_settings == before.task_settings and after.templates == before.templates
