"""``st-tp encode``: embeddings of arguments, files or stdin as .npy or JSON lines."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.cli import main


@pytest.fixture(scope="module")
def saved_model(tiny_llama, tmp_path_factory):
    """A saved tiny TP model folder."""
    path = tmp_path_factory.mktemp("saved") / "model"
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3)
    SentenceTransformer(modules=[module]).save(str(path))
    return path


def test_encode_arguments_to_json_lines_on_stdout(saved_model, capsys):
    """Sentences given as arguments come back as JSON lines with text and embedding, in order."""
    assert main(["encode", "--model", str(saved_model), "First one.", "Second one."]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["First one.", "Second one."]
    reference = SentenceTransformer(str(saved_model), trust_remote_code=True).encode(["First one.", "Second one."])
    np.testing.assert_allclose(np.array([line["embedding"] for line in lines]), reference, atol=1e-6)


def test_encode_file_to_npy_keeps_every_line(saved_model, tmp_path):
    """--input reads one sentence per line (empty lines included) and --output .npy writes one row per line."""
    source = tmp_path / "in.txt"
    source.write_text("alpha\n\ngamma\n", encoding="utf-8")
    target = tmp_path / "out.npy"
    assert main(["encode", "--model", str(saved_model), "--input", str(source), "--output", str(target)]) == 0
    matrix = np.load(target)
    assert matrix.shape == (3, 32)
    assert np.isfinite(matrix).all()


def test_encode_reads_stdin(saved_model, monkeypatch, tmp_path):
    """--input - reads standard input."""
    monkeypatch.setattr("sys.stdin", io.StringIO("one\ntwo\n"))
    target = tmp_path / "out.jsonl"
    assert main(["encode", "--model", str(saved_model), "--input", "-", "--output", str(target)]) == 0
    assert len(target.read_text().splitlines()) == 2


def test_encode_from_backbone_with_settings(tiny_llama, capsys):
    """A backbone path with --template / layer options builds the model on the fly."""
    args = ["encode", "--model", str(tiny_llama), "--template", "knowledge", "--tp-exit", "2", "--output-layer", "2"]
    assert main([*args, "x"]) == 0
    assert len(json.loads(capsys.readouterr().out)["embedding"]) == 32


def test_encode_errors_are_clear(saved_model, capsys):
    """No input, or template options for a saved model, give exit code 1 and a one-line error."""
    assert main(["encode", "--model", str(saved_model)]) == 1
    assert "nothing to embed" in capsys.readouterr().err
    assert main(["encode", "--model", str(saved_model), "--template", "knowledge", "x"]) == 1
    assert "saved model" in capsys.readouterr().err


def test_encode_hub_id_brings_the_saved_settings(saved_model, tmp_path, monkeypatch, capsys):
    """--model org/name of a saved TP model (simulated offline HF cache) encodes like its local folder."""
    from tests.hub_cache import add_snapshot, use_hub_cache

    add_snapshot(use_hub_cache(monkeypatch, tmp_path / "hf-home"), "tp-org/tiny-tp", saved_model, "a" * 40)
    assert main(["encode", "--model", "tp-org/tiny-tp", "First one.", "Second one."]) == 0
    vectors = np.array([json.loads(line)["embedding"] for line in capsys.readouterr().out.splitlines()])
    reference = SentenceTransformer(str(saved_model), trust_remote_code=True).encode(["First one.", "Second one."])
    np.testing.assert_allclose(vectors, reference, atol=1e-6)


@pytest.mark.parametrize("source", ["stdin", "file"])
def test_encode_non_utf8_input_is_a_one_line_error(saved_model, monkeypatch, tmp_path, capsys, source):
    """Latin-1 bytes on stdin (as Python really reads them) or in --input FILE give a one-line error naming UTF-8."""
    data = b"caf\xe9\nsecond line\n"
    if source == "stdin":
        monkeypatch.setattr(
            "sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")
        )
        name = "-"
    else:
        name = str(tmp_path / "latin1.txt")
        (tmp_path / "latin1.txt").write_bytes(data)
    assert main(["encode", "--model", str(saved_model), "--input", name]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err
    assert "not UTF-8" in err and "line 1" in err and "0xe9" in err
