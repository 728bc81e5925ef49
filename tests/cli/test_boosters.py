"""The boosters from the command line: ensembles, demonstrations and Contrastive Prompting in ``build`` / ``encode`` /
``evaluate``, and the joint search ``st-tp tune-boosters``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.cli import main

from ..test_joint_tuning import data_dir  # noqa: F401 - the fixture


def test_build_with_every_booster_saves_them(tiny_llama, tmp_path):
    """--template a,b (ensemble), --demonstration (pool word and SENTENCE => WORD), --cp-* end up in the saved config."""
    out = tmp_path / "built"
    args = ["build", "--model", str(tiny_llama), "--template", "pretended_cot,knowledge", "--tp-start", "1"]
    args += ["--tp-exit", "3", "--output-layer", "3", "--demonstration", "Music"]
    args += ["--demonstration", "A cat naps. => Sleep", "--cp-layer", "1", "--cp-alpha", "2", "--cp-mode", "nr"]
    assert main([*args, "--out", str(out)]) == 0
    config = json.loads((out / "sentence_bert_config.json").read_text())
    assert config["template"] == ["pretended_cot", "knowledge"]
    assert config["demonstrations"] == [
        ["A man is playing on a guitar and singing.", "Music"],
        ["A cat naps.", "Sleep"],
    ]
    assert (config["cp_layer"], config["cp_alpha"], config["cp_mode"]) == (1, 2.0, "nr")
    saved = SentenceTransformer(str(out), trust_remote_code=True)
    direct = SentenceTransformer(
        modules=[
            TokenPrependingTransformer(
                str(tiny_llama),
                ["pretended_cot", "knowledge"],
                tp_start=1,
                tp_exit=3,
                output_layer=3,
                demonstrations=config["demonstrations"],
                cp_layer=1,
                cp_alpha=2.0,
                cp_mode="nr",
            )
        ]
    )
    np.testing.assert_allclose(saved.encode(["A dog runs."]), direct.encode(["A dog runs."]), atol=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--template", "prompteol,nope"], "unknown built-in template"),
        (["--demonstration", "Zzzz"], "not a word of the shipped pool"),
        (["--cp-layer", "9"], "cp_layer"),
    ],
)
def test_bad_booster_options_are_one_line_errors(tiny_llama, tmp_path, capsys, extra, message):
    """Unknown ensemble members, demonstrations and out-of-range CP layers give a one-line error and exit 1."""
    code = main(["build", "--model", str(tiny_llama), *extra, "--out", str(tmp_path / "x")])
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_tune_boosters_writes_the_result(tiny_llama, data_dir, tmp_path, capsys):  # noqa: F811
    """st-tp tune-boosters runs the staged search and writes JSON with the winner's constructor arguments."""
    out = tmp_path / "joint.json"
    args = ["tune-boosters", "--model", str(tiny_llama), "--data-dir", str(data_dir), "--sample", "16"]
    args += ["--templates", "prompteol,ck", "--tp-bands", "1-3", "--demonstrations", "Music", "--top-k", "1"]
    args += ["--cp-layers", "1", "--cp-alphas", "1", "--finalists", "1", "--centering-sentences", "10"]
    assert main([*args, "--batch-size", "5", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["winner"]["best"] >= data["vanilla"]["best"]
    assert set(data["module_kwargs"]) >= {"template", "tp_start", "tp_exit", "output_layer"}
    assert "Winner:" in capsys.readouterr().out


def test_tune_boosters_screens_the_pool_with_backbone_labelled_sentences(tiny_llama, data_dir, tmp_path):  # noqa: F811
    """--demonstrations pool+N adds N drawn sentences labelled by the backbone; --screen-sample scores every candidate
    once on the screen sample and keeps --screen-top of them; the JSON records both."""
    import shutil

    from sentence_transformers_tp.demonstrations import POOL

    from ..test_demonstrations import TRAIN_SICK, write_split

    root = tmp_path / "data"
    shutil.copytree(data_dir, root)
    write_split(root, "sickr", "train", TRAIN_SICK)
    out = tmp_path / "joint.json"
    args = ["tune-boosters", "--model", str(tiny_llama), "--data-dir", str(root), "--sample", "16"]
    args += ["--templates", "prompteol", "--tp-bands", "1-3", "--demonstrations", "pool+3", "--top-k", "1"]
    args += ["--screen-sample", "8", "--screen-top", "2", "--cp-layers", "none", "--finalists", "1"]
    args += ["--centering-sentences", "0", "--second", "none", "--batch-size", "8", "--json", str(out)]
    assert main(args) == 0
    data = json.loads(out.read_text())
    drawn = data["drawn_demonstrations"]
    assert drawn["drawn"] == 3 and 0 <= drawn["labelled"] <= 3
    screen = data["screen"]
    assert screen["candidates"] == screen["passes"] == len(POOL) + drawn["labelled"] and len(screen["kept"]) == 2
    assert sum(p["data"] == "screen" for p in data["passes"]) == screen["passes"]


def test_tune_boosters_pool_plus_needs_a_count(tiny_llama, data_dir, capsys):  # noqa: F811
    """--demonstrations pool+x is a one-line error."""
    args = ["tune-boosters", "--model", str(tiny_llama), "--data-dir", str(data_dir), "--demonstrations", "pool+x"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "pool+N" in err and "Traceback" not in err
