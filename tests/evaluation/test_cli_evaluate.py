"""``st-tp evaluate`` run in-process on a tiny random backbone and the STS fixture (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentence_transformers_tp.cli import main
from sentence_transformers_tp.evaluation import evaluate_sts, plan_variants
from sentence_transformers_tp.evaluation.report import validate_result_dict
from sentence_transformers_tp.evaluation.variants import (
    ROLE_MODEL,
    ROLE_VANILLA_SAME_LAYER,
    ROLE_VANILLA_USUAL_LAYER,
    Variant,
    apply_variant,
)
from sentence_transformers_tp.factory import build_model
from sentence_transformers_tp.module import TokenPrependingTransformer

from .conftest import FIXTURE_DATA


def _evaluate(tmp_path: Path, *args: str) -> tuple[int, list[dict]]:
    """Run ``st-tp evaluate`` on the fixture (dev split) and return the exit code and the JSON rows."""
    out = tmp_path / "result.json"
    code = main(
        ["evaluate", "--data-dir", str(FIXTURE_DATA), "--split", "dev", "--no-progress", "--json", str(out), *args]
    )
    return code, json.loads(out.read_text(encoding="utf-8")) if out.exists() else []


def test_json_output_follows_the_result_schema(tiny_llama, tmp_path, capsys):
    """One STS entry per row, valid under the report schema, with the dev split resolved per task."""
    code, rows = _evaluate(tmp_path, "--model", str(tiny_llama), "--limit", "3", "--batch-size", "4")
    assert code == 0
    assert len(rows) == 1
    row = rows[0]
    validate_result_dict(row)
    assert row["kind"] == "sts" and row["metric"] == "spearman"
    assert {name: entry["split"] for name, entry in row["tasks"].items()} == {"STS-B": "dev", "SICK-R": "trial"}
    assert all(entry["n_pairs"] == 3 for entry in row["tasks"].values())
    assert row["settings"]["limit"] == 3 and row["settings"]["split"] == "dev" and row["settings"]["seconds"] >= 0
    assert row["config"]["roles"] == [ROLE_MODEL] and row["config"]["tp_enabled"] is True
    out = capsys.readouterr().out
    assert out.startswith("| Model | STS-B | SICK-R | Avg |") and row["label"] in out


def test_sample_option_scores_a_seeded_draw(tiny_llama, tmp_path, capsys):
    """--sample N --seed S scores N random pairs per task and records both; --limit with --sample is refused."""
    code, rows = _evaluate(tmp_path, "--model", str(tiny_llama), "--sample", "3", "--seed", "7", "--tasks", "STS-B")
    assert code == 0
    (row,) = rows
    validate_result_dict(row)
    assert row["tasks"]["STS-B"]["n_pairs"] == 3
    assert row["settings"]["sample"] == 3 and row["settings"]["sample_seed"] == 7
    with pytest.raises(SystemExit):
        main(["evaluate", "--data-dir", str(FIXTURE_DATA), "--limit", "3", "--sample", "3"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_compare_vanilla_adds_same_layer_and_usual_layer_rows(tiny_llama, tmp_path, capsys):
    """--compare-vanilla: TP row, no-TP row at the same layer, no-TP row at the template's usual layer (-2)."""
    args = ["--model", str(tiny_llama), "--template", "pretended_cot", "--tp-start", "1", "--tp-exit", "3"]
    code, rows = _evaluate(tmp_path, *args, "--output-layer", "2", "--compare-vanilla", "--tasks", "STS-B")
    assert code == 0
    settings = [(r["config"]["tp_start"], r["config"]["tp_exit"], r["config"]["output_layer"]) for r in rows]
    assert settings == [(1, 3, 2), (1, 1, 2), (1, 1, -2)]
    assert [r["config"]["roles"] for r in rows] == [
        [ROLE_MODEL],
        [ROLE_VANILLA_SAME_LAYER],
        [ROLE_VANILLA_USUAL_LAYER],
    ]
    assert [r["config"]["tp_enabled"] for r in rows] == [True, False, False]
    assert [r["label"] for r in rows] == [
        "Pretended CoT + TP 1:3, L2",
        "Pretended CoT, L2 (no TP)",
        "Pretended CoT, L-2 (no TP, usual layer)",
    ]
    assert len({r["model"] for r in rows}) == 3  # a distinct automatic model name per configuration
    for row in rows:
        validate_result_dict(row)
        assert list(row["tasks"]) == ["STS-B"]
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + 3 and all(f"| {r['label']} |" in "\n".join(table) for r in rows)


