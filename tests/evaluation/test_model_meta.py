"""MTEB leaderboard path: to_model_meta, its loader, the results-folder layout and the CLI (offline)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sentence_transformers_tp.cli import main
from sentence_transformers_tp.evaluation.model_meta import (
    backbone_license,
    backbone_source,
    evaluate_to_results_folder,
    local_model_meta,
    model_meta_to_json,
    to_model_meta,
    tuning_datasets,
)
from sentence_transformers_tp.evaluation.mteb_retrieval import local_retrieval_task
from sentence_transformers_tp.evaluation.mteb_tasks import local_sts_tasks
from sentence_transformers_tp.evaluation.retrieval import evaluate_retrieval

from ..conftest import build_backbone
from .conftest import FIXTURE_DATA
from .test_retrieval import BEIR


@pytest.fixture(scope="module")
def backbone_path(tmp_path_factory) -> Path:
    """A tiny random Llama checkpoint."""
    return build_backbone(tmp_path_factory.mktemp("meta-llama"), "llama")


@pytest.fixture(scope="module")
def tp_model(backbone_path):
    """A SentenceTransformer with a TP module (TP before layers 1-2, final layer) on the tiny Llama."""
    from sentence_transformers import SentenceTransformer

    from sentence_transformers_tp.module import TokenPrependingTransformer

    module = TokenPrependingTransformer(str(backbone_path), tp_start=1, tp_exit=3, output_layer=-1)
    return SentenceTransformer(modules=[module], device="cpu")


def test_meta_fields_come_from_the_model_without_deprecation_warnings(tp_model):
    """Name, revision, sizes, framework, similarity, instructions and loader are filled offline, and building the
    meta triggers no Future/DeprecationWarning (no get_sentence_embedding_dimension)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        meta = local_model_meta(tp_model, release_date="2026-11-30")
    assert meta.name == tp_model.model_card_data.model_name
    assert meta.name.startswith("sentence-transformers-tp/") and meta.name.endswith("-prompteol-tp1-3-L-1")
    assert meta.revision.startswith("tp-") and len(meta.revision) == 15
    assert meta.n_parameters == sum(p.numel() for p in tp_model.parameters())
    assert meta.embed_dim == 32 and meta.max_tokens == tp_model.max_seq_length
    assert meta.framework == ["Sentence Transformers", "PyTorch"] and meta.similarity_fn_name.value == "cosine"
    assert meta.use_instructions is True and meta.training_datasets == set()
    assert meta.adapted_from is None and meta.license is None  # a local random checkpoint
    assert "Token Prepending" in meta.citation and str(meta.release_date) == "2026-11-30"
    data = json.loads(model_meta_to_json(meta))
    assert data["loader"] == "load_tp_model" and data["loader_kwargs"]["settings"]["tp_exit"] == 3
    assert local_model_meta(tp_model, release_date="2026-11-30") == meta


def test_revision_and_name_follow_the_tp_settings(tp_model):
    """Other TP settings give another name and revision; explicit name/revision/datasets override the defaults."""
    from sentence_transformers_tp.evaluation.variants import Variant, apply_variant

    meta = local_model_meta(tp_model)
    variant = Variant(label="vanilla", tp_start=1, tp_exit=1, output_layer=-1, roles=("vanilla_same_layer",))
    with apply_variant(tp_model, variant) as vanilla:
        other = local_model_meta(vanilla)
    assert other.name.endswith("-notp-L-1") and other.revision != meta.revision
    custom = local_model_meta(tp_model, name="org/custom", revision="v1", training_datasets=["SciFact"])
    assert (custom.name, custom.revision, custom.training_datasets) == ("org/custom", "v1", {"SciFact"})
    with pytest.raises(ValueError, match="org/name"):
        local_model_meta(tp_model, name="no-org")


