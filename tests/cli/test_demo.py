"""``st-tp demo``: prints the default, paper-TP and vanilla columns for the demo pairs."""

from __future__ import annotations

from sentence_transformers_tp.cli import main
from sentence_transformers_tp.cli.demo import DEMO_PAIRS


def test_demo_prints_three_configurations(tiny_llama, capsys):
    """The demo table has one row per pair and the three configurations, named by their settings."""
    assert main(["demo", "--model", str(tiny_llama), "--template", "pretended_cot"]) == 0
    out = capsys.readouterr().out
    assert "paper TP  = llama-pretended_cot-tp1-4-L-2" in out
    assert "vanilla   = llama-pretended_cot-notp-L-2" in out
    assert sum(line.startswith("| A ") for line in out.splitlines()) == len(DEMO_PAIRS)
    assert out.count("Margin") == 1


def test_demo_shows_progress(tiny_llama, capsys):
    """The demo says what it loads and shows a progress bar over the settings it embeds with (on stderr)."""
    assert main(["demo", "--model", str(tiny_llama)]) == 0
    err = capsys.readouterr().err
    assert f"Loading {tiny_llama}" in err
    assert "Embedding the demo pairs" in err and "3/3" in err
