"""The report table writer shared by the three results and the plan helper shared by the three searches."""

from __future__ import annotations

from sentence_transformers_tp.settings import Setting
from sentence_transformers_tp.tuning.passes import with_bands
from sentence_transformers_tp.tuning.result import table, tuned_entry


def test_table_writes_a_markdown_header_separator_and_rows():
    """table() gives the header, one ``---`` per column and one line per row, cells as text."""
    assert table(["a", "b"], [(1, "x"), (2.5, "")]) == ["| a | b |", "|---|---|", "| 1 | x |", "| 2.5 |  |"]


def test_tuned_entry_adds_status_score_and_command_only_when_given():
    """A winner's preset entry: its settings, status tuned, its score, and the command when there is one."""
    assert tuned_entry({"tp_exit": 3}, {"spearman": 1.0}, None) == {
        "tp_exit": 3,
        "status": "tuned",
        "score": {"spearman": 1.0},
    }
    assert tuned_entry({}, {}, "st-tp tune")["command"] == "st-tp tune"


def test_with_bands_lists_tp_off_then_each_band_per_setting():
    """with_bands() is the first stage of every plan: each Setting with TP off, then with each band."""
    plan = with_bands([Setting(), Setting(template="ck", tp_exit=4)], [(1, 3), (2, 5)])
    assert [(s.template, s.tp_start, s.tp_exit) for s in plan] == [
        ("prompteol", 1, 1),
        ("prompteol", 1, 3),
        ("prompteol", 2, 5),
        ("ck", 1, 1),
        ("ck", 1, 3),
        ("ck", 2, 5),
    ]