def test_backbone_facts_and_tuning_datasets_from_presets():
    """Named backbones give hub id, license and languages; preset settings count their tuning data (STS-B dev)."""
    smollm2 = SimpleNamespace(backbone_name="smollm2", template="prompteol", tp_start=1, tp_exit=1, output_layer=28)
    assert backbone_source(smollm2) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert backbone_license(smollm2) == "apache-2.0"
    assert tuning_datasets(smollm2) == {"STSBenchmark"}
    assert tuning_datasets(SimpleNamespace(**{**vars(smollm2), "output_layer": 20})) == set()
    assert backbone_source(SimpleNamespace(backbone_name="meta-llama/Llama-2-7b-hf")) == "meta-llama/Llama-2-7b-hf"
    assert backbone_source(SimpleNamespace(backbone_name="gemma3-270m")) == "google/gemma-3-270m"


def test_load_model_rebuilds_the_same_model(tp_model):
    """meta.load_model() returns an MTEB wrapper whose SentenceTransformer gives the same embeddings and name."""
    meta = local_model_meta(tp_model)
    loaded = meta.load_model()
    assert loaded.mteb_model_meta.name == meta.name and loaded.mteb_model_meta.revision == meta.revision
    assert loaded.model.model_card_data.model_name == meta.name
    texts = ["A man is playing a guitar.", "The cat sleeps."]
    np.testing.assert_allclose(loaded.model.encode(texts), tp_model.encode(texts), atol=1e-5)


def test_results_folder_has_the_results_repository_layout_and_loads_with_mteb(tp_model, tmp_path):
    """MTEB results go to results/<org__name>/<revision>/<Task>.json with model_meta.json, and mteb.ResultCache
    loads them back with the meta and the same scores as our evaluators."""
    import mteb

    meta = local_model_meta(tp_model)
    tasks = [local_retrieval_task(BEIR, "train"), *local_sts_tasks(FIXTURE_DATA, ["stsb"], "dev")]
    evaluate_to_results_folder(tp_model, tasks, tmp_path, encode_kwargs={"batch_size": 4}, show_progress_bar=False)
    folder = tmp_path / "results" / meta.name.replace("/", "__") / meta.revision
    assert sorted(p.name for p in folder.glob("*.json")) == [
        "LocalSTSBenchmark.json",
        "Localbeir.json",
        "model_meta.json",
    ]
    assert json.loads((folder / "model_meta.json").read_text())["name"] == meta.name

    loaded = mteb.ResultCache(tmp_path).load_results(models=[meta.name], tasks=["Localbeir", "LocalSTSBenchmark"])
    (model_result,) = loaded.model_results
    assert (model_result.model_name, model_result.model_revision) == (meta.name, meta.revision)
    assert model_result.model_meta is not None
    scores = {t.task_name: t.get_score() for t in model_result.task_results}
    ours = evaluate_retrieval(tp_model, BEIR, "train", batch_size=4).tasks["beir"].ndcg_at_10
    assert 100 * scores["Localbeir"] == pytest.approx(ours, abs=1e-3)


