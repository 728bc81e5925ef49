from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from sentence_transformers_tp.data import TransferData, load_transfer
from sentence_transformers_tp.evaluation.transfer import (
    SENTEVAL_C_GRID,
    evaluate_transfer,
    evaluate_transfer_task,
    pair_features,
    subsample_indices,
)

from .conftest import BagOfCharsModel

FAST = {"kfold": 5, "inner_kfold": 3}


def test_senteval_c_grid():
    """The C grid is SentEval's scikit-learn grid 2^-2 ... 2^3."""
    assert SENTEVAL_C_GRID == (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def test_pair_features_modes():
    """``senteval`` gives [|u-v|, u*v]; ``full`` gives [u, v, |u-v|, u*v]; other modes raise."""
    u = np.array([[1.0, -2.0]])
    v = np.array([[3.0, 1.0]])
    assert pair_features(u, v).tolist() == [[2.0, 3.0, 3.0, -2.0]]
    assert pair_features(u, v, "full").tolist() == [[1.0, -2.0, 3.0, 1.0, 2.0, 3.0, 3.0, -2.0]]
    with pytest.raises(ValueError):
        pair_features(u, v, "concat")


def test_subsample_is_stratified_and_deterministic():
    """Subsampling keeps class proportions, returns sorted positions, and is the same on every call."""
    labels = ["a"] * 80 + ["b"] * 20
    picked = subsample_indices(labels, 10)
    assert picked == subsample_indices(labels, 10) == sorted(picked)
    assert Counter(labels[i] for i in picked) == {"a": 8, "b": 2}
    assert subsample_indices(labels, None) == list(range(100))
    assert subsample_indices(labels, 500) == list(range(100))


def test_cross_validated_task_reaches_full_accuracy(transfer_data_dir):
    """MR (k-fold CV on all.tsv) with separable bag-of-characters features reaches 100% accuracy."""
    result = evaluate_transfer(BagOfCharsModel(), transfer_data_dir, tasks=["MR"], **FAST)
    task = result.tasks["mr"]
    assert task.accuracy == pytest.approx(100.0)
    assert task.split == "5-fold CV" and task.kfold == 5 and task.inner_kfold == 3
    assert task.n_test == 42 and len(task.c) == 5 and all(c in SENTEVAL_C_GRID for c in task.c)


def test_sst2_selects_on_dev_and_scores_test(transfer_data_dir):
    """SST2 picks C on dev and reports test accuracy; one flipped test label of 10 gives exactly 90."""
    task = evaluate_transfer(BagOfCharsModel(), transfer_data_dir, tasks=["sst2"]).tasks["sst2"]
    assert task.split == "test" and task.n_test == 10 and task.n_train == 30
    assert task.dev_accuracy == pytest.approx(100.0)
    assert task.accuracy == pytest.approx(90.0)
    assert task.inner_kfold is None and task.c == [0.25]  # all C tie on dev: the first one is kept


def test_trec_multiclass_known_accuracy(transfer_data_dir):
    """TREC (6 coarse classes, C by inner CV on train) gets 11 of 12 test questions right (one is mislabelled)."""
    task = evaluate_transfer(BagOfCharsModel(), transfer_data_dir, tasks=["TREC"], **FAST).tasks["trec"]
    assert task.n_classes == 6 and task.n_test == 12
    assert task.accuracy == pytest.approx(100.0 * 11 / 12)


def test_mrpc_pairs_full_accuracy(transfer_data_dir):
    """MRPC with [|u-v|, u*v] features separates permuted (paraphrase) pairs from unrelated ones."""
    result = evaluate_transfer(BagOfCharsModel(), transfer_data_dir, tasks=["mrpc"], **FAST)
    assert result.tasks["mrpc"].accuracy == pytest.approx(100.0)
    assert result.settings["mrpc_features"] == "senteval"


def test_each_task_encodes_its_distinct_sentences_once(transfer_data_dir):
    """One encode call per task, covering every distinct sentence of all its files (both MRPC sides) once."""
    model = BagOfCharsModel()
    result = evaluate_transfer(model, transfer_data_dir, tasks=["mr", "mrpc"], **FAST)
    assert len(model.calls) == 2
    mr_texts = set(load_transfer(transfer_data_dir, "mr")["all"].sentence1)
    assert len(model.calls[0]) == len(mr_texts) == result.tasks["mr"].n_encoded < 42  # 42 rows, 2+ repeated
    mrpc = load_transfer(transfer_data_dir, "mrpc")
    mrpc_texts = {t for d in mrpc.values() for t in d.sentence1 + (d.sentence2 or [])}
    assert sorted(model.calls[1]) == sorted(mrpc_texts)


def test_limit_subsamples_every_file(transfer_data_dir):
    """``limit`` caps each file of a task before encoding (stratified)."""
    model = BagOfCharsModel()
    result = evaluate_transfer(model, transfer_data_dir, tasks=["cr", "sst2"], limit=8, **FAST)
    assert result.tasks["cr"].n_test == 8
    assert result.tasks["sst2"].n_train == 8 and result.tasks["sst2"].n_test == 8
    assert result.settings["limit"] == 8


def test_folds_shrink_to_smallest_class_and_error_when_impossible():
    """Folds are lowered to the smallest class size; a class with one example raises ValueError."""
    rng = np.random.default_rng(1)
    words = ["zzz alma", "qqq mona"]
    labels = ["1"] * 4 + ["0"] * 12
    data = TransferData(sentence1=[f"{words[int(lab == '0')]} {rng.integers(1000)}" for lab in labels], labels=labels)
    task = evaluate_transfer_task(BagOfCharsModel(), {"all": data}, task="cr", kfold=10)
    assert task.kfold == 4 and task.inner_kfold == 3 and task.accuracy == pytest.approx(100.0)
    tiny = TransferData(sentence1=["zzz", "qqq", "qqq a"], labels=["1", "0", "0"])
    with pytest.raises(ValueError, match="at least 2 per class"):
        evaluate_transfer_task(BagOfCharsModel(), {"all": tiny}, task="cr")


def test_discovers_all_tasks_and_serialises(transfer_data_dir):
    """With tasks=None every complete task runs; ``to_dict`` is strict JSON with accuracy entries and the average."""
    result = evaluate_transfer(
        BagOfCharsModel(), transfer_data_dir, model_name="fake/bag", config={"prompt": "x"}, **FAST
    )
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert list(payload["tasks"]) == ["MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC"]
    assert payload["kind"] == "transfer" and payload["model"] == "fake/bag"
    assert payload["avg"] == pytest.approx(np.mean([e["accuracy"] for e in payload["tasks"].values()]))
    assert payload["tasks"]["SST2"]["accuracy"] == pytest.approx(90.0)


def test_missing_task_files_raise(tmp_path):
    """Requesting a task whose files are absent raises FileNotFoundError; an empty directory too."""
    with pytest.raises(FileNotFoundError):
        evaluate_transfer(BagOfCharsModel(), tmp_path, tasks=["mr"])
    with pytest.raises(FileNotFoundError, match="No complete"):
        evaluate_transfer(BagOfCharsModel(), tmp_path)
