from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sentence_transformers_tp.data import read_sts_tsv
from sentence_transformers_tp.evaluation.sts import (
    cosine_scores,
    encode_unique,
    evaluate_sts,
    rankdata,
    score_sts,
    spearman,
)

from .conftest import FIXTURE_DATA, BagOfCharsModel, LookupModel

# Predicted cosine of each sts12 fixture row (ties in rows 2/3); gold has ties in rows 3/5.
STS12_COSINES = [0.9, 0.6, 0.6, 0.2, 0.8, 0.1]
# Hand-computed: ranks(pred) = [6, 3.5, 3.5, 2, 5, 1], ranks(gold) = [6, 3, 4.5, 2, 4.5, 1]
# -> centred dot 16.25, both squared norms 17 -> rho = 16.25 / 17.
STS12_ALL = 100.0 * 16.25 / 17.0
# MSRpar rows 1-3: ranks [3, 1.5, 1.5] vs [3, 1, 2] -> 1.5 / sqrt(1.5 * 2); OnWN rows 4-6: identical order -> 1.
STS12_MSRPAR = 100.0 * 1.5 / math.sqrt(3.0)
STS12_ONWN = 100.0


def sts12_lookup_model() -> LookupModel:
    """Every sentence1 maps to e1; each sentence2 to a unit vector whose cosine with e1 is the row's target."""
    data = read_sts_tsv(FIXTURE_DATA / "sts" / "sts12" / "test.tsv")
    table: dict[str, list[float]] = {}
    for s1, s2, c in zip(data.sentence1, data.sentence2, STS12_COSINES):
        table[s1] = [1.0, 0.0]
        assert table.get(s2, [c, math.sqrt(1 - c * c)]) == [c, math.sqrt(1 - c * c)]
        table[s2] = [c, math.sqrt(1 - c * c)]
    return LookupModel(table)


def test_rankdata_gives_average_ranks_to_ties():
    """Tied values share the mean of the ranks they span (1-based)."""
    assert rankdata([10, 20, 20, 5, 20]).tolist() == [2.0, 4.0, 4.0, 1.0, 4.0]
    assert rankdata([]).tolist() == []


