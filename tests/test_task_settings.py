"""Task-aware settings: queries, documents and task types get their own template, TP, layer and length on one
loaded backbone, chosen by encode_query / encode_document / encode(task=...) and by MTEB's prompts."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.module import TASK_PROMPT_PREFIX

TEXTS = ["A man is playing a guitar.", "Two men are playing chess in the park today."]
TASKS = {
    "document": {"template": "knowledge", "tp_start": 1, "tp_exit": 1, "output_layer": 2, "max_seq_length": 256},
    "query": {"template": "pretended_cot", "tp_exit": 2},
    "Clustering": {"output_layer": 1},
}


def _model(path, **kwargs):
    module = TokenPrependingTransformer(str(path), "prompteol", tp_start=1, tp_exit=3, output_layer=3, **kwargs)
    return SentenceTransformer(modules=[module])


def test_each_task_equals_a_module_built_with_its_settings(tiny_llama):
    """encode_document / encode_query / encode(task=...) equal separate modules built with the task's settings."""
    model = _model(tiny_llama, task_settings=TASKS)
    doc_ref = SentenceTransformer(
        modules=[TokenPrependingTransformer(str(tiny_llama), "knowledge", tp_start=1, tp_exit=1, output_layer=2)]
    )
    query_ref = SentenceTransformer(
        modules=[TokenPrependingTransformer(str(tiny_llama), "pretended_cot", tp_start=1, tp_exit=2, output_layer=3)]
    )
    cluster_ref = SentenceTransformer(
        modules=[TokenPrependingTransformer(str(tiny_llama), "prompteol", tp_start=1, tp_exit=3, output_layer=1)]
    )
    np.testing.assert_allclose(model.encode_document(TEXTS), doc_ref.encode(TEXTS), atol=1e-6)
    np.testing.assert_allclose(model.encode_query(TEXTS), query_ref.encode(TEXTS), atol=1e-6)
    np.testing.assert_allclose(model.encode(TEXTS, task="clustering"), cluster_ref.encode(TEXTS), atol=1e-6)
    plain = _model(tiny_llama).encode(TEXTS)
    np.testing.assert_allclose(model.encode(TEXTS), plain, atol=1e-6)


def test_mteb_prompts_route_task_types(tiny_llama):
    """The module fills model.prompts with a marker per task type, and that prompt selects the task's settings."""
    model = _model(tiny_llama, task_settings=TASKS)
    assert model.prompts["Clustering"] == TASK_PROMPT_PREFIX + "Clustering"
    by_prompt = model.encode(TEXTS, prompt_name="Clustering")
    np.testing.assert_allclose(by_prompt, model.encode(TEXTS, task="Clustering"), atol=1e-6)


def test_task_max_seq_length_truncates_only_that_task(tiny_llama):
    """A task's max_seq_length truncates its inputs' sentences only."""
    long_text = "word " * 200
    model = _model(tiny_llama, task_settings={"document": {"max_seq_length": 40}})
    features = model[0].preprocess([long_text], task="document")
    assert features["input_ids"].shape[1] <= 40
    assert model[0].preprocess([long_text])["input_ids"].shape[1] > 40


def test_task_settings_round_trip_and_shorthands(tiny_llama, tmp_path):
    """task_settings are saved and reloaded; query_template is the shorthand of task_settings['query']['template']."""
    model = _model(tiny_llama, task_settings=TASKS)
    before = model.encode_document(TEXTS)
    model.save(str(tmp_path / "m"))
    again = SentenceTransformer(str(tmp_path / "m"), trust_remote_code=True)
    assert again[0].task_settings == TASKS
    np.testing.assert_allclose(again.encode_document(TEXTS), before, atol=1e-6)
    short = _model(tiny_llama, query_template="knowledge")
    long = _model(tiny_llama, task_settings={"query": {"template": "knowledge"}})
    np.testing.assert_allclose(short.encode_query(TEXTS), long.encode_query(TEXTS), atol=1e-6)


@pytest.mark.parametrize(
    ("task_settings", "message"),
    [
        ({"query": {"bogus": 1}}, "unknown settings"),
        ({"query": {"output_layer": 9}}, "out of range"),
        ({"query": {"tp_exit": 9}}, "tp_exit"),
        ({"query": "knowledge"}, "dict of settings"),
        ({"query": {"max_seq_length": 0}}, "positive"),
    ],
)
def test_bad_task_settings_are_refused(tiny_llama, task_settings, message):
    """Malformed or out-of-range task settings raise ValueError naming the task."""
    with pytest.raises(ValueError, match=message):
        _model(tiny_llama, task_settings=task_settings)


def test_task_demonstrations_replace_the_module_ones(tiny_llama):
    """A task's ``demonstrations`` replace the module's for that task ([] = none); other tasks keep the module's."""
    demo = [("A dog runs.", "Dog")]
    tasks = {"document": {"template": "prompteol", "demonstrations": []}, "query": {"demonstrations": demo}}
    model = SentenceTransformer(
        modules=[
            TokenPrependingTransformer(
                str(tiny_llama),
                "prompteol",
                tp_exit=1,
                output_layer=3,
                demonstrations=[("A cat naps.", "Sleep")],
                task_settings=tasks,
            )
        ]
    )
    plain = SentenceTransformer(
        modules=[TokenPrependingTransformer(str(tiny_llama), "prompteol", tp_exit=1, output_layer=3)]
    )
    with_dog = SentenceTransformer(
        modules=[
            TokenPrependingTransformer(str(tiny_llama), "prompteol", tp_exit=1, output_layer=3, demonstrations=demo)
        ]
    )
    np.testing.assert_allclose(model.encode_document(TEXTS), plain.encode(TEXTS), atol=1e-6)
    np.testing.assert_allclose(model.encode_query(TEXTS), with_dog.encode(TEXTS), atol=1e-6)
    assert model[0].task_settings["query"]["demonstrations"] == [["A dog runs.", "Dog"]]
    assert "A cat naps." in model[0].templates_for()[0]


def test_bad_task_demonstrations_fail_at_construction(tiny_llama):
    """A malformed task demonstration is a ValueError when the module is built, naming the task."""
    with pytest.raises(ValueError):
        TokenPrependingTransformer(
            str(tiny_llama), "prompteol", task_settings={"query": {"demonstrations": [("only",)]}}
        )


def test_model_card_lists_the_task_settings(tiny_llama, tmp_path):
    """A saved model's card names each task's settings."""
    tasks = {"query": {"template": "retrieval_query", "output_layer": 2, "demonstrations": []}}
    model = SentenceTransformer(
        modules=[TokenPrependingTransformer(str(tiny_llama), "prompteol", task_settings=tasks)]
    )
    model.save(str(tmp_path / "m"))
    card = (tmp_path / "m" / "README.md").read_text(encoding="utf-8")
    assert "**Settings per task:** `query`: template=`retrieval_query`, output_layer=`2`, demonstrations=`[]`" in card
