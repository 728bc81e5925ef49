"""Model card hub metadata and results, and the push_to_hub -> MTEB flow against a local HF cache (no network)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from huggingface_hub import ModelCard
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp.cli import main
from sentence_transformers_tp.evaluation import add_evaluation_results
from sentence_transformers_tp.module import TokenPrependingTransformer

from .evaluation.conftest import FIXTURE_DATA

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def saved(tiny_llama, tmp_path_factory) -> Path:
    """A saved TP model on the tiny Llama, named as the SmolLM2 backbone (so its hub facts are known)."""
    module = TokenPrependingTransformer(
        str(tiny_llama),
        "knowledge",
        tp_start=1,
        tp_exit=3,
        output_layer=-1,
        backbone_name="smollm2",
        demonstrations=[["A man is playing on a guitar and singing.", "Music"]],
    )
    path = tmp_path_factory.mktemp("card") / "model"
    SentenceTransformer(modules=[module], device="cpu").save(str(path))
    return path


@pytest.fixture(scope="module")
def results(saved, tmp_path_factory) -> Path:
    """`st-tp evaluate --json` rows of the saved model on the whole STS fixture, with --compare-vanilla rows."""
    out = tmp_path_factory.mktemp("results") / "results.json"
    args = ["evaluate", "--model", str(saved), "--data-dir", str(FIXTURE_DATA), "--split", "dev"]
    assert main([*args, "--compare-vanilla", "--no-progress", "--json", str(out)]) == 0
    return out


def _front_matter(folder: Path) -> dict:
    return ModelCard.load(folder / "README.md").data.to_dict()


def test_card_has_hub_metadata_of_the_backbone(saved):
    """The saved card names base_model, license, language, library_name, pipeline_tag and the TP tags, and the
    setting's whole label (template, demonstration, TP band, layer)."""
    data = _front_matter(saved)
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (data["license"], data["language"]) == ("apache-2.0", ["en"])
    assert (data["library_name"], data["pipeline_tag"]) == ("sentence-transformers", "sentence-similarity")
    assert {"sentence-transformers", "token-prepending", "sentence-transformers-tp"} <= set(data["tags"])
    text = (saved / "README.md").read_text(encoding="utf-8")
    assert "**Setting:** Knowledge + 1 demo + TP 1:3, L-1" in text


def test_user_metadata_wins_and_local_backbones_get_no_base_model(tiny_llama, tmp_path):
    """A license / language the user sets is kept; a local backbone path is never written as base_model."""
    from sentence_transformers import SentenceTransformerModelCardData

    module = TokenPrependingTransformer(str(tiny_llama), "prompteol", tp_start=1, tp_exit=3, output_layer=-1)
    card = SentenceTransformerModelCardData(license="mit", language="de")
    model = SentenceTransformer(modules=[module], device="cpu", model_card_data=card)
    model.save(str(tmp_path / "m"))
    data = _front_matter(tmp_path / "m")
    assert (data["license"], data["language"]) == ("mit", ["de"]) and "base_model" not in data
    assert str(tiny_llama) not in (tmp_path / "m" / "README.md").read_text(encoding="utf-8").split("---")[1]


def test_results_become_the_model_index(saved, results, tmp_path):
    """add_evaluation_results keeps the model's own row (not the --compare-vanilla rows) and the card's
    model-index carries its scores as sentence-transformers writes them (spearman_cosine as a fraction)."""
    rows = json.loads(results.read_text())
    model = SentenceTransformer(str(saved), trust_remote_code=True, device="cpu")
    attached = add_evaluation_results(model, results)
    assert [row["label"] for row in attached] == [rows[0]["label"]] and len(rows) == 3
    model.save(str(tmp_path / "with-results"))
    index = _front_matter(tmp_path / "with-results")["model-index"]
    (entry,) = index
    values = {r["dataset"]["name"]: r["metrics"][0] for r in entry["results"]}
    assert set(values) == {"STS-B", "SICK-R"}
    assert values["STS-B"]["type"] == "spearman_cosine"
    assert values["STS-B"]["value"] == pytest.approx(rows[0]["tasks"]["STS-B"]["spearman"] / 100, abs=1e-6)
    datasets = {r["dataset"]["name"]: (r["dataset"]["type"], r["dataset"]["split"]) for r in entry["results"]}
    assert datasets == {"STS-B": ("mteb/stsbenchmark-sts", "dev"), "SICK-R": ("mteb/sickr-sts", "trial")}
    text = (tmp_path / "with-results" / "README.md").read_text(encoding="utf-8")
    assert "## Evaluation" in text and f"| {rows[0]['label']} |" in text


