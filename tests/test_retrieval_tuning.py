"""Retrieval tuning: every grid cell equals evaluate_retrieval of a model built with the cell's task settings, the
winner rules, the preset task_settings block and the default model that uses it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.demonstrations import BACKBONE, Demonstration
from sentence_transformers_tp.evaluation.retrieval import evaluate_retrieval, load_beir, rank_documents
from sentence_transformers_tp.labeling import Labelled
from sentence_transformers_tp.retrieval_tuning import Side, choose_winner, tune_retrieval, write_task_settings
from sentence_transformers_tp.tuning import Scored, describe
from sentence_transformers_tp.tuning import choose_winner as one_rule
from sentence_transformers_tp.tuning import retrieval as retrieval_module

from .conftest import write_tiny_preset

BEIR = Path(__file__).parent / "evaluation" / "fixtures" / "beir"


def sides(settings) -> list[Side]:
    """The searched Settings as the deprecated ``Side`` views (their old labels and task entries)."""
    return [Side.from_setting(setting) for setting in settings]


@pytest.fixture(scope="module")
def module(tiny_llama) -> TokenPrependingTransformer:
    """The tiny 4-layer Llama with a demonstration (its own setting is searched as the 'module default')."""
    return TokenPrependingTransformer(
        str(tiny_llama), "knowledge", tp_start=1, tp_exit=1, output_layer=-1, demonstrations=[("A dog runs.", "Dog")]
    )


@pytest.fixture(scope="module")
def result(module):
    """All 5 train queries (3 evaluated) and the 6 documents; no held-out half, so every query tunes."""
    return tune_retrieval(module, BEIR, "train", sample=None, corpus_sample=None, held_out=0.0, tp_bands=[(1, 3)])


def test_sides_are_templates_times_tp_plus_the_module_setting(result):
    """2 templates x (TP off + 1 band) per side, plus the module's own setting; the grid covers every layer."""
    labels = [side.label() for side in sides(result.document_settings)]
    assert labels == [
        "prompteol",
        "prompteol + TP 1-2",
        "retrieval_document",
        "retrieval_document + TP 1-2",
        "knowledge + demo 'Dog'",
    ]
    assert [side.label() for side in sides(result.query_settings)][2] == "retrieval_query"
    assert np.asarray(result.grid).shape == (5, 5, result.num_layers + 1)
    assert result.default is not None and result.default["document"] == 4


@pytest.mark.parametrize("cell", [(0, 0, 4), (1, 3, 2), (3, 2, 1), (4, 4, 3)])
def test_grid_cell_equals_evaluate_retrieval_of_the_built_model(result, tiny_llama, cell):
    """A cell's nDCG@10 equals evaluate_retrieval of a model whose task_settings are the cell's two sides."""
    qi, di, layer = cell
    tasks = {
        "query": sides(result.query_settings)[qi].entry(layer),
        "document": sides(result.document_settings)[di].entry(layer, result.settings["max_seq_length"]),
    }
    model = SentenceTransformer(
        modules=[TokenPrependingTransformer(str(tiny_llama), "prompteol", task_settings=tasks)]
    )
    measured = evaluate_retrieval(model, BEIR, "train", batch_size=2, show_progress_bar=False).tasks["beir"]
    assert measured.ndcg_at_10 == pytest.approx(result.grid[qi][di][layer], abs=1e-4)


def test_winner_is_never_below_vanilla_and_becomes_task_settings(result):
    """The winner scores at least vanilla PromptEOL; its task settings name both sides at one layer."""
    assert result.winner["ndcg_at_10"] >= result.vanilla["ndcg_at_10"]
    settings = result.task_settings()
    assert set(settings) == {"query", "document"}
    assert settings["query"]["output_layer"] == settings["document"]["output_layer"] == result.output_layer
    assert settings["document"]["max_seq_length"] == 512 and settings["query"]["demonstrations"] in (
        [],
        [["A dog runs.", "Dog"]],
    )
    assert "| query \\ document |" in result.to_markdown()