def test_vanilla_rows_match_separately_built_models(tiny_llama):
    """Each planned variant scores exactly as a model built with its settings, and the settings are restored."""
    model = build_model(str(tiny_llama), "knowledge", tp_start=1, tp_exit=3, output_layer=1, device="cpu")
    variants = plan_variants(model)
    assert [(v.tp_start, v.tp_exit, v.output_layer) for v in variants] == [(1, 3, 1), (1, 1, 1), (1, 1, -2)]
    name = model.model_card_data.model_name
    for variant in variants:
        with apply_variant(model, variant) as configured:
            shared = evaluate_sts(configured, FIXTURE_DATA, split="dev", batch_size=4).avg
        fresh_model = build_model(
            str(tiny_llama),
            "knowledge",
            tp_start=variant.tp_start,
            tp_exit=variant.tp_exit,
            output_layer=variant.output_layer,
            device="cpu",
        )
        assert shared == pytest.approx(
            evaluate_sts(fresh_model, FIXTURE_DATA, split="dev", batch_size=4).avg, abs=1e-6
        )
    module = model[0]
    assert (module.tp_start, module.tp_exit, module.output_layer) == (1, 3, 1)
    assert model.model_card_data.model_name == name


def test_coinciding_variants_are_merged(tiny_llama):
    """PromptEOL already at its usual layer: the two vanilla roles are one computation, listed once."""
    model = build_model(str(tiny_llama), "prompteol", tp_start=1, tp_exit=3, device="cpu")
    variants = plan_variants(model)
    assert [(v.tp_exit, v.output_layer, v.roles) for v in variants] == [
        (3, -1, (ROLE_MODEL,)),
        (1, -1, (ROLE_VANILLA_SAME_LAYER, ROLE_VANILLA_USUAL_LAYER)),
    ]
    assert variants[1].label == "PromptEOL, L-1 (no TP, usual layer)"
    assert plan_variants(model, compare_vanilla=False) == variants[:1]


def test_invalid_variant_leaves_the_module_unchanged(tiny_llama):
    """apply_variant rejects settings the backbone cannot take and restores the previous ones."""
    model = build_model(str(tiny_llama), "prompteol", tp_start=1, tp_exit=3, device="cpu")
    with pytest.raises(ValueError, match="output_layer"):
        with apply_variant(model, Variant("bad", 1, 1, 99)):
            pass
    assert (model[0].tp_start, model[0].tp_exit, model[0].output_layer) == (1, 3, -1)


