"""``st-tp build``: saves a loadable SentenceTransformer folder with the requested settings."""

from __future__ import annotations

import json

import numpy as np
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp.cli import main


def test_build_saves_a_loadable_model_with_the_settings(tiny_llama, tmp_path, capsys):
    """build writes a folder that SentenceTransformer(..., trust_remote_code=True) loads with the given settings."""
    out = tmp_path / "built"
    code = main(
        [
            "build",
            str(tiny_llama),
            "--template",
            "pretended_cot",
            "--tp-start",
            "1",
            "--tp-exit",
            "3",
            "--output-layer",
            "-2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "trust_remote_code=True" in capsys.readouterr().out
    config = json.loads((out / "sentence_bert_config.json").read_text())
    assert (config["template"], config["tp_start"], config["tp_exit"], config["output_layer"]) == (
        "pretended_cot",
        1,
        3,
        -2,
    )
    model = SentenceTransformer(str(out), trust_remote_code=True)
    assert np.isfinite(model.encode(["A sentence."])).all()


def test_build_with_a_preset_file_uses_its_settings(tiny_llama, tmp_path):
    """build --preset FILE takes the layers from the preset and the backbone from the argument."""
    preset = tmp_path / "tiny.yaml"
    preset.write_text(
        "name: tiny\nbackbone: tiny-llama\nnum_layers: 4\nstatus: untested\n"
        "templates:\n  prompteol: {tp_start: 1, tp_exit: 2, output_layer: 3}\n"
    )
    out = tmp_path / "from-preset"
    assert main(["build", str(tiny_llama), "--preset", str(preset), "--out", str(out)]) == 0
    config = json.loads((out / "sentence_bert_config.json").read_text())
    assert (config["tp_start"], config["tp_exit"], config["output_layer"]) == (1, 2, 3)


def test_build_reports_bad_settings_without_a_traceback(tiny_llama, tmp_path, capsys):
    """An out-of-range layer is reported as a one-line error with exit code 1."""
    code = main(["build", str(tiny_llama), "--output-layer", "9", "--out", str(tmp_path / "x")])
    assert code == 1
    assert "out of range" in capsys.readouterr().err


def test_build_takes_the_model_as_an_option_too(tiny_llama, tmp_path, capsys):
    """build accepts --model like the other subcommands (the positional form still works); two models are an error."""
    out = tmp_path / "with-flag"
    assert main(["build", "--model", str(tiny_llama), "--tp-exit", "2", "--out", str(out)]) == 0
    assert json.loads((out / "sentence_bert_config.json").read_text())["tp_exit"] == 2
    assert main(["build", str(tiny_llama), "--model", "smollm2", "--out", str(tmp_path / "x")]) == 1
    assert "two models given" in capsys.readouterr().err
