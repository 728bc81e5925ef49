"""Saved models wherever they live (local folder, hub id in the HF cache, cache snapshot folder) bring their saved
settings through every Python entry point; the Hub is simulated by a local HF cache (offline)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp import saved as saved_lib
from sentence_transformers_tp.factory import build_model, is_saved_model, load_model
from sentence_transformers_tp.presets import saved_module_settings
from sentence_transformers_tp.saved import foreign_module_classes, hub_options, is_offline, resolve_saved_model
from tests.hub_cache import add_snapshot, use_hub_cache

REPO = "tp-org/tiny-tp"
BACKBONE_REPO = "tp-org/tiny-backbone"
MAIN, V1, PLAIN = "a" * 40, "b" * 40, "c" * 40
QUERY_TEMPLATE = 'This question : "{sentence}" means in one word:"'
TEXTS = ["A man is playing a guitar.", "The cat sleeps on the sofa."]
#: Settings of the main and the v1 saved models (both differ from the backbone's defaults: TP 1-4, layer -1).
MAIN_SETTINGS = {
    "template": "prompteol",
    "query_template": QUERY_TEMPLATE,
    "tp_start": 1,
    "tp_exit": 3,
    "output_layer": 3,
}
V1_SETTINGS = {"template": "knowledge", "tp_start": 1, "tp_exit": 2, "output_layer": 2}


@pytest.fixture(scope="module")
def saved_folders(tiny_llama, tmp_path_factory):
    """Two saved tiny TP models (what the repo holds at ``main`` and at tag ``v1``)."""
    root = tmp_path_factory.mktemp("hub-models")
    folders = {}
    for name, settings in (("main", MAIN_SETTINGS), ("v1", V1_SETTINGS)):
        settings = dict(settings)
        model = build_model(str(tiny_llama), settings.pop("template"), device="cpu", **settings)
        model.save(str(root / name))
        folders[name] = root / name
    return folders


@pytest.fixture(scope="module")
def expected(saved_folders):
    """Vectors of each saved model loaded from its local folder: plain, query and document encodes."""
    vectors = {}
    for name, folder in saved_folders.items():
        model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
        vectors[name] = (model.encode(TEXTS), model.encode_query(TEXTS), model.encode_document(TEXTS))
    return vectors


@pytest.fixture
def hub(tmp_path, monkeypatch, saved_folders, tiny_llama):
    """An offline HF cache holding the TP repo (main and tag v1) and a plain backbone repo; returns the cache."""
    cache = use_hub_cache(monkeypatch, tmp_path / "hf-home")
    add_snapshot(cache, REPO, saved_folders["main"], MAIN)
    add_snapshot(cache, REPO, saved_folders["v1"], V1, refs=("v1",))
    add_snapshot(cache, BACKBONE_REPO, tiny_llama, PLAIN)
    return cache


def vectors_of(model):
    """Plain, query and document vectors of a model."""
    return model.encode(TEXTS), model.encode_query(TEXTS), model.encode_document(TEXTS)


def assert_same_vectors(actual, reference):
    """Each of the three vector sets matches the reference."""
    for got, want in zip(actual, reference):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_resolve_local_folder_and_checkpoint(saved_folders, tiny_llama):
    """A local saved folder resolves to itself; a plain checkpoint folder or a missing file is not a saved model."""
    assert resolve_saved_model(saved_folders["main"]) == saved_folders["main"]
    assert resolve_saved_model(str(tiny_llama)) is None
    assert resolve_saved_model(str(tiny_llama / "missing.gguf")) is None


def test_resolve_hub_id_from_the_cache(hub):
    """A cached hub id resolves to its snapshot: main by default, and the snapshot of revision= (tag or commit)."""
    snapshots = hub / "models--tp-org--tiny-tp" / "snapshots"
    assert resolve_saved_model(REPO) == snapshots / MAIN
    assert resolve_saved_model(REPO, revision="v1") == snapshots / V1
    assert resolve_saved_model(REPO, revision=V1) == snapshots / V1
    assert resolve_saved_model(BACKBONE_REPO) is None
    assert resolve_saved_model("tp-org/not-cached") is None
    assert resolve_saved_model(REPO, revision="no-such-tag") is None


def test_resolve_honours_an_explicit_cache_folder(hub, tmp_path, monkeypatch):
    """cache_folder= is looked in instead of the default cache."""
    other = tmp_path / "other-cache"
    shutil.move(str(hub / "models--tp-org--tiny-tp"), str(other / "models--tp-org--tiny-tp"))
    assert resolve_saved_model(REPO) is None
    assert resolve_saved_model(REPO, cache_folder=other) == other / "models--tp-org--tiny-tp" / "snapshots" / MAIN


def test_named_backbones_and_paths_are_never_looked_up(monkeypatch):
    """Named offline backbones, .gguf names and relative paths never reach huggingface_hub."""
    monkeypatch.setattr(saved_lib, "hf_hub_download", lambda *a, **k: pytest.fail(f"looked up {a}"))
    for spec in ("smollm2", "SmolLM2", "gemma3-270m", "org/model.gguf", "./not/here", "~/nothing", "a/b/c"):
        assert resolve_saved_model(spec) is None


def test_offline_mode_is_read_at_call_time(monkeypatch):
    """HF_HUB_OFFLINE set after huggingface_hub was imported still keeps the lookup in the cache."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert is_offline()
    calls = []

    def download(repo_id, filename, **kwargs):
        calls.append(kwargs)
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(saved_lib, "hf_hub_download", download)
    assert resolve_saved_model(REPO) is None
    assert [call["local_files_only"] for call in calls] == [True]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not is_offline()
    assert resolve_saved_model(REPO, local_files_only=True) is None
    assert [call["local_files_only"] for call in calls] == [True, True]