def test_results_of_another_setting_or_a_subset_are_refused(saved, results):
    """A row of another setting, without a setting record, or on part of the data is a one-line error."""
    rows = json.loads(results.read_text())
    model = SentenceTransformer(str(saved), trust_remote_code=True, device="cpu")
    other = {**rows[0], "config": {**rows[0]["config"], "demonstrations": []}}
    with pytest.raises(ValueError, match="was measured with Knowledge \\+ TP 1:3, L-1, but the model is Knowledge"):
        add_evaluation_results(model, [other])
    with pytest.raises(ValueError, match="no setting record"):
        add_evaluation_results(model, {**rows[0], "config": {}})
    subset = {**rows[0], "settings": {**rows[0]["settings"], "limit": 3}}
    with pytest.raises(ValueError, match="part of the data"):
        add_evaluation_results(model, [subset])
    assert add_evaluation_results(model, [subset], allow_subsets=True)
    with pytest.raises(ValueError, match="no result of the model's own setting"):
        add_evaluation_results(model, rows[1:])


def test_push_to_hub_then_mteb_loads_it_from_a_local_hf_cache(saved, results, tmp_path, monkeypatch):
    """push_to_hub (HfApi replaced by a local recorder) uploads the card with metadata and results; the uploaded
    folder in an HF cache snapshot loads through to_model_meta(...).load_model() (mteb's loader,
    trust_remote_code=True, offline) with the saved settings and the same embeddings."""
    import sentence_transformers.base.model as st_model

    from sentence_transformers_tp.evaluation.model_meta import to_model_meta

    uploaded = tmp_path / "uploaded"

    class RecordingApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            return SimpleNamespace(repo_id=repo_id)

        def upload_folder(self, repo_id, folder_path, **kwargs):
            shutil.copytree(folder_path, uploaded)
            return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{COMMIT}", pr_url=None)

    model = SentenceTransformer(str(saved), trust_remote_code=True, device="cpu")
    add_evaluation_results(model, results)
    monkeypatch.setattr(st_model, "HfApi", RecordingApi)
    monkeypatch.setattr(st_model, "load_file_path", lambda *args, **kwargs: None)  # the repo has no README yet
    url = model.push_to_hub("org/tp-model")
    assert url.endswith(COMMIT)
    data = _front_matter(uploaded)
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and data["model-index"][0]["results"]
    assert data["model-index"][0]["name"] == "org/tp-model"
    config = json.loads((uploaded / "sentence_bert_config.json").read_text())
    assert config["demonstrations"] and (config["tp_start"], config["tp_exit"]) == (1, 3)

    monkeypatch.undo()
    cache = tmp_path / "hf-cache"
    repo = cache / "models--org--tp-model"
    shutil.copytree(uploaded, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    meta = to_model_meta(model, name="org/tp-model", revision=COMMIT)
    wrapper = meta.load_model(device="cpu", cache_folder=str(cache))
    loaded = wrapper.model
    assert loaded[0].demonstrations == model[0].demonstrations and loaded[0].tp_exit == 3
    texts = ["A man is playing a guitar.", "The cat sleeps."]
    np.testing.assert_allclose(loaded.encode(texts), model.encode(texts), atol=1e-5)
    assert wrapper.mteb_model_meta.name == "org/tp-model" and wrapper.mteb_model_meta.revision == COMMIT


def test_readme_data_and_publishing_commands_parse():
    """The st-tp command lines of the README's data step and publishing section parse with the current CLI, and
    the README no longer points at files outside the project."""
    import re
    import shlex

    from sentence_transformers_tp.cli import build_parser

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "../shared" not in text and "docs/boosters.md" in text
    parser = build_parser()
    commands = []
    for title in ("### Evaluation data\n", "## Publishing to the hub and the MTEB leaderboard\n"):
        start = text.index(title)
        section = text[start : text.index("\n## ", start + 1)]
        for block in re.findall(r"```bash\n(.*?)```", section, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("st-tp "):
                    commands.append(parser.parse_args(shlex.split(line)[1:]).command)
    assert commands == ["data", "data", "data", "evaluate", "mteb-meta", "evaluate"]
