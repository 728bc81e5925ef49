"""Demonstration labels written by the backbone itself: its greedy one-word answer under the PromptEOL prompt.

For each sentence the module (TP off, no demonstrations, no CP) runs ``This sentence : "<s>" means in one word:"``
through its own path (:meth:`~sentence_transformers_tp.module.TokenPrependingTransformer.preprocess` and
:meth:`~sentence_transformers_tp.module.TokenPrependingTransformer.embed` at the final normed layer), the LM head
(:meth:`~sentence_transformers_tp.sparse.PromptRepsSparse.from_module`: the input embeddings when tied, else the
checkpoint's head) gives the next-token logits, and the argmax token is appended to the prompt text, which is run
again, at most ``max_steps`` tokens in all, until the continuation (leading whitespace skipped) holds a character
that is not a letter, a digit or a hyphen (the closing quote, a space, punctuation, a special token; not a final
partial byte sequence, which the next token completes). The label is
the word the continuation starts with (:func:`~sentence_transformers_tp.demonstrations.first_word`); a sentence
whose answer is no word, a word followed by undecodable bytes, or still unfinished after ``max_steps`` tokens, gets
none and is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from sentence_transformers_tp.demonstrations import BACKBONE, Demonstration, first_word
from sentence_transformers_tp.factory import as_module
from sentence_transformers_tp.settings import Setting
from sentence_transformers_tp.sparse import PromptRepsSparse
from sentence_transformers_tp.templates import PROMPTEOL

__all__ = ["Labelled", "greedy_answers", "label_with_backbone"]


def finished(continuation: str) -> bool:
    """Whether a greedy continuation has ended its word: past leading whitespace, it holds a character other than a
    letter, a digit or a hyphen (a final U+FFFD, a character whose bytes are still coming, does not count)."""
    return any(not (char.isalnum() or char == "-") for char in continuation.lstrip().removesuffix("\ufffd"))


def greedy_answers(
    model: Any, sentences: Sequence[str], *, max_steps: int = 4, batch_size: int = 32
) -> list[tuple[str, bool]]:
    """The backbone's greedy continuation of the PromptEOL prompt of each sentence (see the module), with whether
    it ended within ``max_steps`` tokens.

    Args:
        model: A :class:`~sentence_transformers_tp.module.TokenPrependingTransformer` or a ``SentenceTransformer``
            starting with one.
        sentences: The sentences.
        max_steps: Most tokens generated per sentence.
        batch_size: Prompts per forward pass.

    Raises:
        ValueError: If ``max_steps`` is not positive.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be positive, got {max_steps}.")
    module = as_module(model)
    weight = PromptRepsSparse.from_module(module).head_weight()
    tokenizer = module.tokenizer
    generated: list[list[int]] = [[] for _ in sentences]
    texts = ["" for _ in sentences]
    open_rows = list(range(len(sentences)))
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            for _ in range(max_steps):
                groups: dict[str, list[int]] = {}
                for row in open_rows:
                    groups.setdefault(texts[row], []).append(row)
                for continuation, rows in groups.items():
                    setting = Setting(template=PROMPTEOL + continuation, tp_start=1, tp_exit=1, output_layer=-1)
                    for start in range(0, len(rows), batch_size):
                        batch = rows[start : start + batch_size]
                        with module.using(setting):
                            features = module.preprocess([sentences[row] for row in batch])
                            final = module.embed(features, layers=[-1])[:, 0]
                        logits = final.to(device=weight.device, dtype=weight.dtype) @ weight.T
                        for row, token in zip(batch, logits.argmax(-1).tolist()):
                            generated[row].append(int(token))
                            texts[row] = tokenizer.decode(generated[row], skip_special_tokens=False)
                open_rows = [row for row in open_rows if not finished(texts[row])]
                if not open_rows:
                    break
    finally:
        module.train(was_training)
    return [(text, finished(text)) for text in texts]


class Labelled(list):
    """The demonstrations :func:`label_with_backbone` made (a list), with what it cost.

    Attributes:
        asked: Sentences given.
        seconds: Wall time of the labelling.
    """

    asked: int = 0
    seconds: float = 0.0


def label_with_backbone(
    model: Any,
    sentences: Sequence[str],
    *,
    max_steps: int = 4,
    batch_size: int = 32,
    source: str = BACKBONE,
) -> Labelled:
    """Demonstrations of the sentences labelled with the backbone's own greedy one-word answer (see the module): at
    most one per sentence, in the order given; sentences whose answer is no finished word are left out.

    Args:
        model: A :class:`~sentence_transformers_tp.module.TokenPrependingTransformer` or a ``SentenceTransformer``
            starting with one.
        sentences: The sentences (e.g. :func:`~sentence_transformers_tp.demonstrations.draw_sentences`).
        max_steps: Most tokens generated per sentence.
        batch_size: Prompts per forward pass.
        source: The :attr:`~sentence_transformers_tp.demonstrations.Demonstration.source` of the demonstrations.
    """
    start = time.perf_counter()
    out = Labelled()
    answers = greedy_answers(model, sentences, max_steps=max_steps, batch_size=batch_size)
    for sentence, (answer, done) in zip(sentences, answers):
        word = first_word(answer) if done else None
        if word is not None and not answer.lstrip()[len(word) :].startswith("\ufffd"):  # a word cut mid-character
            out.append(Demonstration(sentence, word, source))
    out.asked, out.seconds = len(sentences), time.perf_counter() - start
    return out
