"""``st-tp cache``: lists the cache entries with their size and removes the ones named (or all)."""

from __future__ import annotations

from pathlib import Path

from sentence_transformers_tp import backbones, gguf_conversion
from sentence_transformers_tp.cli import main


def _converted(tmp_path: Path, monkeypatch, name: str, payload: bytes) -> Path:
    """Convert a fake GGUF file into the cache at ``tmp_path / "cache"`` (no real conversion)."""

    def convert(source: Path, output_dir: Path) -> dict:
        (output_dir / "model.safetensors").write_bytes(b"0" * 2048)
        return {}

    monkeypatch.setattr(gguf_conversion, "_require_gguf_support", lambda: None)
    monkeypatch.setattr(gguf_conversion, "_convert_gguf", convert)
    source = tmp_path / name
    source.write_bytes(b"GGUF" + payload)
    return Path(backbones.resolve_backbone(str(source), cache_dir=tmp_path / "cache"))


def test_cache_list_and_clear(tmp_path, monkeypatch, capsys):
    """`st-tp cache` lists each entry with size and source; `clear NAME` and `clear --all` remove entries."""
    cache = tmp_path / "cache"
    one = _converted(tmp_path, monkeypatch, "one.gguf", b"1")
    two = _converted(tmp_path, monkeypatch, "two.gguf", b"2")
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"Cache {cache}: 3 entries" in out
    assert one.name in out and "one.gguf" in out and two.name in out

    assert main(["cache", "clear", "one.gguf", "--cache-dir", str(cache)]) == 0
    assert "Removed 1 entries" in capsys.readouterr().out
    assert not one.exists() and two.exists()
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 1
    assert "--all" in capsys.readouterr().err
    assert main(["cache", "clear", "nope", "--cache-dir", str(cache)]) == 1
    assert "no cache entry named 'nope'" in capsys.readouterr().err
    assert main(["cache", "clear", "--all", "--cache-dir", str(cache)]) == 0
    assert not two.exists()


def test_cache_list_shows_damaged_entries(tmp_path, monkeypatch, capsys):
    """`st-tp cache` marks an entry with a truncated file as damaged (naming the file) and names the clear command;
    `--verify` also hashes every file; intact entries are ok."""
    cache = tmp_path / "cache"
    one = _converted(tmp_path, monkeypatch, "one.gguf", b"1")
    two = _converted(tmp_path, monkeypatch, "two.gguf", b"2")
    (one / "model.safetensors").write_bytes(b"0" * 100)
    for extra in ([], ["--verify"]):
        assert main(["cache", *extra, "--cache-dir", str(cache)]) == 0
        lines = capsys.readouterr().out.splitlines()
        (damaged,) = [line for line in lines if one.name in line and "checkpoint" in line]
        (intact,) = [line for line in lines if two.name in line]
        assert "damaged (model.safetensors has 100 bytes, 2048 expected" in damaged
        assert "  ok  " in intact
        assert lines[-1].startswith("1 damaged") and f"st-tp cache clear {one.name}" in lines[-1]
    assert main(["cache", "clear", "--verify", "--all", "--cache-dir", str(cache)]) == 1
    assert "--verify belongs to 'st-tp cache list'" in capsys.readouterr().err