def test_choose_winner_prefers_fewer_changes_within_min_gain_and_never_drifts():
    """Within min_gain of the best cell the simplest wins; vanilla stays unless beaten by more than min_gain."""
    vanilla = {"name": "v", "ndcg_at_10": 50.0, "changes": 0}
    cells = [
        vanilla,
        {"name": "a", "ndcg_at_10": 52.0, "changes": 3},
        {"name": "b", "ndcg_at_10": 51.7, "changes": 2},
        {"name": "c", "ndcg_at_10": 51.3, "changes": 1},  # within 0.5 of b but 0.7 below a: not chosen
    ]
    changes = lambda c: c["changes"]  # noqa: E731
    assert choose_winner(cells, vanilla, changes, 0.5)["name"] == "b"
    assert choose_winner(cells, vanilla, changes, 0.0)["name"] == "a"
    assert choose_winner(cells, vanilla, changes, 2.5)["name"] == "v"


def test_held_out_queries_are_scored_at_the_layer_chosen_on_the_others(module):
    """With a held-out half, the held-out metrics come from queries that took no part in the choice."""
    result = tune_retrieval(
        module, BEIR, "train", sample=None, corpus_sample=None, held_out=0.34, include_default=False
    )
    assert (
        result.settings["tuning_queries"] + result.settings["held_out_queries"] == 4
    )  # the fixture's 4 judged train queries (q4 is judged 0 only)
    assert result.settings["held_out_queries"] == 1 and set(result.held_out) == {"winner", "vanilla"}
    assert all(0.0 <= value <= 100.0 for value in result.held_out["winner"].values())


def test_length_buckets_compare_tp_off_and_on_per_document_setting(result):
    """Every document setting gets a per-bucket nDCG@10; bucket counts add up to the evaluated queries."""
    lengths = result.lengths
    assert len(lengths["edges"]) == 2 and sum(lengths["counts"]) == 3
    assert [row["label"] for row in lengths["rows"]] == [describe(setting) for setting in result.document_settings]


def test_checkpoint_dir_reuses_finished_passes(module, tmp_path):
    """A rerun with the same checkpoint folder loads every pass instead of encoding again, with the same grid."""
    kwargs = dict(sample=None, corpus_sample=None, held_out=0.0, tp_bands=[], include_default=False)
    first = tune_retrieval(module, BEIR, "train", checkpoint_dir=tmp_path, **kwargs)
    assert len(list(tmp_path.glob("*.npz"))) == 4  # one file per pass (the tuning checkpoint format)
    lines: list[str] = []
    second = tune_retrieval(module, BEIR, "train", checkpoint_dir=tmp_path, progress=lines.append, **kwargs)
    assert sum("reusing" in line for line in lines) == 4
    np.testing.assert_allclose(second.grid, first.grid)


def test_task_settings_written_to_a_preset_are_the_default_model_settings(result, tiny_llama, tmp_path, monkeypatch):
    """write_task_settings stores query / document entries with scores; the backbone's default model uses them."""
    import sentence_transformers_tp.presets as presets

    path = write_tiny_preset(tmp_path / "tiny.yaml", tiny_llama)
    summary = json.loads(json.dumps(result.to_dict()))
    write_task_settings(summary, path, "st-tp tune-retrieval ...")
    stored = presets.load_preset_file(path)
    assert stored.task_settings["document"]["score"]["ndcg_at_10"] == round(result.winner["ndcg_at_10"], 2)
    assert stored.task_settings_config() == result.task_settings()
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    model = SentenceTransformer(modules=[TokenPrependingTransformer(str(tiny_llama))])
    assert model[0].task_settings == result.task_settings()
    assert (
        TokenPrependingTransformer(str(tiny_llama), output_layer=2).task_settings == {}
    )  # a setting passed: left out
    from sentence_transformers_tp.evaluation.model_meta import tuning_datasets

    assert tuning_datasets(model[0]) == {"beir"}  # the fixture's dataset name, from the task settings' score
    explicit = SentenceTransformer(
        modules=[TokenPrependingTransformer(str(tiny_llama), "prompteol", task_settings=result.task_settings())]
    )
    texts = ["A man is playing a guitar.", "The cat sleeps."]
    np.testing.assert_allclose(model.encode_document(texts), explicit.encode_document(texts), atol=1e-6)
    np.testing.assert_allclose(model.encode_query(texts), explicit.encode_query(texts), atol=1e-6)


