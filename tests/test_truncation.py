"""Tests for sentence_transformers_tp.truncation: one truncation report per call instead of one per batch."""

from __future__ import annotations

import logging

import pytest
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer, report_truncation
from sentence_transformers_tp.evaluation.retrieval import search
from sentence_transformers_tp.evaluation.sts import encode_unique
from sentence_transformers_tp.tuning import encode_all_layers

LONG = " ".join(["word"] * 100)


@pytest.fixture(scope="module")
def model(tiny_llama) -> SentenceTransformer:
    """A tiny TP model whose max_seq_length cuts LONG but not short sentences."""
    module = TokenPrependingTransformer(str(tiny_llama), tp_start=1, tp_exit=3, output_layer=3, max_seq_length=40)
    return SentenceTransformer(modules=[module])


def reports(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "did not fit" in r.getMessage()]


def test_plain_encode_reports_once_per_batch(model, caplog):
    """Without a block, each batch that cut something reports its own count (sentence-transformers has no end hook)."""
    with caplog.at_level(logging.WARNING):
        model.encode([LONG, "Short.", LONG + " two", LONG + " three"], batch_size=1)
    assert reports(caplog) == [reports(caplog)[0]] * 3
    assert reports(caplog)[0].startswith("1 of 1 texts did not fit in max_seq_length=40 tokens")


def test_block_reports_once_with_the_totals(model, caplog):
    """Inside report_truncation the batches are counted and one warning with the totals is logged at the end."""
    with caplog.at_level(logging.WARNING):
        with report_truncation() as report:
            model.encode([LONG, "Short.", LONG + " two", LONG + " three"], batch_size=1)
            assert reports(caplog) == []
    assert (report.texts, report.truncated, report.max_lengths) == (4, 3, {40})
    assert reports(caplog) == [report.message()]
    assert report.message().startswith("3 of 4 texts did not fit in max_seq_length=40 tokens")


def test_nested_blocks_add_to_the_outer_one(model, caplog):
    """An inner block yields the outer report; only the outer block logs."""
    with caplog.at_level(logging.WARNING):
        with report_truncation() as outer:
            with report_truncation() as inner:
                model.encode([LONG], batch_size=1)
            assert inner is outer and reports(caplog) == []
            model.encode([LONG, "Short."], batch_size=1)
    assert (outer.texts, outer.truncated) == (3, 2)
    assert len(reports(caplog)) == 1 and reports(caplog)[0].startswith("2 of 3 texts")


def test_block_without_truncation_logs_nothing(model, caplog):
    """Short inputs are counted but nothing is logged."""
    with caplog.at_level(logging.WARNING):
        with report_truncation() as report:
            model.encode(["Short.", "Also short."])
    assert (report.texts, report.truncated, report.message()) == (2, 0, "")
    assert reports(caplog) == []


def test_block_left_by_an_exception_is_reset(model, caplog):
    """An exception ends the block without a report, and later calls report for themselves again."""
    with pytest.raises(RuntimeError, match="boom"):
        with report_truncation():
            model.encode([LONG], batch_size=1)
            raise RuntimeError("boom")
    with caplog.at_level(logging.WARNING):
        model.encode([LONG], batch_size=1)
    assert len(reports(caplog)) == 1 and reports(caplog)[0].startswith("1 of 1 texts")


def test_package_entry_points_report_once_per_call(model, caplog):
    """The evaluators' encode calls, retrieval search (per side) and the tuners' all-layer pass report once each."""
    with caplog.at_level(logging.WARNING):
        encode_unique(model, [LONG, LONG + " b", "Short."], batch_size=1)
    assert len(reports(caplog)) == 1 and reports(caplog)[0].startswith("2 of 3 texts")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        search(
            model, [LONG, "Short query."], [LONG + " doc", LONG + " other", "Short doc."], batch_size=1, chunk_size=1
        )
    assert [m.split(" did")[0] for m in reports(caplog)] == ["1 of 2 texts", "2 of 3 texts"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        encode_all_layers(model[0], [LONG, LONG + " b", "Short."], batch_size=1)
    assert len(reports(caplog)) == 1 and reports(caplog)[0].startswith("2 of 3 texts")
