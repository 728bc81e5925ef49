"""``st-tp data``: Hub datasets converted into the evaluators' layout (fake rows, no network), offline message."""

from __future__ import annotations

import pytest

from sentence_transformers_tp.cli import main
from sentence_transformers_tp.data import list_sts_splits, list_transfer_tasks, load_sts, load_transfer
from sentence_transformers_tp.evaluation import download
from sentence_transformers_tp.evaluation.download import SOURCES, dataset_rows, download_data, resolve_tasks
from sentence_transformers_tp.evaluation.retrieval import load_beir


def fake_rows(dataset: str, config: str | None, split: str, revision: str | None) -> list[dict]:
    """Three rows of one Hub split, in the columns the real dataset has (labels already as names)."""
    if dataset == "mteb/scifact":
        if config == "corpus":
            return [{"_id": f"d{i}", "title": f"Title {i}", "text": f"Abstract\tnumber {i}."} for i in range(3)]
        if config == "queries":
            return [{"_id": f"q{i}", "text": f"Claim {i}?"} for i in range(3)]
        return [{"query-id": f"q{i}", "corpus-id": f"d{i}", "score": 1.0} for i in range(3)]
    if dataset.startswith("mteb/"):
        return [
            {"sentence1": f"A {split} sentence {i}.", "sentence2": f'He said "{i}"\nthen left.', "score": 1.5 * i}
            for i in range(3)
        ]
    if dataset == "CogComp/trec":
        return [{"text": f"How far is {i} ?", "coarse_label": "NUM", "fine_label": "NUM:dist"} for i in range(3)]
    if dataset == "nyu-mll/glue":
        return [
            {"sentence1": f"One {i} .", "sentence2": f"Two {i} .", "label": "equivalent", "idx": i} for i in range(3)
        ]
    column = "sentence" if dataset.startswith(("jxm/", "stanfordnlp/")) else "text"
    return [{column: f"{dataset} {split} {i} .", "label": i % 2} for i in range(6)]


def test_conversion_writes_the_layout_the_evaluators_read(tmp_path):
    """Every task's fake Hub rows become files that the STS, transfer and BEIR readers load, with clean lines."""
    written = download_data(tmp_path, load=fake_rows)
    assert set(written) == set(SOURCES)
    assert list_sts_splits(tmp_path) == [
        *((task, "test") for task in ("sts12", "sts13", "sts14", "sts15", "sts16")),
        ("stsb", "dev"),
        ("stsb", "test"),
        ("stsb", "train"),
        ("sickr", "test"),
    ]
    dev = load_sts(tmp_path, "STS-B", "dev")
    assert dev.scores == [0.0, 1.5, 3.0] and dev.sentence2[1] == 'He said "1" then left.'
    assert list_transfer_tasks(tmp_path) == ["mr", "cr", "subj", "mpqa", "sst2", "trec", "mrpc"]
    assert len(load_transfer(tmp_path, "MR")["all"]) == 12  # train + test
    assert len(load_transfer(tmp_path, "MRPC")["train"]) == 6  # GLUE train + validation
    assert load_transfer(tmp_path, "TREC")["test"].labels == ["NUM"] * 3
    beir = load_beir(tmp_path / "retrieval" / "scifact", "test")
    assert beir.doc_ids == ["d0", "d1", "d2"] and beir.titles[0] == "Title 0" and len(beir.queries) == 3
    assert beir.qrels == {f"q{i}": {f"d{i}": 1} for i in range(3)} and beir.texts[0] == "Abstract\tnumber 0."


def test_present_tasks_are_skipped_unless_forced(tmp_path):
    """A second run fetches nothing; force=True fetches again."""
    calls: list[str] = []

    def counting(dataset, config, split, revision):
        calls.append(dataset)
        return fake_rows(dataset, config, split, revision)

    download_data(tmp_path, ["stsb"], load=counting)
    assert download_data(tmp_path, ["stsb"], load=counting) == {"stsb": []} and len(calls) == 3
    assert len(download_data(tmp_path, ["stsb"], force=True, load=counting)["stsb"]) == 3 and len(calls) == 6


