from __future__ import annotations

import pytest

from sentence_transformers_tp.data import read_sts_tsv
from sentence_transformers_tp.evaluation import mteb_tasks
from sentence_transformers_tp.evaluation.mteb_tasks import local_sts_task_class, local_sts_tasks
from sentence_transformers_tp.evaluation.report import mteb_result_to_dict
from sentence_transformers_tp.evaluation.sts import evaluate_sts

from .conftest import FIXTURE_DATA

MODEL_NAME = "tp-test/tiny-prompteol-tp1-3-L2"


def test_task_classes_metadata_and_score_ranges():
    """Each suite task has an AbsTaskSTS class with the local name, cosine_spearman and the right gold range."""
    from mteb.abstasks.sts import AbsTaskSTS

    expected = {
        "sts12": ("LocalSTS12", 0, 5),
        "sts16": ("LocalSTS16", 0, 5),
        "STS-B": ("LocalSTSBenchmark", 0, 5),
        "SICK-R": ("LocalSICK-R", 1, 5),
    }
    for task, (name, low, high) in expected.items():
        cls = local_sts_task_class(task)
        assert issubclass(cls, AbsTaskSTS)
        assert cls.metadata.name == name and cls.metadata.main_score == "cosine_spearman"
        assert cls.metadata.type == "STS" and (cls.min_score, cls.max_score) == (low, high)
    assert mteb_tasks.LocalSICKR is local_sts_task_class("sickr")
    with pytest.raises(AttributeError):
        mteb_tasks.LocalSTS99  # noqa: B018


def test_load_data_reads_the_local_split():
    """``load_data`` fills a DatasetDict keyed by the split with the file's rows (quotes intact), honouring limit."""
    (task,) = local_sts_tasks(FIXTURE_DATA, tasks=["sts12"], limit=4)
    task.load_data()
    rows = task.dataset["test"]
    assert rows.num_rows == 4 and rows["sentence1"][0] == 'A man said "hello" to the dog.'
    assert rows["score"] == [5.0, 3.0, 4.0, 1.0]
    assert task.eval_splits == ["test"]
    assert task.metadata.dataset["path"].endswith("test.tsv")
    assert task.metadata.revision.startswith("local-test-") and task.metadata.revision.endswith("-first4")


def test_load_data_honours_a_seeded_sample():
    """A task built with ``sample`` loads the seeded draw and names it in its revision."""
    (task,) = local_sts_tasks(FIXTURE_DATA, tasks=["sts12"], sample=4, sample_seed=2)
    task.load_data()
    expected = read_sts_tsv(FIXTURE_DATA / "sts" / "sts12" / "test.tsv").sample(4, seed=2)
    assert task.dataset["test"]["sentence1"] == expected.sentence1
    assert task.dataset["test"]["score"] == expected.scores
    assert task.metadata.revision.endswith("-sample4-seed2")
    with pytest.raises(ValueError, match="not both"):
        local_sts_tasks(FIXTURE_DATA, tasks=["sts12"], limit=2, sample=2)


def test_factory_discovery_dev_alias_and_errors():
    """The factory builds tasks having the split (``dev`` finds SICK ``trial``) and raises for a missing split."""
    tasks = local_sts_tasks(FIXTURE_DATA, split="dev")
    assert [t.metadata.name for t in tasks] == ["LocalSTSBenchmark", "LocalSICK-R"]
    assert [t.eval_splits for t in tasks] == [["dev"], ["trial"]]
    assert [t.metadata.name for t in local_sts_tasks(FIXTURE_DATA)] == ["LocalSTS12"]
    with pytest.raises(FileNotFoundError, match="stsb"):
        local_sts_tasks(FIXTURE_DATA, tasks=["stsb"], split="test")
    with pytest.raises(FileNotFoundError, match="No STS task"):
        local_sts_tasks(FIXTURE_DATA, split="train")


# A plain SentenceTransformer handed to mteb.evaluate, as users do: mteb 2.26 itself then calls the renamed
# get_sentence_embedding_dimension and its own deprecated fill_missing (our CLI avoids both with wrap_for_mteb).
@pytest.mark.filterwarnings("ignore:The `get_sentence_embedding_dimension` method:FutureWarning")
@pytest.mark.filterwarnings("ignore:The fill_missing parameter is deprecated:DeprecationWarning")
def test_mteb_evaluate_offline_with_local_and_mock_task(tiny_sentence_transformer):
    """mteb.evaluate (cache=None) runs a local task and a mock task offline, files results under the model's
    card name, and the local score equals evaluate_sts on the same data."""
    import mteb
    from mteb.mocks import MockSTSTask

    model = tiny_sentence_transformer
    previous = model.model_card_data.model_name
    model.model_card_data.model_name = MODEL_NAME
    try:
        tasks = [*local_sts_tasks(FIXTURE_DATA, tasks=["sts12"]), MockSTSTask()]
        result = mteb.evaluate(model, tasks, cache=None, show_progress_bar=False, encode_kwargs={"batch_size": 4})
        ours = evaluate_sts(model, FIXTURE_DATA, tasks=["sts12"], batch_size=4)
    finally:
        model.model_card_data.model_name = previous
    assert result.model_name == MODEL_NAME and result.model_name != "no_model_name"
    assert not result.exceptions
    scores = {r.task_name: r for r in result.task_results}
    assert set(scores) == {"LocalSTS12", "MockSTSTask"}
    local = scores["LocalSTS12"]
    assert list(local.scores) == ["test"]
    assert 100.0 * local.get_score() == pytest.approx(ours.tasks["sts12"].spearman, abs=1e-6)
    assert ours.model == MODEL_NAME

    converted = mteb_result_to_dict(result, config={"tp": True})
    assert converted["model"] == MODEL_NAME and converted["kind"] == "mteb"
    assert converted["tasks"]["STS12"]["spearman"] == pytest.approx(ours.tasks["sts12"].spearman, abs=1e-6)
    assert converted["tasks"]["MockSTSTask"]["mteb_task"] == "MockSTSTask"