def test_spearman_hand_computed_with_ties():
    """Spearman equals the hand-computed Pearson correlation of average ranks."""
    gold = [5.0, 3.0, 4.0, 1.0, 4.0, 0.5]
    assert spearman(STS12_COSINES, gold) == pytest.approx(16.25 / 17.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_spearman_matches_scipy_on_random_ties():
    """On random data with many ties the result equals scipy.stats.spearmanr."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=200).astype(float)
    y = x + rng.integers(0, 3, size=200)
    assert spearman(x, y) == pytest.approx(float(spearmanr(x, y)[0]), abs=1e-12)


def test_spearman_undefined_cases():
    """Constant input or fewer than two values give NaN; unequal lengths raise ValueError."""
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1], [2]))
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


def test_cosine_scores_rowwise_and_zero_vectors():
    """Row-wise cosine; a zero vector gives 0 instead of NaN."""
    a = np.array([[1.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [1.0, 1.0], [6.0, 8.0]])
    assert cosine_scores(a, b).tolist() == pytest.approx([0.0, 0.0, 1.0])


def test_all_setting_is_one_spearman_over_all_rows():
    """STS12 score is one Spearman over all rows (hand-computed), not the mean of subsets; subsets are extra info."""
    result = evaluate_sts(sts12_lookup_model(), FIXTURE_DATA)
    assert list(result.tasks) == ["sts12"]
    task = result.tasks["sts12"]
    assert task.split == "test" and task.n_pairs == 6
    assert task.spearman == pytest.approx(STS12_ALL)
    assert task.spearman != pytest.approx((STS12_MSRPAR + STS12_ONWN) / 2)
    assert task.subsets["MSRpar"] == {"spearman": pytest.approx(STS12_MSRPAR), "n_pairs": 3}
    assert task.subsets["OnWN"] == {"spearman": pytest.approx(STS12_ONWN), "n_pairs": 3}
    assert result.avg == pytest.approx(STS12_ALL)


def test_duplicates_are_encoded_once():
    """Sentences repeated across rows and across the two columns are encoded once, in a single call."""
    model = sts12_lookup_model()
    result = evaluate_sts(model, FIXTURE_DATA)
    assert len(model.calls) == 1
    assert sorted(model.calls[0]) == sorted(set(model.calls[0]))
    assert len(model.calls[0]) == 9 == result.tasks["sts12"].n_encoded  # 12 texts, 9 distinct

    bag = BagOfCharsModel()
    evaluate_sts(bag, FIXTURE_DATA, tasks=["stsb"], split="dev")
    assert len(bag.calls) == 1 and len(bag.calls[0]) == 8  # 10 texts, 2 appear in both columns


def test_dedupe_across_tasks_and_encode_unique():
    """A sentence shared by two tasks is encoded once per run; encode_unique skips cached texts."""
    bag = BagOfCharsModel()
    result = evaluate_sts(bag, FIXTURE_DATA, tasks=["stsb", "sickr"], split="dev")
    encoded = [t for call in bag.calls for t in call]
    assert len(encoded) == len(set(encoded))
    assert result.tasks["sickr"].n_encoded == 4  # its 4 sentence1 texts were already encoded for STS-B
    cache, n_new = encode_unique(bag, ["x", "x", "y"], cache={"y": np.zeros(26)})
    assert n_new == 1 and set(cache) == {"x", "y"} and bag.calls[-1] == ["x"]


def test_split_mapping_dev_alias_and_average():
    """A per-task split mapping works, ``dev`` finds SICK ``trial``, and avg is the mean of the task scores."""
    result = evaluate_sts(
        BagOfCharsModel(), FIXTURE_DATA, tasks=["STS-B", "SICK-R"], split={"stsb": "dev", "sickr": "dev"}
    )
    assert [t.split for t in result.tasks.values()] == ["dev", "trial"]
    assert [t.n_pairs for t in result.tasks.values()] == [5, 4]
    scores = [t.spearman for t in result.tasks.values()]
    assert result.avg == pytest.approx(sum(scores) / 2)
    assert list(result.scores()) == ["STS-B", "SICK-R", "Avg"]


def test_limit_takes_first_pairs():
    """``limit`` scores only the first N pairs (here the MSRpar rows, giving the MSRpar value)."""
    result = evaluate_sts(sts12_lookup_model(), FIXTURE_DATA, limit=3)
    task = result.tasks["sts12"]
    assert task.n_pairs == 3 and list(task.subsets) == ["MSRpar"]
    assert task.spearman == pytest.approx(STS12_MSRPAR)
    assert result.settings["limit"] == 3


def test_sample_scores_a_seeded_draw_and_records_it():
    """``sample`` scores the seeded draw of N pairs and records it in the settings; limit and sample exclude."""
    model = sts12_lookup_model()
    result = evaluate_sts(model, FIXTURE_DATA, sample=4, sample_seed=3)
    task = result.tasks["sts12"]
    data = read_sts_tsv(FIXTURE_DATA / "sts" / "sts12" / "test.tsv").sample(4, seed=3)
    assert task.n_pairs == 4
    assert task.spearman == pytest.approx(score_sts(model, data, task="sts12", split="test").spearman)
    assert result.settings["sample"] == 4 and result.settings["sample_seed"] == 3
    with pytest.raises(ValueError, match="not both"):
        evaluate_sts(model, FIXTURE_DATA, limit=3, sample=3)


def test_senteval_text_variant_is_encoded():
    """``senteval_text=True`` encodes the tokenized lower-cased text of the .senteval.tsv file."""
    bag = BagOfCharsModel()
    evaluate_sts(bag, FIXTURE_DATA, tasks=["stsb"], split="dev", senteval_text=True)
    assert 'he said " stop " twice .' in bag.calls[0]
    assert all(t == t.lower() for t in bag.calls[0])


def test_missing_splits_raise():
    """A requested task without the split, or no task with it, raises FileNotFoundError listing what exists."""
    with pytest.raises(FileNotFoundError, match="stsb"):
        evaluate_sts(BagOfCharsModel(), FIXTURE_DATA, tasks=["stsb"], split="test")
    with pytest.raises(FileNotFoundError, match="sickr/trial"):
        evaluate_sts(BagOfCharsModel(), FIXTURE_DATA, split="train")


def test_to_dict_is_strict_json_and_nan_becomes_null():
    """``to_dict`` is JSON-serialisable without NaN; an undefined correlation is ``None``."""
    data = read_sts_tsv(FIXTURE_DATA / "sts" / "sts12" / "test.tsv")
    constant = LookupModel({t: [1.0, 1.0] for t in data.sentence1 + data.sentence2})
    task = score_sts(constant, data, task="sts12")
    assert math.isnan(task.spearman) and task.to_dict()["spearman"] is None
    result = evaluate_sts(sts12_lookup_model(), FIXTURE_DATA, model_name="fake/lookup", config={"layer": -1})
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert payload["model"] == "fake/lookup" and payload["config"] == {"layer": -1}
    assert payload["tasks"]["STS12"]["spearman"] == pytest.approx(STS12_ALL)


def test_runs_with_a_real_sentence_transformer(tiny_sentence_transformer):
    """A tiny real SentenceTransformer evaluates every fixture task with finite scores; its card name is recorded."""
    model = tiny_sentence_transformer
    result = evaluate_sts(model, FIXTURE_DATA, split={"sts12": "test", "stsb": "dev", "sickr": "dev"}, batch_size=4)
    assert list(result.scores()) == ["STS12", "STS-B", "SICK-R", "Avg"]
    assert all(math.isfinite(v) and -100.0 <= v <= 100.0 for v in result.scores().values())
    assert result.model == model.model_card_data.model_name