def test_online_lookup_fetches_only_the_config_files(saved_folders, tmp_path, monkeypatch):
    """Online, a hub id is checked by fetching modules.json and sentence_bert_config.json only (no weights)."""
    monkeypatch.setattr(saved_lib, "is_offline", lambda: False)
    fetched = []

    def download(repo_id, filename, *, revision, cache_dir, token, local_files_only):
        assert (repo_id, revision, token, local_files_only) == (REPO, "v1", "secret", False)
        fetched.append(filename)
        target = tmp_path / "snap" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(saved_folders["main"] / filename, target)
        return str(target)

    monkeypatch.setattr(saved_lib, "hf_hub_download", download)
    assert resolve_saved_model(REPO, revision="v1", token="secret") == tmp_path / "snap"
    assert fetched == ["modules.json", "sentence_bert_config.json"]


def test_hub_options_come_from_the_transformers_dicts():
    """revision / cache_dir / token of sentence-transformers' loader dicts become resolve_saved_model options."""
    config = {"revision": "v1", "cache_dir": "/c", "token": None, "subfolder": "", "local_files_only": False}
    expected = {"revision": "v1", "cache_folder": "/c", "token": "t", "local_files_only": False}
    assert hub_options(config, {"token": "t"}, None) == expected
    assert hub_options(None, {}) == {}


def test_is_saved_model_and_saved_settings_of_a_hub_id(hub):
    """is_saved_model and saved_module_settings see a cached hub id (and its revisions) like a local folder."""
    assert is_saved_model(REPO) and is_saved_model(REPO, revision="v1")
    assert not is_saved_model(BACKBONE_REPO)
    assert saved_module_settings(REPO)["tp_exit"] == 3
    assert saved_module_settings(REPO, revision="v1")["template"] == "knowledge"
    assert saved_module_settings(BACKBONE_REPO) is None


def test_every_entry_point_gives_the_local_folder_vectors(hub, expected):
    """TokenPrependingTransformer(id), load_model(id), SentenceTransformer(id) and a snapshot folder all give
    the vectors of the same model loaded from its local folder."""
    module = TokenPrependingTransformer(REPO)
    assert (module.tp_start, module.tp_exit, module.output_layer) == (1, 3, 3)
    assert module.query_template == QUERY_TEMPLATE
    assert_same_vectors(vectors_of(SentenceTransformer(modules=[module], device="cpu")), expected["main"])
    assert_same_vectors(vectors_of(load_model(REPO, device="cpu")), expected["main"])
    stock = SentenceTransformer(REPO, trust_remote_code=True, device="cpu")
    assert_same_vectors(vectors_of(stock), expected["main"])
    snapshot = hub / "models--tp-org--tiny-tp" / "snapshots" / MAIN
    assert_same_vectors(vectors_of(load_model(str(snapshot), device="cpu")), expected["main"])
    from_snapshot = TokenPrependingTransformer(str(snapshot))
    assert_same_vectors(vectors_of(SentenceTransformer(modules=[from_snapshot], device="cpu")), expected["main"])


def test_revision_picks_its_snapshot(hub, expected):
    """revision= (a tag or a commit) loads the settings and weights of that snapshot, through every entry point."""
    for revision in ("v1", V1):
        model = load_model(REPO, revision=revision, device="cpu")
        assert model[0].template == "knowledge" and model[0].tp_exit == 2
        assert_same_vectors(vectors_of(model), expected["v1"])
    stock = SentenceTransformer(REPO, revision="v1", trust_remote_code=True, device="cpu")
    assert_same_vectors(vectors_of(stock), expected["v1"])
    hub_kwargs = {"revision": "v1"}
    module = TokenPrependingTransformer(
        REPO, model_kwargs=hub_kwargs, config_kwargs=hub_kwargs, processor_kwargs=hub_kwargs
    )
    assert module.template == "knowledge" and module.query_template is None
    assert_same_vectors(vectors_of(SentenceTransformer(modules=[module], device="cpu")), expected["v1"])


def test_plain_backbone_repo_is_built_with_defaults(hub):
    """A cached hub id without modules.json is a backbone: built with the template's default settings."""
    model = load_model(BACKBONE_REPO, "prompteol", device="cpu")
    assert (model[0].tp_start, model[0].tp_exit, model[0].output_layer) == (1, 4, -1)
    with pytest.raises(ValueError, match="saved model, whose settings are fixed"):
        load_model(REPO, "prompteol", device="cpu")


def test_saved_model_takes_loader_kwargs(saved_folders):
    """A saved model may be loaded with loader options such as a dtype; its settings stay the saved ones."""
    model = load_model(str(saved_folders["main"]), device="cpu", model_kwargs={"dtype": torch.bfloat16})
    assert model[0].model.dtype == torch.bfloat16
    assert (model[0].tp_exit, model[0].output_layer) == (3, 3)


def test_foreign_module_classes_need_trust_remote_code(saved_folders, tmp_path):
    """A saved model naming a module class outside sentence-transformers(-tp) is refused without trust_remote_code."""
    folder = tmp_path / "foreign"
    shutil.copytree(saved_folders["main"], folder)
    modules = json.loads((folder / "modules.json").read_text())
    assert foreign_module_classes(folder) == []
    modules.append({"idx": 1, "name": "1", "path": "1_Evil", "type": "evil_module.Evil"})
    (folder / "modules.json").write_text(json.dumps(modules))
    assert foreign_module_classes(folder) == ["evil_module.Evil"]
    with pytest.raises(ValueError, match=r"evil_module\.Evil.*trust_remote_code=True"):
        load_model(str(folder), device="cpu")
