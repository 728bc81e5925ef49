from __future__ import annotations

import pytest

from sentence_transformers_tp.hybrid.corpus import corpus_hash, prepare_corpus


def test_prepare_corpus_forms() -> None:
    """Mappings, lists with ids, default ids and BEIR rows all give (ids, texts); titles are joined."""
    assert prepare_corpus({"a": "x", "b": {"title": "T", "text": "y"}}) == (["a", "b"], ["x", "T y"])
    assert prepare_corpus(["x", "y"], ids=[3, 4]) == (["3", "4"], ["x", "y"])
    assert prepare_corpus(["x", "y"]) == (["0", "1"], ["x", "y"])
    assert prepare_corpus([{"_id": "d", "title": "", "text": "z"}]) == (["d"], ["z"])


@pytest.mark.parametrize(
    ("corpus", "ids", "error", "message"),
    [
        ({}, None, ValueError, "empty"),
        ([], None, ValueError, "empty"),
        (["x", "y"], ["a", "a"], ValueError, "duplicate document id 'a'"),
        ([{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}], None, ValueError, "duplicate"),
        (["x"], ["a", "b"], ValueError, "2 ids for 1 documents"),
        ([1, 2], None, TypeError, "must be a string"),
        ("text", None, TypeError, "mapping or a list"),
    ],
)
def test_prepare_corpus_rejects_bad_input(corpus, ids, error, message) -> None:
    """An empty corpus, duplicate ids and malformed documents raise a clear error."""
    with pytest.raises(error, match=message):
        prepare_corpus(corpus, ids)


def test_corpus_hash_changes_with_content() -> None:
    """The content hash differs when an id, a text or the order changes."""
    base = corpus_hash(["a", "b"], ["x", "y"])
    assert base == corpus_hash(["a", "b"], ["x", "y"])
    assert (
        len(
            {
                base,
                corpus_hash(["a", "c"], ["x", "y"]),
                corpus_hash(["a", "b"], ["x", "z"]),
                corpus_hash(["b", "a"], ["y", "x"]),
            }
        )
        == 4
    )
