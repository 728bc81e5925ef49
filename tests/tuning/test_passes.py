"""The all-layer pass under a Setting and the one checkpoint store: a pass equals ``encode`` under
``module.using(setting)``, every search checkpoints in the same format, keyed by data and Setting."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.data import STSData
from sentence_transformers_tp.settings import Setting
from sentence_transformers_tp.tuning import PassStore, Search, SpearmanObjective, encode_all_layers, score_layers

from ..test_tuning import make_pairs

TEXTS = ["A dog runs.", "Two men are playing chess in the park today.", "x"]


@pytest.fixture(scope="module")
def module(tiny_llama) -> TokenPrependingTransformer:
    """The tiny 4-layer Llama with PromptEOL, TP off."""
    return TokenPrependingTransformer(str(tiny_llama), "prompteol", tp_start=1, tp_exit=1, output_layer=-1)


@pytest.mark.parametrize(
    "setting",
    [
        Setting(template=("pretended_cot", "knowledge"), tp_start=1, tp_exit=3),
        Setting(template="knowledge", demonstrations=[("A man is smoking.", "Smoking")], cp_layer=1, cp_alpha=2.0),
        Setting(max_seq_length=14),
    ],
)
def test_pass_equals_encode_under_the_setting_at_every_layer(module, setting):
    """Layer k of a pass equals ``encode`` of the module under ``using(setting)`` with output_layer k."""
    states = encode_all_layers(module, TEXTS, setting, batch_size=2)
    model = SentenceTransformer(modules=[module])
    for layer in (1, 3, 4):
        with module.using(setting.replace(output_layer=layer)):
            expected = model.encode(TEXTS, batch_size=2)
        np.testing.assert_allclose(states[:, layer], expected, atol=1e-5, rtol=1e-5)
    assert module.setting == Setting(template="prompteol")  # the module itself is unchanged


def test_store_round_trips_and_refuses_a_file(tmp_path):
    """A stored pass loads back with its seconds; an unknown key is None; a checkpoint that is a file is refused."""
    store = PassStore(tmp_path / "ckpt")
    assert store.load("k") is None
    store.save("k", np.arange(3.0), 1.5)
    value, seconds = store.load("k")
    np.testing.assert_array_equal(value, np.arange(3.0))
    assert seconds == 1.5
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["k.npz"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        PassStore(tmp_path / "file")


def test_checkpoint_is_keyed_by_data_and_setting(module, tmp_path, monkeypatch):
    """A rerun reuses a pass only for the same data and Setting; other data or another Setting run again."""
    left, right, gold = make_pairs(12)
    data = SpearmanObjective(STSData(left, right, gold))
    other = SpearmanObjective(STSData(left, right, gold[::-1]))
    first = Search(module, tmp_path).score(data, Setting(), "full")
    lines: list[str] = []
    again = Search(module, tmp_path, progress=lines.append)
    np.testing.assert_array_equal(again.score(data, Setting(), "full").scores, first.scores)
    assert "reusing" in lines[-1]
    again.score(other, Setting(), "full")
    again.score(data, Setting(tp_exit=3), "full")
    assert sum("reusing" in line for line in lines) == 1
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_deprecated_score_layers_equals_the_spearman_objective():
    """The one-release alias ``score_layers`` scores every layer as ``SpearmanObjective`` does."""
    states = np.random.default_rng(0).normal(size=(8, 3, 5))
    objective = SpearmanObjective(
        STSData([f"a{i}" for i in range(4)], [f"b{i}" for i in range(4)], [1.0, 3.0, 2.0, 4.0])
    )
    got = score_layers(states, objective.index1, objective.index2, objective.gold)
    np.testing.assert_allclose(got, objective(states))