def test_preset_task_settings_are_validated(tmp_path):
    """A preset task_settings entry with an unknown key or an out-of-range layer names the file and the task."""
    from sentence_transformers_tp.presets import validate_preset

    base = {
        "name": "x",
        "backbone": "x",
        "num_layers": 4,
        "templates": {"prompteol": {"tp_start": 1, "tp_exit": 1, "output_layer": -1}},
    }
    with pytest.raises(ValueError, match=r"x.yaml: task_settings\['query'\].*unknown settings \['colour'\]"):
        validate_preset({**base, "task_settings": {"query": {"colour": 1}}}, "x.yaml")
    with pytest.raises(ValueError, match=r"task_settings\['document'\].*output_layer 9"):
        validate_preset({**base, "task_settings": {"document": {"output_layer": 9}}}, "x.yaml")
    with pytest.raises(ValueError, match="tp_exit"):
        validate_preset({**base, "task_settings": {"document": {"tp_start": 1, "tp_exit": 9}}}, "x.yaml")


def test_rank_documents_orders_by_cosine():
    """rank_documents ranks by cosine (not dot product) and keeps top_k."""
    docs = np.array([[1.0, 0.0], [10.0, 10.0], [0.0, 1.0]])
    ranked = rank_documents(np.array([[1.0, 0.2]]), docs, ["a", "b", "c"], top_k=2)
    assert ranked == [["a", "b"]]


def test_side_entry_round_trips_through_the_module(tiny_llama):
    """A side's task entry builds a module whose query templates are the side's templates."""
    side = Side("retrieval_query", (1, 3), (("A dog runs.", "Dog"),))
    module = TokenPrependingTransformer(str(tiny_llama), "prompteol", task_settings={"query": side.entry(2)})
    assert module.templates_for(task="query") == side.templates()
    assert side.changes == 3 and Side("prompteol").changes == 0


def test_search_without_the_vanilla_baseline_is_refused(module):
    """Leaving prompteol out of either side is a clear ValueError (the winner is compared with it)."""
    with pytest.raises(ValueError, match="must both include 'prompteol'"):
        tune_retrieval(
            module, BEIR, "train", sample=None, corpus_sample=None, document_templates=("retrieval_document",)
        )


@pytest.fixture(scope="module")
def hybrid_result(module):
    """The search with the fusion stage over dense, sparse (the module's own PromptReps) and BM25, q held out."""
    return tune_retrieval(
        module,
        BEIR,
        "train",
        sample=None,
        corpus_sample=None,
        held_out=0.25,
        tp_bands=[],
        include_default=False,
        hybrid=True,
        sparse=True,
    )


def test_hybrid_stage_is_never_below_bm25_and_records_the_held_out_check(hybrid_result):
    """The fusion is chosen on the tuning queries (at least BM25 alone there) and checked on the held-out ones."""
    hybrid = hybrid_result.hybrid
    assert hybrid["channels"] == ["dense", "sparse", "bm25"]
    assert set(hybrid["baselines"]) == {"dense", "sparse", "bm25"}
    assert hybrid["tuning_ndcg_at_10"] >= hybrid["baselines"]["bm25"]["tuning"]
    score = hybrid["block"]["score"]
    assert (
        (score["tuning_queries"], score["held_out_queries"])
        == (
            hybrid_result.settings["tuning_queries"],
            hybrid_result.settings["held_out_queries"],
        )
        == (3, 1)
    )
    assert hybrid["held_out_ndcg_at_10"] is not None and hybrid["baselines"]["bm25"]["held_out"] is not None
    summary = json.loads(json.dumps(hybrid_result.to_dict()))
    assert summary["hybrid"]["label"] == hybrid["label"]
    assert "Hybrid fusion over dense, sparse, bm25" in hybrid_result.to_markdown()


