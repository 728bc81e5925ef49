"""The token restriction of the PromptReps sparse channel: the vocabulary ids of a text's own words.

PromptReps (Zhuang et al., EMNLP 2024) keeps a sparse weight only for tokens that spell the input text's words:
the text is lower-cased and split into words, English stopwords and punctuation are dropped, and each word is
tokenized on its own. Byte-level BPE tokenizers (GPT-2 style: SmolLM2, Qwen, Llama-3) have two spellings of every
word, ``word`` at the start of a text or after a quote and ``Ġword`` after a space, so each word is tokenized both
WITHOUT and WITH a leading space and both sets of ids are kept. Ids that spell no letter or digit (a lone ``Ġ`` or
``▁``), special tokens and the TP placeholder are never kept.

Words are the maximal runs of letters and digits (``[^\\W_]+``, Unicode-aware): ``"COVID-19's"`` gives ``covid``,
``19`` and ``s`` (the last dropped as a stopword). The stopword list is NLTK's English list (179 words, the one
PromptReps uses), taken from ``bm25s`` so that no NLTK data download is needed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = ["WordTokenIds", "english_stopwords", "text_words"]

_WORD = re.compile(r"[^\W_]+")
#: Words cached per tokenizer before the cache is cleared (bounds memory on very large corpora).
_CACHE_LIMIT = 500_000

_STOPWORDS: frozenset[str] | None = None


def english_stopwords() -> frozenset[str]:
    """NLTK's English stopword list (179 words), as shipped by ``bm25s``.

    Returns:
        The stopwords (lower case).

    Raises:
        ImportError: If ``bm25s`` is not installed, with the install command.
    """
    global _STOPWORDS
    if _STOPWORDS is None:
        try:
            from bm25s.stopwords import STOPWORDS_EN_PLUS
        except ImportError as error:
            raise ImportError(
                "The sparse (PromptReps) channel takes its English stopword list from bm25s: pip install bm25s"
            ) from error
        _STOPWORDS = frozenset(STOPWORDS_EN_PLUS)
    return _STOPWORDS


def text_words(text: str, stopwords: Iterable[str] | None = None) -> list[str]:
    """The distinct words of ``text`` that the sparse vector may use, in order of first appearance.

    Args:
        text: The input text.
        stopwords: Words to drop (default: :func:`english_stopwords`).

    Returns:
        Lower-cased words, without stopwords and punctuation.
    """
    stop = english_stopwords() if stopwords is None else frozenset(stopwords)
    return list(dict.fromkeys(word for word in _WORD.findall(text.lower()) if word not in stop))


class WordTokenIds:
    """Maps texts to the vocabulary ids of their words, each word tokenized with and without a leading space.

    Word tokenizations are cached (bounded), so a corpus pays for each distinct word once.

    Args:
        tokenizer: A Hugging Face tokenizer.
        exclude: Further ids never kept (e.g. the TP placeholder).
    """

    def __init__(self, tokenizer: Any, exclude: Iterable[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.exclude = frozenset(int(i) for i in exclude) | frozenset(tokenizer.all_special_ids)
        self._cache: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()

    def word_ids(self, words: Sequence[str]) -> dict[str, tuple[int, ...]]:
        """The kept ids of each word (both spellings).

        Args:
            words: Words (already lower-cased and filtered).

        Returns:
            ``{word: ids}``.
        """
        with self._lock:
            missing = [word for word in dict.fromkeys(words) if word not in self._cache]
            if missing:
                if len(self._cache) + len(missing) > _CACHE_LIMIT:
                    self._cache.clear()
                bare = self.tokenizer(missing, add_special_tokens=False)["input_ids"]
                spaced = self.tokenizer([" " + word for word in missing], add_special_tokens=False)["input_ids"]
                candidates = sorted({i for ids in (*bare, *spaced) for i in ids})
                # The decoded text, not the vocabulary string: byte-level BPE spells a space as the letter "Ġ".
                texts = dict(zip(candidates, self.tokenizer.batch_decode([[i] for i in candidates])))
                for word, first, second in zip(missing, bare, spaced):
                    self._cache[word] = tuple(
                        i
                        for i in dict.fromkeys([*first, *second])
                        if i not in self.exclude and _spells_something(texts.get(i))
                    )
            return {word: self._cache[word] for word in words}

    def text_ids(self, text: str) -> list[int]:
        """The kept ids of ``text``'s words (see the module docstring), without repeats.

        Args:
            text: The input text.

        Returns:
            The ids, in order of first appearance.
        """
        return self.batch_ids([text])[0]

    def batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`text_ids` of several texts (one tokenizer call for all new words).

        Args:
            texts: The input texts.

        Returns:
            One id list per text.
        """
        words = [text_words(text) for text in texts]
        table = self.word_ids([word for text in words for word in text])
        return [list(dict.fromkeys(i for word in text for i in table[word])) for text in words]

    def padded(self, texts: Sequence[str]) -> torch.Tensor:
        """:meth:`batch_ids` as one ``(len(texts), longest)`` long tensor, padded with -1.

        Args:
            texts: The input texts.

        Returns:
            The ids.
        """
        rows = self.batch_ids(texts)
        width = max((len(row) for row in rows), default=0)
        return torch.tensor([row + [-1] * (width - len(row)) for row in rows], dtype=torch.long).reshape(
            len(rows), width
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _spells_something(text: str | None) -> bool:
    """Whether a token's decoded text has a letter or digit (not a lone space, punctuation or a partial byte)."""
    return text is not None and any(char.isalnum() for char in text)