def test_cli_mteb_meta_prints_json_and_python(backbone_path, tmp_path, capsys):
    """st-tp mteb-meta prints the hub meta as JSON (name, mteb's loader) or writes Python code to a file; the hub
    name and revision are required (changed in issue 21: no default organisation, no invented revision)."""
    args = ["mteb-meta", "--model", str(backbone_path), "--tp-start", "1", "--tp-exit", "3", "--release-date"]
    hub = ["--name", "org/x", "--revision", "0123abcd"]
    assert main([*args, "2026-11-30", *hub, "--training-dataset", "SciFact"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "org/x" and data["revision"] == "0123abcd"
    assert data["loader"] == "SentenceTransformerEncoderWrapper" and data["loader_kwargs"] == {
        "trust_remote_code": True
    }
    assert data["training_datasets"] == ["SciFact"] and data["embed_dim"] == 32
    out = tmp_path / "meta.py"
    assert main([*args, "2026-11-30", "--format", "python", *hub, "--output", str(out)]) == 0
    assert out.read_text().startswith("ModelMeta(") and "name='org/x'" in out.read_text()
    assert main([*args, "not-a-date", *hub]) == 1
    with pytest.raises(SystemExit):
        main([*args, "2026-11-30"])
    assert "required: --name, --revision" in capsys.readouterr().err


def test_cli_evaluate_retrieval_and_output_folder(backbone_path, tmp_path, capsys):
    """st-tp evaluate --retrieval prints the retrieval table and JSON; with --mteb --output-folder the MTEB results
    of the same run land in the results-repository layout."""
    out = tmp_path / "rows.json"
    code = main(
        [
            "evaluate",
            "--model",
            str(backbone_path),
            "--retrieval",
            str(BEIR),
            "--retrieval-split",
            "train",
            "--mteb",
            "--output-folder",
            str(tmp_path / "mteb"),
            "--no-progress",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "nDCG@10" in printed and "beir (train)" in printed
    rows = json.loads(out.read_text())
    kinds = [row["kind"] for row in rows]
    assert kinds == ["mteb", "retrieval"]
    retrieval = rows[1]
    assert retrieval["settings"]["split"] == "train" and retrieval["tasks"]["beir"]["n_queries"] == 4
    assert rows[0]["tasks"]["Localbeir"]["score"] == pytest.approx(retrieval["tasks"]["beir"]["score"], abs=1e-3)
    assert len(list((tmp_path / "mteb" / "results").glob("*/*/Localbeir.json"))) == 1
    assert main(["evaluate", "--model", str(backbone_path), "--retrieval", str(BEIR), "--output-folder", "x"]) == 1


def test_hub_meta_needs_the_repository_and_an_explicit_revision(tp_model):
    """to_model_meta has no default organisation and invents no revision: a missing or malformed name is a one-line
    error, and revision must be given (None explicitly means every revision)."""
    with pytest.raises(ValueError, match="needs name='org/repo'"):
        to_model_meta(tp_model, revision="0123abcd")
    for bad in ("no-org", "a/b/c", "/abs"):
        with pytest.raises(ValueError, match="hub repository 'org/repo'"):
            to_model_meta(tp_model, name=bad, revision="0123abcd")
    with pytest.raises(TypeError, match="revision"):
        to_model_meta(tp_model, name="org/tp-model")
    assert to_model_meta(tp_model, name="org/tp-model", revision=None).revision is None


def test_hub_meta_uses_mteb_own_loader_with_trust_remote_code(tp_model, backbone_path):
    """The hub meta loads through mteb's SentenceTransformerEncoderWrapper with trust_remote_code=True, names no
    local path and no loader of this package, and mteb resolves its loader from the JSON by name."""
    from mteb.models import ModelMeta, SentenceTransformerEncoderWrapper

    meta = to_model_meta(tp_model, name="org/tp-model", revision="0123abcd", release_date="2026-11-30")
    assert meta.loader is SentenceTransformerEncoderWrapper and meta.loader_kwargs == {"trust_remote_code": True}
    assert (meta.name, meta.revision) == ("org/tp-model", "0123abcd")
    assert meta.reference == "https://huggingface.co/org/tp-model" and meta.adapted_from is None
    text = model_meta_to_json(meta)
    assert str(backbone_path) not in text and "load_tp_model" not in text
    data = json.loads(text)
    data.pop("is_cross_encoder", None)
    assert ModelMeta.model_validate_json_resolved(json.dumps(data)).loader is SentenceTransformerEncoderWrapper


def test_cli_evaluate_files_published_results_under_the_hub_name(backbone_path, tmp_path, capsys):
    """--hub-name/--hub-revision file the model row's MTEB results under the hub repository and commit (mteb's
    loader in model_meta.json); --hub-name without a revision or without --mteb is a one-line error."""
    base = ["evaluate", "--model", str(backbone_path), "--retrieval", str(BEIR), "--retrieval-split", "train"]
    folder = tmp_path / "mteb"
    hub = ["--hub-name", "org/tp-model", "--hub-revision", "0123abcd"]
    assert main([*base, "--mteb", "--output-folder", str(folder), *hub, "--no-progress"]) == 0
    results = folder / "results" / "org__tp-model" / "0123abcd"
    assert (results / "Localbeir.json").is_file()
    assert json.loads((results / "model_meta.json").read_text())["loader"] == "SentenceTransformerEncoderWrapper"
    capsys.readouterr()
    assert main([*base, "--mteb", "--hub-name", "org/tp-model"]) == 1
    assert "--hub-name needs --hub-revision" in capsys.readouterr().err
    assert main([*base, *hub]) == 1
    assert "add --mteb" in capsys.readouterr().err