def test_hybrid_dense_channel_is_the_winner_at_its_layer(hybrid_result, module):
    """The dense channel alone scores what the winner's cell scores on the tuning queries (cached states reused)."""
    dense_alone = hybrid_result.hybrid["baselines"]["dense"]["tuning"]
    assert dense_alone == pytest.approx(hybrid_result.winner["ndcg_at_10"], abs=1e-4)


def test_hybrid_block_written_to_a_preset_is_what_from_model_uses(hybrid_result, tiny_llama, tmp_path, monkeypatch):
    """write_hybrid stores a valid hybrid block; HybridRetriever.from_model of the backbone's model uses it."""
    import sentence_transformers_tp.presets as presets
    from sentence_transformers_tp.hybrid import HybridRetriever
    from sentence_transformers_tp.hybrid.preset import validate_fusion_block
    from sentence_transformers_tp.tuning.retrieval import write_hybrid

    path = write_tiny_preset(tmp_path / "tiny.yaml", tiny_llama)
    write_hybrid(json.loads(json.dumps(hybrid_result.to_dict())), path, "st-tp tune-retrieval --hybrid")
    stored = presets.load_preset_file(path).hybrid
    expected = validate_fusion_block(hybrid_result.hybrid["block"])
    assert validate_fusion_block(stored) == expected and stored["status"] == "tuned"
    assert stored["score"]["task"] == "beir" and stored["command"] == "st-tp tune-retrieval --hybrid"
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    model = SentenceTransformer(modules=[TokenPrependingTransformer(str(tiny_llama))])
    retriever = HybridRetriever.from_model(model)
    assert retriever.channels == expected["channels"]
    assert (retriever.fusion, retriever.weights) == (expected["fusion"], expected["weights"])


def test_hybrid_index_is_cached_in_the_checkpoint_dir(module, tmp_path):
    """With a checkpoint folder the BM25 index is written once and a rerun loads it, with the same choice."""
    kwargs = dict(sample=None, corpus_sample=None, held_out=0.0, tp_bands=[], include_default=False, hybrid=True)
    first = tune_retrieval(module, BEIR, "train", checkpoint_dir=tmp_path, **kwargs)
    (folder,) = tmp_path.glob("hybrid-index-*")
    written = (folder / "hybrid_index.json").stat().st_mtime_ns
    second = tune_retrieval(module, BEIR, "train", checkpoint_dir=tmp_path, **kwargs)
    assert (folder / "hybrid_index.json").stat().st_mtime_ns == written  # loaded, not written again
    assert first.hybrid["channels"] == ["dense", "bm25"] and first.hybrid["block"] == second.hybrid["block"]
    assert first.hybrid["held_out_ndcg_at_10"] is None


def test_sparse_without_hybrid_and_a_preset_without_fusion_are_refused(module, result):
    """sparse=True without hybrid=True, and writing a hybrid block from a search without one, are clear errors."""
    from sentence_transformers_tp.tuning.retrieval import hybrid_entry

    with pytest.raises(ValueError, match="set hybrid=True"):
        tune_retrieval(module, BEIR, "train", sample=None, sparse=True)
    with pytest.raises(ValueError, match="no fusion stage"):
        hybrid_entry(result.to_dict())


