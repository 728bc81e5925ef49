"""The data directory readers (sentence_transformers_tp.data): STS and transfer files, split aliases, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentence_transformers_tp.data import (
    list_sts_splits,
    list_transfer_tasks,
    load_sts,
    load_transfer,
    normalize_sts_task,
    normalize_transfer_task,
    read_sts_tsv,
    read_transfer_tsv,
    resolve_sts_split,
    sts_split_path,
)

from .evaluation.conftest import FIXTURE_DATA, write_transfer_data


@pytest.fixture(scope="module")
def transfer_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SentEval-layout transfer data root."""
    return write_transfer_data(tmp_path_factory.mktemp("transfer-data"))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_read_sts_tsv_keeps_quotes_scores_and_subsets():
    """Sentences with double quotes survive verbatim (QUOTE_NONE); scores are floats; subset column is read."""
    data = read_sts_tsv(FIXTURE_DATA / "sts" / "sts12" / "test.tsv")
    assert len(data) == 6
    assert data.sentence1[0] == 'A man said "hello" to the dog.'
    assert data.sentence1[5] == 'She\'s reading a "novel" now.'
    assert data.scores == [5.0, 3.0, 4.0, 1.0, 4.0, 0.5]
    assert data.subsets == ["MSRpar"] * 3 + ["OnWN"] * 3
    assert data.n_skipped == 0


def test_read_sts_tsv_without_subset_column_has_no_subsets():
    """Files without a ``subset`` column (STS-B: genre/source) yield ``subsets is None``."""
    data = read_sts_tsv(FIXTURE_DATA / "sts" / "stsb" / "dev.tsv")
    assert data.subsets is None
    assert data.sentence1[3] == 'He said "stop" twice.'
    assert data.scores[1] == pytest.approx(0.4)


def test_list_sts_splits_discovers_task_split_pairs():
    """Discovery lists (task, split) pairs in suite order, folding .senteval.tsv into its split."""
    assert list_sts_splits(FIXTURE_DATA) == [("sts12", "test"), ("stsb", "dev"), ("sickr", "trial")]
    assert list_sts_splits(FIXTURE_DATA / "sts") == list_sts_splits(FIXTURE_DATA)


def test_list_sts_splits_ignores_unknown_folders(tmp_path):
    """Folders that are not suite tasks and empty roots yield nothing."""
    _write(tmp_path / "sts" / "sts99" / "test.tsv", "sentence1\tsentence2\tscore\n")
    assert list_sts_splits(tmp_path) == []


def test_resolve_split_dev_finds_sick_trial():
    """``dev`` resolves to SICK's ``trial`` file, ``trial`` to STS-B's ``dev``; absent splits give None."""
    assert resolve_sts_split(FIXTURE_DATA, "sickr", "dev") == "trial"
    assert resolve_sts_split(FIXTURE_DATA, "STS-B", "trial") == "dev"
    assert resolve_sts_split(FIXTURE_DATA, "stsb", "test") is None


def test_senteval_variant_is_used_when_present():
    """``senteval_text=True`` reads the tokenized lower-cased .senteval.tsv file."""
    data = load_sts(FIXTURE_DATA, "stsb", "dev", senteval_text=True)
    assert data.path is not None and data.path.name == "dev.senteval.tsv"
    assert data.sentence1[3] == 'he said " stop " twice .'


def test_senteval_variant_falls_back_with_warning():
    """Without a .senteval.tsv file the plain file is read and a warning names the missing variant."""
    with pytest.warns(UserWarning, match="trial.senteval.tsv"):
        path = sts_split_path(FIXTURE_DATA, "sickr", "trial", senteval_text=True)
    assert path.name == "trial.tsv"


def test_missing_split_raises_file_not_found_listing_available():
    """Loading an absent split raises FileNotFoundError naming the file and the available splits."""
    with pytest.raises(FileNotFoundError, match=r"stsb[/\\]test\.tsv.*dev"):
        load_sts(FIXTURE_DATA, "stsb", "test")
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_sts_tsv(FIXTURE_DATA / "nope.tsv")


def test_wrong_field_count_names_file_and_line(tmp_path):
    """A row with too few fields raises ValueError with ``path:line``."""
    path = _write(tmp_path / "bad.tsv", "sentence1\tsentence2\tscore\na\tb\t1.0\nonly one field\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:3: expected 3"):
        read_sts_tsv(path)


def test_non_numeric_score_names_file_and_line(tmp_path):
    """A non-numeric or non-finite score raises ValueError with ``path:line``."""
    path = _write(tmp_path / "bad.tsv", "sentence1\tsentence2\tscore\na\tb\t1.0\nc\td\thigh\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:3: score 'high' is not a number"):
        read_sts_tsv(path)
    path = _write(tmp_path / "nan.tsv", "sentence1\tsentence2\tscore\na\tb\tnan\n")
    with pytest.raises(ValueError, match=r"nan\.tsv:2"):
        read_sts_tsv(path)


def test_missing_header_column_and_empty_file(tmp_path):
    """A header without ``score`` or an empty file raises ValueError naming the file."""
    path = _write(tmp_path / "hdr.tsv", "sentence1\tsentence2\tlabel\na\tb\t1\n")
    with pytest.raises(ValueError, match=r"hdr\.tsv:1: .*score"):
        read_sts_tsv(path)
    with pytest.raises(ValueError, match=r"empty\.tsv: empty file"):
        read_sts_tsv(_write(tmp_path / "empty.tsv", ""))


