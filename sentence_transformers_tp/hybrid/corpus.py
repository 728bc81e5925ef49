"""Corpus input of the hybrid retriever: ids and texts, checked, and the content hash a saved index records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any


def _document_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        title = value.get("title") or ""
        text = value.get("text")
        if text is None:
            raise ValueError(f"{where}: a document mapping needs a 'text' key")
        return (str(title) + " " + str(text)).strip()
    raise TypeError(f"{where}: a document must be a string or a mapping with 'text', got {type(value).__name__}")


def prepare_corpus(corpus: Any, ids: Sequence[Any] | None = None) -> tuple[list[str], list[str]]:
    """Normalise a corpus to ``(ids, texts)``.

    Accepted forms: ``{id: text}``; ``{id: {"title": ..., "text": ...}}``; a list of texts (ids given separately,
    or their positions ``"0"``, ``"1"``, ...); a list of BEIR rows ``{"_id" or "id", "title", "text"}``. A document
    with a title is ``title + " " + text``, stripped (as MTEB joins them).

    Args:
        corpus: The corpus.
        ids: Document ids for a list of texts.

    Returns:
        ``(ids, texts)`` as strings, in corpus order.

    Raises:
        ValueError: For an empty corpus, duplicate ids, ids of the wrong length or ids given with a mapping.
        TypeError: For a document that is not a string or a mapping with ``text``.
    """
    if isinstance(corpus, Mapping):
        if ids is not None:
            raise ValueError("ids are taken from the corpus mapping's keys; do not pass ids as well")
        doc_ids = [str(key) for key in corpus]
        texts = [_document_text(value, f"document {key!r}") for key, value in corpus.items()]
    elif isinstance(corpus, str) or not isinstance(corpus, Sequence):
        raise TypeError(f"the corpus must be a mapping or a list of documents, got {type(corpus).__name__}")
    else:
        rows = list(corpus)
        if ids is not None:
            doc_ids = [str(i) for i in ids]
            if len(doc_ids) != len(rows):
                raise ValueError(f"got {len(doc_ids)} ids for {len(rows)} documents")
        elif rows and all(isinstance(row, Mapping) and ("_id" in row or "id" in row) for row in rows):
            doc_ids = [str(row["_id"] if "_id" in row else row["id"]) for row in rows]
        else:
            doc_ids = [str(i) for i in range(len(rows))]
        texts = [_document_text(row, f"document {doc_id!r}") for doc_id, row in zip(doc_ids, rows)]
    if not doc_ids:
        raise ValueError("the corpus is empty: a hybrid index needs at least one document")
    seen: set[str] = set()
    for doc_id in doc_ids:
        if doc_id in seen:
            raise ValueError(f"the corpus has duplicate document id {doc_id!r}; ids must be unique")
        seen.add(doc_id)
    return doc_ids, texts


def corpus_hash(ids: Sequence[str], texts: Sequence[str]) -> str:
    """A content hash of the corpus (ids and texts, in order).

    Args:
        ids: Document ids.
        texts: Document texts.

    Returns:
        The sha256 hex digest.
    """
    digest = hashlib.sha256()
    for doc_id, text in zip(ids, texts):
        digest.update(json.dumps([doc_id, text], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


__all__ = ["corpus_hash", "prepare_corpus"]
