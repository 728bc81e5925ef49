"""Tests for the checked conversion cache: its root, remembered hashes, locks, stale temporaries, listing and
clearing, and the integrity of its entries (manifest, damaged and older entries)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from sentence_transformers_tp import cache_store, gguf_conversion
from sentence_transformers_tp.backbones import resolve_backbone
from sentence_transformers_tp.cache_store import (
    CacheEntryDamagedError,
    check_cache_entry,
    clear_cache,
    default_cache_dir,
    file_sha256,
    list_cache,
)
from tests.gguf_fakes import cache_entries, fake_converter, fake_gguf, truncate

pytestmark = pytest.mark.usefixtures("isolated_cache")


# ------------------------------------------------------------------------------------------- cache root


def test_default_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ST_TP_CACHE_DIR wins, then $XDG_CACHE_HOME/sentence_transformers_tp, then ~/.cache/sentence_transformers_tp."""
    monkeypatch.setenv("ST_TP_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("ST_TP_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "sentence_transformers_tp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "sentence_transformers_tp"


# ------------------------------------------------------------------------ hashes, locks, temporaries, list, clear


def test_stale_temporary_directories_are_cleaned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Temporaries left by a killed conversion of the same file are removed by the next conversion and never used."""
    source = fake_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"
    entry = f"tiny-{cache_store.file_sha256(source, cache_dir=cache)[:16]}"
    stale = cache / "gguf" / f".{entry}.tmp-killed"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}", encoding="utf-8")

    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", fake_converter([]))
    checkpoint = Path(resolve_backbone(str(source), cache_dir=cache))
    assert checkpoint.name == entry
    assert cache_entries(cache) == [entry]


def _lock_files(root: Path) -> list[str]:
    """Every ``*.lock`` file anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.lock")) if root.exists() else []


def test_file_sha256_is_remembered_per_file(tmp_path: Path) -> None:
    """file_sha256 is the content's SHA-256; an unchanged file is not read again, a changed one is."""
    path = fake_gguf(tmp_path / "a.gguf")
    cache = tmp_path / "cache"
    assert file_sha256(path, cache_dir=cache) == hashlib.sha256(path.read_bytes()).hexdigest()
    memo = next((cache / "hashes").iterdir())
    memo.write_text("f" * 64 + "\n", encoding="utf-8")  # proves the remembered value is used
    assert file_sha256(path, cache_dir=cache) == "f" * 64
    time.sleep(0.01)
    fake_gguf(path, b"changed")
    assert file_sha256(path, cache_dir=cache) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_lock_file_is_left_after_a_failed_or_successful_conversion(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Neither a failed nor a successful conversion (nor an assembly) leaves a lock file in the cache."""
    source = fake_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"

    def broken(src: Path, output_dir: Path) -> dict:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        resolve_backbone(str(source), cache_dir=cache)
    assert _lock_files(cache) == []
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", fake_converter([]))
    resolve_backbone(str(source), cache_dir=cache)
    assert _lock_files(cache) == []


def test_lock_is_exclusive_and_removed_after_use(tmp_path: Path) -> None:
    """The cache lock excludes a second holder until released, and its file is gone afterwards."""
    lock = tmp_path / ".entry.lock"
    order: list[str] = []

    def second() -> None:
        with cache_store.exclusive_lock(lock):
            order.append("second")

    with cache_store.exclusive_lock(lock):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        order.append("first")
    thread.join()
    assert order == ["first", "second"]
    assert not lock.exists()


def test_list_and_clear_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """list_cache shows every checkpoint with its size and source; clear_cache removes named entries or all."""
    cache = tmp_path / "cache"
    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", fake_converter([]))
    one = Path(resolve_backbone(str(fake_gguf(tmp_path / "one.gguf", b"1")), cache_dir=cache))
    two = Path(resolve_backbone(str(fake_gguf(tmp_path / "two.gguf", b"2")), cache_dir=cache))
    entries = {entry.name: entry for entry in list_cache(cache)}
    assert {one.name, two.name, "hashes"} == set(entries)
    assert entries[one.name].kind == "checkpoint" and entries[one.name].source == "one.gguf"
    assert entries[one.name].size > 0

    assert [entry.name for entry in clear_cache(cache, [one.name])] == [one.name]
    assert not one.exists() and two.exists()
    with pytest.raises(KeyError, match="no cache entry named 'nope'"):
        clear_cache(cache, ["nope"])
    clear_cache(cache)
    assert list_cache(cache) == []


# ------------------------------------------------------------------------------------------- cache integrity


def _checkpoint_converter(calls: list[Path]):
    """Return a stand-in for ``_convert_gguf`` writing a small but well-formed checkpoint (config, tokenizer,
    safetensors weights)."""
    import numpy as np
    from safetensors.numpy import save_file

    def convert(source: Path, output_dir: Path) -> dict:
        calls.append(source)
        (output_dir / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
        (output_dir / "tokenizer.json").write_text(json.dumps({"vocab": {f"t{i}": i for i in range(50)}}))
        save_file({"w": np.arange(256, dtype=np.float32)}, str(output_dir / "model.safetensors"))
        return {"source": str(source)}

    return convert


@pytest.fixture
def checkpoint_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """A fake GGUF source converted (by the well-formed stand-in) into a cache; yield (source, entry, calls)."""
    calls: list[Path] = []
    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", _checkpoint_converter(calls))
    source = fake_gguf(tmp_path / "tiny.gguf")
    entry = Path(resolve_backbone(str(source), cache_dir=tmp_path / "cache"))
    return source, entry, calls


def test_build_writes_a_manifest_of_every_file(checkpoint_cache: tuple[Path, Path, list[Path]]) -> None:
    """A new entry records the size and SHA-256 of every file written at build time, and checks out as ok."""
    _, entry, _ = checkpoint_cache
    manifest = json.loads((entry / "st_tp_manifest.json").read_text(encoding="utf-8"))
    files = {p.name for p in entry.iterdir()} - {"st_tp_manifest.json"}
    assert set(manifest["files"]) == files >= {"config.json", "tokenizer.json", "model.safetensors"}
    for name, recorded in manifest["files"].items():
        data = (entry / name).read_bytes()
        assert recorded["size"] == len(data) and recorded["sha256"] == hashlib.sha256(data).hexdigest()
    assert check_cache_entry(entry) == check_cache_entry(entry, full=True) == ("ok", "")


@pytest.mark.parametrize("damage", ["truncate weights", "truncate tokenizer", "delete tokenizer", "rewrite tokenizer"])
def test_damaged_entry_is_rebuilt_from_its_source(
    checkpoint_cache: tuple[Path, Path, list[Path]], tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A truncated, missing or rewritten (same size) file of an entry is noticed before loading, and the entry is
    converted again from its GGUF source, with a warning naming the problem."""
    source, entry, calls = checkpoint_cache
    intact = {name: (entry / name).read_bytes() for name in ("model.safetensors", "tokenizer.json")}
    tokenizer = entry / "tokenizer.json"
    if damage == "truncate weights":
        truncate(entry / "model.safetensors")
    elif damage == "truncate tokenizer":
        truncate(tokenizer)
    elif damage == "delete tokenizer":
        tokenizer.unlink()
    else:
        time.sleep(0.01)
        tokenizer.write_bytes(tokenizer.read_bytes().replace(b"t1", b"x1"))
    assert check_cache_entry(entry)[0] == "damaged"
    with caplog.at_level("WARNING", logger="sentence_transformers_tp.gguf_conversion"):
        assert resolve_backbone(str(source), cache_dir=tmp_path / "cache") == str(entry)
    assert len(calls) == 2
    assert "is damaged" in caplog.text and "rebuilding it from" in caplog.text
    assert {name: (entry / name).read_bytes() for name in intact} == intact
    assert check_cache_entry(entry) == ("ok", "")


def test_damaged_entry_given_by_folder(checkpoint_cache: tuple[Path, Path, list[Path]]) -> None:
    """An entry folder given directly is checked too: rebuilt while its source exists, else a one-line
    CacheEntryDamagedError that names `st-tp cache clear <entry>`."""
    source, entry, calls = checkpoint_cache
    truncate(entry / "model.safetensors")
    assert resolve_backbone(str(entry)) == str(entry) and len(calls) == 2
    assert check_cache_entry(entry) == ("ok", "")
    truncate(entry / "model.safetensors")
    source.unlink()
    with pytest.raises(CacheEntryDamagedError, match=f"st-tp cache clear {entry.name}") as raised:
        resolve_backbone(str(entry))
    assert "\n" not in str(raised.value) and "model.safetensors" in str(raised.value)
    assert len(calls) == 2


def test_a_touched_file_is_hashed_once_then_trusted(
    checkpoint_cache: tuple[Path, Path, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file with a new mtime but its build-time content (a copied cache) is hashed once, found intact, and its
    mtime recorded, so the next check hashes nothing."""
    _, entry, _ = checkpoint_cache
    weights = entry / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    hashed: list[str] = []
    real_hash = cache_store._hash_file
    monkeypatch.setattr(cache_store, "_hash_file", lambda path: hashed.append(path.name) or real_hash(path))
    assert check_cache_entry(entry) == ("ok", "") and hashed == ["model.safetensors"]
    assert check_cache_entry(entry) == ("ok", "") and hashed == ["model.safetensors"]


def test_full_verify_catches_a_change_that_keeps_size_and_mtime(
    checkpoint_cache: tuple[Path, Path, list[Path]], tmp_path: Path
) -> None:
    """A change that keeps a file's size and mtime (bit rot) passes the per-load check; list_cache(verify=True),
    which hashes every file, shows it as damaged."""
    _, entry, _ = checkpoint_cache
    weights = entry / "model.safetensors"
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (listed,) = [e for e in list_cache(tmp_path / "cache") if e.kind == "checkpoint"]
    assert listed.status == "ok"
    (verified,) = [e for e in list_cache(tmp_path / "cache", verify=True) if e.kind == "checkpoint"]
    assert verified.status == "damaged" and "model.safetensors" in verified.problem


def test_entry_without_manifest_is_checked_once_and_recorded(
    checkpoint_cache: tuple[Path, Path, list[Path]], tmp_path: Path
) -> None:
    """An entry of an older version (no manifest) is listed as unverified; its first use checks its structure and
    writes the manifest without converting again; a truncated one is rebuilt instead."""
    source, entry, calls = checkpoint_cache
    (entry / "st_tp_manifest.json").unlink()
    (listed,) = [e for e in list_cache(tmp_path / "cache") if e.kind == "checkpoint"]
    assert listed.status == "unverified"
    assert resolve_backbone(str(source), cache_dir=tmp_path / "cache") == str(entry) and len(calls) == 1
    assert (entry / "st_tp_manifest.json").is_file() and check_cache_entry(entry) == ("ok", "")

    (entry / "st_tp_manifest.json").unlink()
    truncate(entry / "model.safetensors", keep=100)
    status, problem = check_cache_entry(entry)
    assert status == "damaged" and "model.safetensors" in problem
    assert resolve_backbone(str(source), cache_dir=tmp_path / "cache") == str(entry) and len(calls) == 2
    assert check_cache_entry(entry) == ("ok", "")
