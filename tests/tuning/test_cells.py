"""The one winner rule and the one layer tie-break that every search uses."""

from __future__ import annotations

import math

from sentence_transformers_tp.settings import Setting
from sentence_transformers_tp.tuning import Scored, best_layer, choose_winner, describe

NAN = math.nan


def cell(setting: Setting, *scores: float) -> Scored:
    """A scored pass."""
    return Scored((setting,), list(scores))


def test_best_layer_ties_go_to_the_deeper_layer_and_nan_never_wins():
    """Exact ties pick the deeper layer (the final output is the deepest); nan is never best."""
    assert best_layer([1.0, 3.0, 3.0, 2.0]) == 2
    assert best_layer([NAN, 2.0, NAN]) == 1
    assert best_layer([NAN, NAN]) == 1


def test_winner_is_never_below_vanilla_and_needs_more_than_min_gain():
    """Vanilla stays unless the best cell beats it by more than min_gain."""
    vanilla = cell(Setting(), 70.0, 71.0)
    tp = cell(Setting(tp_exit=3), 70.0, 72.0)
    assert choose_winner([vanilla, tp], vanilla) is tp
    assert choose_winner([vanilla, tp], vanilla, 1.0) is vanilla
    assert choose_winner([vanilla, cell(Setting(tp_exit=3), 71.0, NAN)], vanilla) is vanilla


def test_fewer_changes_win_within_min_gain_then_the_score_then_the_plan_order():
    """Within min_gain of the best the fewest Setting.changes() wins, then the higher score, then the first listed."""
    vanilla = cell(Setting(), 50.0)
    one = cell(Setting(template="knowledge"), 51.7)  # 1 change
    two = cell(Setting(template="knowledge", tp_exit=3), 52.0)  # 2 changes
    three = cell(Setting(template="knowledge", tp_exit=3, cp_layer=1), 52.1)  # 3 changes
    assert choose_winner([vanilla, three, two, one], vanilla, 0.5) is one
    assert choose_winner([vanilla, three, two, one], vanilla, 0.0) is three
    narrow, wide = cell(Setting(tp_exit=2), 60.0), cell(Setting(tp_exit=3), 60.0)
    assert choose_winner([vanilla, narrow, wide], vanilla) is narrow
    pair = Scored((Setting(template="retrieval_query"), Setting(template="retrieval_document", tp_exit=3)), [1.0])
    assert pair.changes() == 3


def test_labels_name_every_booster():
    """describe() is the label written into reports and preset records."""
    setting = Setting(template=("pretended_cot", "knowledge"), demonstrations=[("A man is smoking.", "Smoking")])
    assert describe(setting.replace(tp_exit=3, cp_layer=4, cp_alpha=2.0)) == (
        "pretended_cot+knowledge + demo(Smoking) + TP 1..2 + CP L4 ns 2"
    )
    assert describe(Setting(cp_layer=1, cp_mode="nr")) == "prompteol + CP L1 nr"


def test_describe_is_the_setting_label_without_layer_and_token_budget():
    """describe() is Setting.label() minus the layer and token budget: one label format for every report."""
    setting = Setting(template="retrieval_document", tp_exit=3, output_layer=2, max_seq_length=64)
    assert describe(setting) == "retrieval_document + TP 1..2"
    assert setting.label().startswith(describe(setting) + ", L2")