def test_saved_model_compare_vanilla(tiny_llama, tmp_path):
    """A saved TP folder evaluates with --compare-vanilla; its vanilla row equals a model that uses the saved
    folder itself as backbone."""
    saved = tmp_path / "saved"
    build_model(str(tiny_llama), "pretended_cot", tp_start=1, tp_exit=3, output_layer=-1, device="cpu").save(
        str(saved)
    )
    code, rows = _evaluate(tmp_path, "--model", str(saved), "--compare-vanilla", "--batch-size", "4")
    assert code == 0
    assert [r["config"]["output_layer"] for r in rows] == [-1, -1, -2]
    rebuilt = TokenPrependingTransformer(str(saved), "pretended_cot", tp_start=1, tp_exit=1, output_layer=-2)
    from sentence_transformers import SentenceTransformer

    reference = evaluate_sts(SentenceTransformer(modules=[rebuilt], device="cpu"), FIXTURE_DATA, split="dev")
    assert rows[2]["avg"] == pytest.approx(reference.avg, abs=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data-dir", "/nonexistent/data"], "data directory not found: /nonexistent/data"),
        (["--data-dir", str(FIXTURE_DATA), "--tasks", "STS-B", "NoSuchTask"], "unknown task 'NoSuchTask'"),
        (["--data-dir", str(FIXTURE_DATA), "--tasks", "STS13"], "splits available for sts13: none"),
        (["--data-dir", str(FIXTURE_DATA), "--split", "train"], "no STS task in"),
    ],
)
def test_errors_exit_nonzero_with_a_clear_message(args, message, capsys):
    """Bad data dir, task name or split: exit code 1 and a one-line message, before any model is loaded."""
    assert main(["evaluate", "--model", "/nonexistent/model", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("st-tp evaluate: error: ") and message in err


def test_mteb_rows_match_direct_sts(tiny_llama, tmp_path):
    """--mteb adds MTEB rows (kind "mteb") whose scores equal the direct STS evaluation."""
    code, rows = _evaluate(tmp_path, "--model", str(tiny_llama), "--mteb", "--tasks", "SICK-R", "--batch-size", "4")
    assert code == 0
    assert [r["kind"] for r in rows] == ["sts", "mteb"]
    validate_result_dict(rows[1])
    assert rows[1]["tasks"]["SICK-R"]["spearman"] == pytest.approx(rows[0]["tasks"]["SICK-R"]["spearman"], abs=1e-6)


def test_transfer_rows(tiny_llama, tmp_path):
    """--transfer with only a transfer task named runs the SentEval transfer evaluation alone (kind "transfer")."""
    folder = tmp_path / "data" / "classification" / "cr"
    folder.mkdir(parents=True)
    lines = ["sentence\tlabel"]
    lines += [f"a man is playing a guitar {i} .\t1" for i in range(6)]
    lines += [f"a woman is slicing an onion {i} .\t0" for i in range(6)]
    (folder / "all.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "result.json"
    args = ["--data-dir", str(tmp_path / "data"), "--tasks", "CR", "--kfold", "2", "--compare-vanilla"]
    code = main(["evaluate", "--model", str(tiny_llama), *args, "--no-progress", "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [r["kind"] for r in rows] == ["transfer", "transfer"]
    for row in rows:
        validate_result_dict(row)
        assert list(row["tasks"]) == ["CR"] and 0.0 <= row["tasks"]["CR"]["accuracy"] <= 100.0


def test_records_name_demonstrations_cp_and_task_settings(tiny_llama, tmp_path, capsys):
    """Labels and JSON configs of a boosted model (demonstration, CP, task settings) name every booster, also in
    the no-TP comparison rows (which keep the boosters)."""
    saved = tmp_path / "boosted"
    module = TokenPrependingTransformer(
        str(tiny_llama),
        "knowledge",
        tp_start=1,
        tp_exit=3,
        output_layer=-2,
        demonstrations=[["A man is playing on a guitar and singing.", "Music"]],
        cp_layer=1,
        task_settings={"query": {"tp_exit": 1}},
    )
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(modules=[module], device="cpu").save(str(saved))
    code, rows = _evaluate(tmp_path, "--model", str(saved), "--compare-vanilla", "--tasks", "STS-B", "--limit", "3")
    assert code == 0
    assert [r["label"] for r in rows] == [
        "Knowledge + 1 demo + CP L1 ns 1 + TP 1:3, L-2 [query: no TP]",
        "Knowledge + 1 demo + CP L1 ns 1, L-2 (no TP, usual layer)",  # the query's TP-off changes nothing here
    ]
    config = rows[0]["config"]
    assert config["demonstrations"] == [["A man is playing on a guitar and singing.", "Music"]]
    assert (config["cp_layer"], config["cp_alpha"], config["cp_mode"]) == (1, 1.0, "ns")
    assert config["task_settings"] == {"query": {"tp_exit": 1}} and config["template"] == "knowledge"
    assert rows[1]["config"]["demonstrations"] == config["demonstrations"] and rows[1]["config"]["cp_layer"] == 1
    out = capsys.readouterr().out
    assert all(f"| {r['label']} |" in out for r in rows)