def test_empty_scores_are_skipped_and_blank_lines_ignored(tmp_path):
    """Rows with an empty score are skipped and counted (SentEval drops unscored pairs); blank lines are ignored."""
    path = _write(tmp_path / "t.tsv", "sentence1\tsentence2\tscore\na\tb\t1\nc\td\t\n\ne\tf\t2.5\n")
    data = read_sts_tsv(path)
    assert data.sentence1 == ["a", "e"] and data.scores == [1.0, 2.5] and data.n_skipped == 1


def test_head_takes_first_pairs():
    """``head(n)`` keeps the first n pairs of every column; ``None`` keeps all; negative is rejected."""
    data = read_sts_tsv(FIXTURE_DATA / "sts" / "sts12" / "test.tsv")
    first = data.head(2)
    assert len(first) == 2 and first.subsets == ["MSRpar", "MSRpar"] and first.scores == [5.0, 3.0]
    assert data.head(None) is data
    with pytest.raises(ValueError):
        data.head(-1)


def test_sample_draws_seeded_pairs_in_file_order():
    """``sample(n, seed)`` keeps n distinct pairs in file order, the same for the same seed; ``None``/n >= len: all."""
    data = read_sts_tsv(FIXTURE_DATA / "sts" / "sts12" / "test.tsv")
    rows = list(zip(data.sentence1, data.sentence2, data.scores, data.subsets))
    drawn = data.sample(3, seed=0)
    picked = list(zip(drawn.sentence1, drawn.sentence2, drawn.scores, drawn.subsets))
    assert len(picked) == 3 and len(set(picked)) == 3
    positions = [rows.index(row) for row in picked]
    assert positions == sorted(positions)
    assert data.sample(3, seed=0) == drawn
    assert len({tuple(data.sample(3, seed=seed).scores) for seed in range(10)}) > 1
    assert data.sample(None) is data and data.sample(len(data)) is data
    with pytest.raises(ValueError, match="non-negative"):
        data.sample(-1)


def test_subset_takes_limit_or_sample_not_both():
    """``subset`` applies ``limit`` (first pairs) or ``sample`` (seeded draw), and refuses both at once."""
    data = read_sts_tsv(FIXTURE_DATA / "sts" / "sts12" / "test.tsv")
    assert data.subset(limit=2) == data.head(2)
    assert data.subset(sample=2, seed=5) == data.sample(2, seed=5)
    assert data.subset() is data
    with pytest.raises(ValueError, match="not both"):
        data.subset(limit=2, sample=2)


def test_task_name_aliases():
    """Display, SentEval and local MTEB names normalise to canonical keys; unknown names raise ValueError."""
    assert normalize_sts_task("STS-B") == "stsb"
    assert normalize_sts_task("STSBenchmark") == "stsb"
    assert normalize_sts_task("SICKRelatedness") == "sickr"
    assert normalize_sts_task("LocalSICK-R") == "sickr"
    assert normalize_sts_task("STS12") == "sts12"
    assert normalize_transfer_task("SST2") == "sst2"
    with pytest.raises(ValueError, match="Unknown STS task"):
        normalize_sts_task("sts17")
    with pytest.raises(ValueError, match="Unknown transfer task"):
        normalize_transfer_task("sick-e")


def test_read_transfer_single_and_pair_files(transfer_data_dir):
    """Single-sentence files give sentence1+labels; MRPC files give pairs; TREC uses the coarse label."""
    trec = read_transfer_tsv(transfer_data_dir / "classification" / "trec" / "train.tsv")
    assert not trec.is_pair and set(trec.labels) == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    assert trec.sentence1[0].endswith('" .')
    mrpc = load_transfer(transfer_data_dir, "MRPC")
    assert set(mrpc) == {"train", "test"} and mrpc["train"].is_pair and len(mrpc["train"]) == 40
    assert set(load_transfer(transfer_data_dir, "sst2")) == {"train", "dev", "test"}


def test_transfer_errors(tmp_path):
    """Empty labels and missing files raise errors naming the file."""
    path = _write(tmp_path / "x.tsv", "sentence\tlabel\ngood\t1\nbad\t\n")
    with pytest.raises(ValueError, match=r"x\.tsv:3: empty label"):
        read_transfer_tsv(path)
    with pytest.raises(FileNotFoundError, match="all.tsv"):
        load_transfer(tmp_path, "mr")


def test_list_transfer_tasks_needs_all_files(transfer_data_dir, tmp_path):
    """Discovery returns complete tasks in suite order and skips tasks missing a file."""
    assert list_transfer_tasks(transfer_data_dir) == ["mr", "cr", "subj", "mpqa", "sst2", "trec", "mrpc"]
    _write(tmp_path / "classification" / "sst2" / "train.tsv", "sentence\tlabel\na\t1\n")
    _write(tmp_path / "classification" / "cr" / "all.tsv", "sentence\tlabel\na\t1\n")
    assert list_transfer_tasks(tmp_path) == ["cr"]


def test_evaluation_data_reexports_the_readers():
    """The old home sentence_transformers_tp.evaluation.data exports the same objects as sentence_transformers_tp.data."""
    from sentence_transformers_tp import data
    from sentence_transformers_tp.evaluation import data as old_home

    assert old_home.__all__ == data.__all__
    assert all(getattr(old_home, name) is getattr(data, name) for name in data.__all__)


def test_load_sts_split_follows_split_aliases_and_names_a_missing_split():
    """load_sts_split finds SICK-R's 'trial' for 'dev', returns the canonical task, and raises for a missing split."""
    from sentence_transformers_tp.data import load_sts_split

    data, task, split = load_sts_split(FIXTURE_DATA, "SICK-R", "dev")
    assert (task, split) == ("sickr", "trial") and len(data) > 0
    with pytest.raises(FileNotFoundError, match="no 'train' split for task 'stsb'"):
        load_sts_split(FIXTURE_DATA, "stsb", "train")
