from __future__ import annotations

import json
import math

import pytest

from sentence_transformers_tp.evaluation.report import (
    compare,
    config_label,
    load_result,
    result_to_dict,
    save_result,
    task_score,
    to_markdown,
    validate_result_dict,
)
from sentence_transformers_tp.evaluation.sts import STSResult, STSTaskResult
from sentence_transformers_tp.evaluation.transfer import TransferResult, TransferTaskResult


def sts_result(model: str = "org/base", shift: float = 0.0) -> STSResult:
    """A hand-made STS result: STS12 with two subsets and STS-B on test."""
    return STSResult(
        tasks={
            "sts12": STSTaskResult(
                task="sts12",
                split="test",
                spearman=60.0 + shift,
                n_pairs=6,
                subsets={"MSRpar": {"spearman": 50.0, "n_pairs": 3}, "OnWN": {"spearman": 70.0, "n_pairs": 3}},
            ),
            "stsb": STSTaskResult(task="stsb", split="test", spearman=80.0 + shift, n_pairs=5),
        },
        model=model,
        config={"template": "prompteol", "tp_layers": [1, 7]},
        settings={"limit": None},
    )


def transfer_result() -> TransferResult:
    """A hand-made transfer result with MR (CV) and SST2 (test)."""
    return TransferResult(
        tasks={
            "mr": TransferTaskResult("mr", "10-fold CV", 90.5, 91.0, 9000, 10000, 2, [1.0] * 10, 10, 10),
            "sst2": TransferTaskResult("sst2", "test", 95.0, 94.0, 100, 50, 2, [0.5]),
        },
        model="org/base",
    )


def test_sts_dict_follows_schema():
    """STS results serialise to {model, config, tasks: {name: {split, spearman, n_pairs, subsets}}, avg}."""
    data = result_to_dict(sts_result())
    assert {"kind", "metric", "model", "config", "settings", "tasks", "avg"} <= set(data)
    assert data["model"] == "org/base" and data["config"]["tp_layers"] == [1, 7]
    assert list(data["tasks"]) == ["STS12", "STS-B"]
    entry = data["tasks"]["STS12"]
    assert {"split", "spearman", "n_pairs", "subsets"} <= set(entry)
    assert entry["subsets"]["OnWN"] == {"spearman": 70.0, "n_pairs": 3}
    assert data["avg"] == pytest.approx(70.0)
    json.dumps(data, allow_nan=False)


def test_transfer_dict_follows_schema():
    """Transfer results use accuracy entries and the same top-level keys."""
    data = result_to_dict(transfer_result(), model="override/name", config={"extra": 1})
    assert data["kind"] == "transfer" and data["model"] == "override/name" and data["config"] == {"extra": 1}
    assert data["tasks"]["MR"]["accuracy"] == 90.5 and data["tasks"]["MR"]["C"] == [1.0] * 10
    assert task_score(data["tasks"]["SST2"]) == 95.0
    assert data["avg"] == pytest.approx(92.75)


def test_nan_scores_become_null_and_save_load_roundtrip(tmp_path):
    """Undefined scores are written as null (strict JSON) and files load back validated."""
    result = sts_result()
    result.tasks["stsb"].spearman = float("nan")
    path = tmp_path / "out" / "res.json"
    written = save_result(result, path)
    assert written["tasks"]["STS-B"]["spearman"] is None and written["avg"] is None
    assert "NaN" not in path.read_text()
    assert load_result(path) == written


def test_validate_rejects_malformed_dicts():
    """Dicts missing top-level keys, task splits, scores or STS fields are rejected with ValueError."""
    good = result_to_dict(sts_result())
    for broken in (
        {k: v for k, v in good.items() if k != "tasks"},
        {**good, "tasks": {"STS12": {"spearman": 1.0, "n_pairs": 1, "subsets": {}}}},
        {**good, "tasks": {"STS12": {"split": "test"}}},
        {**good, "tasks": {"STS12": {"split": "test", "spearman": 1.0}}},
        {**good, "avg": "high"},
    ):
        with pytest.raises(ValueError):
            validate_result_dict(broken)
    with pytest.raises(TypeError):
        result_to_dict(42)


def test_compare_renders_one_table_in_suite_order():
    """compare() gives one row per (label, result), suite-ordered columns, – for missing cells, and Avg."""
    extra = result_to_dict(sts_result("org/tp", shift=2.0))
    extra["tasks"]["SICK-R"] = {"split": "test", "spearman": 70.0, "n_pairs": 4, "subsets": {}}
    table = compare([("PromptEOL", sts_result()), ("PromptEOL + TP", extra)])
    lines = table.strip().splitlines()
    assert lines[0] == "| Model | STS12 | STS-B | SICK-R | Avg |"
    assert lines[1] == "|---|---:|---:|---:|---:|"
    assert lines[2] == "| PromptEOL | 60.00 | 80.00 | – | – |"
    assert lines[3] == "| PromptEOL + TP | 62.00 | 82.00 | 70.00 | 71.33 |"


def test_to_markdown_single_result_and_mixed_kinds():
    """to_markdown labels the row with the model name; STS and transfer columns can share a table."""
    table = to_markdown(sts_result())
    assert "| org/base | 60.00 | 80.00 | 70.00 |" in table
    mixed = compare([("sts", sts_result()), ("transfer", transfer_result())], digits=1)
    assert mixed.splitlines()[0] == "| Model | STS12 | STS-B | MR | SST2 | Avg |"
    only = compare([("t", transfer_result())], tasks=["SST2", "MR"])
    assert only.splitlines()[2] == "| t | 95.00 | 90.50 | 92.75 |"
    assert math.isclose(task_score({"score": 1.5}), 1.5) and task_score({"split": "x"}) is None


def test_compare_labels_unlabelled_rows_from_their_setting():
    """A row without label whose config is a records.describe() dict is labelled with the whole setting (demos,
    CP, task settings); a free-form config falls back to the model name."""
    config = {
        "backbone": "smollm2",
        "template": "knowledge",
        "query_template": None,
        "document_template": None,
        "demonstrations": [["A man is playing on a guitar and singing.", "Music"]],
        "tp_start": 1,
        "tp_exit": 1,
        "tp_enabled": False,
        "output_layer": 28,
        "cp_layer": None,
        "cp_alpha": None,
        "cp_mode": None,
        "cp_prompt": None,
        "max_seq_length": 512,
        "task_settings": {"query": {"template": "prompteol"}},
        "num_layers": 30,
        "roles": ["model"],
    }
    data = {**sts_result().to_dict(), "config": config}
    assert config_label(config) == "Knowledge + 1 demo, L28 (no TP) [query: PromptEOL]"
    assert "| Knowledge + 1 demo, L28 (no TP) [query: PromptEOL] |" in compare([("", data)])
    assert config_label(sts_result().to_dict()["config"]) is None
    assert "| org/base |" in compare([("", sts_result())])