def test_class_labels_become_names_and_hidden_labels_are_refused():
    """dataset_rows maps ClassLabel ids to names (TREC); a split with hidden labels (-1) is an error, not data."""
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "coarse_label": datasets.ClassLabel(names=["ABBR", "NUM"])}
    )
    rows = dataset_rows(datasets.Dataset.from_dict({"text": ["How far ?"], "coarse_label": [1]}, features=features))
    assert rows == [{"text": "How far ?", "coarse_label": "NUM"}]
    with pytest.raises(ValueError, match="row 1 has no label"):
        download.classification_rows([{"sentence": "hidden", "label": -1}], "sst2")


def test_task_names_and_groups():
    """Display names, groups and an unknown name (one-line error listing the tasks)."""
    assert resolve_tasks(["STS-B", "retrieval", "MR"]) == ["stsb", "mr", "scifact"]
    assert resolve_tasks(["transfer"]) == ["mr", "cr", "subj", "mpqa", "sst2", "trec", "mrpc"]
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        resolve_tasks(["nope"])


def test_offline_gives_one_line_that_says_how_to_get_the_data(tmp_path, monkeypatch, capsys):
    """With HF_HUB_OFFLINE=1, st-tp data fails at once with one line naming the offline cause and the way out."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["data", "--out", str(tmp_path / "data"), "--tasks", "stsb"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("st-tp data: error: ") and "\n" not in err
    assert "HF_HUB_OFFLINE=1" in err and "st-tp data --out DIR" in err and "--data-dir DIR" in err
    assert not (tmp_path / "data").exists()


def test_cli_fetches_with_the_hub_loader_and_lists(tmp_path, monkeypatch, capsys):
    """Online (hub loader replaced by fake rows), st-tp data writes the layout and prints the next command; --list
    shows what is present."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(download, "hub_rows", fake_rows)
    out = tmp_path / "st-tp-data"
    assert main(["data", "--out", str(out), "--tasks", "sts"]) == 0
    printed = capsys.readouterr().out
    assert f"st-tp evaluate --model smollm2 --data-dir {out} --split dev" in printed
    assert (out / "sts" / "sickr" / "test.tsv").is_file()
    (out / "sts" / "stsb" / "test.tsv").unlink()
    assert main(["data", "--out", str(out), "--list", "--tasks", "stsb", "sickr", "mr"]) == 0
    states = [line.split()[:3] for line in capsys.readouterr().out.splitlines()]
    assert states == [["stsb", "sts", "partial"], ["sickr", "sts", "present"], ["mr", "classification", "missing"]]


def test_hub_errors_become_the_one_line_message(monkeypatch):
    """A dataset that cannot be fetched (no network) raises OSError with the offline message and the cause."""
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'mteb/stsbenchmark-sts' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(OSError, match="unreachable here \\(mteb/stsbenchmark-sts train: Couldn't reach"):
        download.hub_rows("mteb/stsbenchmark-sts", None, "train", None)


def test_evaluate_and_tune_read_the_fetched_layout(tiny_llama, tmp_path, capsys):
    """The README's evaluate commands (STS-B dev; the test suite; transfer) run on the layout st-tp data writes."""
    download_data(tmp_path, load=fake_rows)
    base = ["evaluate", "--model", str(tiny_llama), "--data-dir", str(tmp_path), "--no-progress"]
    assert main([*base, "--tp-start", "1", "--tp-exit", "3", "--tasks", "stsb", "--split", "dev"]) == 0
    assert main(base) == 0
    table = capsys.readouterr().out
    assert "| STS12 | STS13 | STS14 | STS15 | STS16 | STS-B | SICK-R | Avg |" in table
    assert main([*base, "--tasks", "CR", "--kfold", "2"]) == 0