def test_hybrid_sparse_channel_is_the_tuned_models_own_promptreps_channel(hybrid_result, tiny_llama):
    """The sparse channel alone scores what the joint HybridRetriever of a model with the winner's task settings
    (what from_model builds for a tuned sparse channel) scores, on the same tuning / held-out queries."""
    from sentence_transformers_tp.evaluation.retrieval import load_beir
    from sentence_transformers_tp.hybrid import HybridRetriever
    from sentence_transformers_tp.hybrid.selection import choose_fusion

    data = load_beir(BEIR, "train").subset(sample=None, seed=0, corpus_sample=None)
    tasks = hybrid_result.task_settings()
    model = SentenceTransformer(modules=[TokenPrependingTransformer(str(tiny_llama), task_settings=tasks)])
    retriever = HybridRetriever(model, model, bm25=False).index(list(data.documents()), list(data.doc_ids))
    ids = list(data.queries)
    runs = retriever.channel_runs([data.queries[q] for q in ids])
    held = hybrid_result.hybrid["held_out_ids"]
    assert len(held) == 1
    choice = choose_fusion({"sparse": runs["sparse"]}, ids, data.qrels, retriever.ids, held_out=held)
    assert choice.baselines["sparse"]["tuning"] == pytest.approx(hybrid_result.hybrid["baselines"]["sparse"]["tuning"])
    assert choice.baselines["sparse"]["held_out"] == pytest.approx(
        hybrid_result.hybrid["baselines"]["sparse"]["held_out"]
    )


CORPUS = dict(sample=None, corpus_sample=None, held_out=0.25, tp_bands=[], include_default=False)


def topic_labels(module, sentences, **kwargs) -> Labelled:
    """A stand-in for the backbone's labeller (the tiny random Llama answers no word): every passage means 'Topic'."""
    out = Labelled(Demonstration(sentence, "Topic", BACKBONE) for sentence in sentences)
    out.asked, out.seconds = len(sentences), 0.25
    return out


@pytest.fixture(scope="module")
def corpus_result(module):
    """The search with 2 corpus demonstrations (the fixture's only documents relevant to no train query), q held out."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retrieval_module, "label_with_backbone", topic_labels)
        return tune_retrieval(module, BEIR, "train", corpus_demonstrations=2, **CORPUS)


def test_corpus_demonstrations_are_seeded_and_never_relevant_to_a_query_of_the_split(module):
    """The drawn documents are relevant to no train query (sampled or not); the same seed draws the same ones."""
    full = load_beir(BEIR, "train")
    relevant = {d for judged in full.qrels.values() for d, rel in judged.items() if rel > 0}
    kwargs = dict(sample=1, corpus_sample=None, held_out=0.0, tp_bands=[], include_default=False)
    first = tune_retrieval(module, BEIR, "train", corpus_demonstrations=1, **kwargs)
    drawn = first.corpus_demonstrations
    again = tune_retrieval(module, BEIR, "train", corpus_demonstrations=1, **kwargs).corpus_demonstrations
    assert again["ids"] == drawn["ids"]
    both = tune_retrieval(module, BEIR, "train", corpus_demonstrations=2, **kwargs).corpus_demonstrations
    assert set(both["ids"]) == set(full.doc_ids) - relevant == {"d3", "d5"} and set(drawn["ids"]) < {"d3", "d5"}
    assert both["passages"] == {"d3": "A woman is slicing an onion in the kitchen.", "d5": "Horses"}
    # The tiny random Llama answers no word: nothing labelled, so no candidate is added.
    assert both["labels"] == {"d3": None, "d5": None} and len(first.query_settings) == 2 and "without" not in drawn


def test_no_corpus_demonstrations_leave_the_result_unchanged(module, result):
    """corpus_demonstrations=0 gives the to_dict of a search without the argument (pass seconds aside)."""
    again = tune_retrieval(
        module,
        BEIR,
        "train",
        sample=None,
        corpus_sample=None,
        held_out=0.0,
        tp_bands=[(1, 3)],
        corpus_demonstrations=0,
    )
    timeless = lambda summary: {key: value for key, value in summary.items() if key != "seconds"}  # noqa: E731
    assert timeless(again.to_dict()) == timeless(result.to_dict()) and set(again.seconds) == set(result.seconds)
    assert "corpus_demonstrations" not in result.to_dict() and "Corpus demonstrations" not in result.to_markdown()


def test_corpus_demonstration_candidates_join_the_grid_under_the_one_winner_rule(corpus_result):
    """The best query / document Settings with the demonstrations are one more pass per side, scored in the grid;
    the winner is the one rule's over every cell, each demonstration counting one change."""
    r, drawn = corpus_result, corpus_result.corpus_demonstrations
    pairs = [[drawn["passages"][d], drawn["labels"][d]] for d in drawn["ids"]]
    without = drawn["without"]
    for plan, index in ((r.query_settings, without["query"]), (r.document_settings, without["document"])):
        assert len(plan) == 3 and [demo.as_pair() for demo in plan[-1].demonstrations] == pairs
        assert plan[-1] == plan[index].replace(demonstrations=plan[-1].demonstrations)
        assert f"{'query' if plan is r.query_settings else 'document'}:{describe(plan[-1])}" in r.seconds
    assert np.asarray(r.grid).shape == (3, 3, r.num_layers + 1) and drawn["seconds"] == 0.25
    cells = [
        Scored((q, d), r.grid[i][j]) for i, q in enumerate(r.query_settings) for j, d in enumerate(r.document_settings)
    ]
    chosen = one_rule(cells, cells[0], r.settings["min_gain"])  # cell 0: vanilla PromptEOL on both sides
    assert (r.query_settings.index(chosen.settings[0]), r.document_settings.index(chosen.settings[1])) == (
        r.winner["query"],
        r.winner["document"],
    )
    assert cells[-1].changes() == cells[without["query"] * 3 + without["document"]].changes() + 4
    assert set(r.held_out) == {"winner", "vanilla", "without"}
    summary = json.loads(json.dumps(r.to_dict()))
    assert summary["corpus_demonstrations"]["without"]["query_label"] == r.label(without, "query")
    assert "Corpus demonstrations: 2 documents relevant to no train query" in r.to_markdown()


