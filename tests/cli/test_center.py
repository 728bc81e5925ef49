"""``st-tp center``: fit centering / whitening on unlabeled sentences and save the model with it."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import Centering, TokenPrependingTransformer
from sentence_transformers_tp.centering import fit
from sentence_transformers_tp.cli import main

SENTENCES = [f"A {noun} {verb}." for noun in ("man", "dog", "cat", "bird", "chef") for verb in ("runs", "sings")]


@pytest.fixture(scope="module")
def saved_model(tiny_llama, tmp_path_factory):
    """A saved tiny TP model folder."""
    path = tmp_path_factory.mktemp("saved") / "model"
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3)
    SentenceTransformer(modules=[module]).save(str(path))
    return path


@pytest.fixture
def sentence_file(tmp_path):
    """A text file with one sentence per line."""
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def test_center_end_to_end_equals_fit(saved_model, sentence_file, tmp_path, capsys):
    """The saved output loads with trust_remote_code and equals fit() in Python on the same sentences."""
    out = tmp_path / "whitened"
    args = ["center", "--model", str(saved_model), "--sentences", str(sentence_file), "--mode", "whiten"]
    assert main([*args, "--n-components", "4", "--out", str(out)]) == 0
    assert "Load it with" in capsys.readouterr().out
    loaded = SentenceTransformer(str(out), trust_remote_code=True)
    assert isinstance(loaded[-1], Centering) and loaded.get_embedding_dimension() == 4
    reference = fit(
        SentenceTransformer(str(saved_model), trust_remote_code=True), SENTENCES, mode="whiten", n_components=4
    )
    np.testing.assert_allclose(loaded.encode(["Hello there."]), reference.encode(["Hello there."]), atol=1e-6)


def test_center_refits_a_centered_model_in_place(saved_model, sentence_file, tmp_path):
    """Running center on its own output (same folder) replaces the module rather than stacking a second one."""
    out = tmp_path / "centered"
    args = ["center", "--model", str(saved_model), "--sentences", str(sentence_file), "--out", str(out)]
    assert main(args) == 0
    assert main(["center", "--model", str(out), "--sentences", str(sentence_file), "--out", str(out)]) == 0
    loaded = SentenceTransformer(str(out), trust_remote_code=True)
    assert [type(module).__name__ for module in loaded] == ["TokenPrependingTransformer", "Centering"]
    assert loaded[-1].mode == "center"


def test_center_from_an_sts_split(saved_model, tmp_path):
    """--sentences TASK:SPLIT with --data-dir reads both sentence columns; --max-sentences samples them."""
    folder = tmp_path / "data" / "sts" / "stsb"
    folder.mkdir(parents=True)
    rows = ["sentence1\tsentence2\tscore", *(f"{a}\t{b}\t1.0" for a, b in zip(SENTENCES[::2], SENTENCES[1::2]))]
    (folder / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["center", "--model", str(saved_model), "--sentences", "stsb:train", "--data-dir", str(tmp_path / "data")]
    assert main([*args, "--max-sentences", "6", "--out", str(out)]) == 0
    assert SentenceTransformer(str(out), trust_remote_code=True)[-1].n_fit_sentences == 6


def test_center_checks_inputs_before_loading(saved_model, sentence_file, tmp_path, capsys, monkeypatch):
    """A bad --out, sentence source or setting gives exit code 1 and a one-line error, without loading a model."""

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr("sentence_transformers_tp.cli.center.model_from_args", no_model)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine", encoding="utf-8")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x", encoding="utf-8")
    base = ["center", "--model", str(saved_model)]
    cases = [
        ([*base, "--sentences", str(sentence_file), "--out", str(occupied)], "not a saved model"),
        ([*base, "--sentences", str(sentence_file), "--out", str(a_file)], "is a file"),
        (["center", "--model", str(tmp_path / "nope"), "--sentences", str(sentence_file), "--out", "o"], "not exist"),
        ([*base, "--sentences", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")], "not found"),
        ([*base, "--sentences", "stsb:train", "--out", str(tmp_path / "o")], "--data-dir"),
        ([*base, "--sentences", str(sentence_file), "--n-components", "4", "--out", str(tmp_path / "o")], "whiten"),
        ([*base, "--sentences", str(sentence_file), "--max-sentences", "0", "--out", str(tmp_path / "o")], "positive"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert (occupied / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert not (tmp_path / "o").exists()