def test_a_corpus_demonstration_winner_is_written_to_a_preset_that_embeds_with_them(
    corpus_result, tiny_llama, tmp_path, monkeypatch
):
    """A winner with the demonstrations on both sides writes them into the preset's task settings; the backbone's
    default model loads them and embeds as a model built with them."""
    import copy

    import sentence_transformers_tp.presets as presets

    r = copy.copy(corpus_result)
    r.winner = {"query": 2, "document": 2, "layer": 3, "ndcg_at_10": r.grid[2][2][3]}  # made the winner here
    drawn = r.corpus_demonstrations
    pairs = [[drawn["passages"][d], "Topic"] for d in drawn["ids"]]
    assert r.task_settings()["query"]["demonstrations"] == r.task_settings()["document"]["demonstrations"] == pairs
    path = write_tiny_preset(tmp_path / "tiny.yaml", tiny_llama)
    write_task_settings(json.loads(json.dumps(r.to_dict())), path, "st-tp tune-retrieval --corpus-demonstrations 2")
    assert presets.load_preset_file(path).task_settings_config() == r.task_settings()
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    model = SentenceTransformer(modules=[TokenPrependingTransformer(str(tiny_llama))])
    for task in ("query", "document"):
        assert [demo.as_pair() for demo in model[0].task_settings_for(task).demonstrations] == pairs
        prompt = model[0].templates_for(task=task)[0]  # both demonstrations in front of the placeholder
        assert prompt.count('"Topic". ') == 2 and all(
            0 <= prompt.find(p) < prompt.find("{placeholder}") for p, _ in pairs
        )
    built = SentenceTransformer(modules=[TokenPrependingTransformer(str(tiny_llama), **r.task_settings()["query"])])
    texts = ["A man is playing a guitar.", "The cat sleeps."]
    np.testing.assert_allclose(model.encode_query(texts), built.encode(texts), atol=1e-6)


@pytest.mark.parametrize(("count", "message"), [(-1, "non-negative"), (3, "only 2 of the 6 documents can be drawn")])
def test_bad_corpus_demonstration_counts_are_one_line_errors(module, count, message):
    """A negative count, or more documents than are relevant to no query of the split, is a one-line ValueError."""
    with pytest.raises(ValueError, match=message) as error:
        tune_retrieval(module, BEIR, "train", corpus_demonstrations=count, **CORPUS)
    assert "\n" not in str(error.value)
