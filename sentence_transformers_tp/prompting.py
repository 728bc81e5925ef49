"""Prompting: render sentences into their templates, tokenize them exactly as whole prompts, find the placeholder
token, truncate only the sentence, and collate a batch (with the rows grouped by template prefix for the prefix
cache).

:class:`Prompter` is owned by :class:`~sentence_transformers_tp.module.TokenPrependingTransformer` (its
``prompting`` attribute); it knows the tokenizer and the placeholder token, nothing about layers or settings.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sentence_transformers_tp.prefix_cache import group_rows, prefix_length
from sentence_transformers_tp.templates import RenderedPrompt, render

__all__ = ["Prompter", "add_placeholder_token"]


def add_placeholder_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, placeholder: str) -> int:
    """Add the placeholder to the tokenizer as a normal token and give it an embedding row.

    Args:
        tokenizer: The backbone's tokenizer.
        model: The backbone (its input embeddings are resized if the vocabulary has no free row).
        placeholder: The placeholder text.

    Returns:
        The placeholder's token id.

    Raises:
        ValueError: If the placeholder does not tokenize to a single token.
    """
    existing = placeholder in tokenizer.get_added_vocab()
    if not existing:
        tokenizer.add_tokens([placeholder])
    placeholder_id = tokenizer.convert_tokens_to_ids(placeholder)
    ids = tokenizer(placeholder, add_special_tokens=False)["input_ids"]
    if ids != [placeholder_id]:
        raise ValueError(
            f"The placeholder {placeholder!r} does not tokenize to a single token (got ids {ids}); choose another "
            f"placeholder text."
        )
    embeddings = model.get_input_embeddings()
    if placeholder_id >= embeddings.num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        embeddings = model.get_input_embeddings()
    if not existing:
        # The initial value barely matters (TP_REFERENCE §1.2, Table 4); the mean of the other rows is a
        # deterministic choice of ordinary magnitude.
        with torch.no_grad():
            others = torch.cat([embeddings.weight[:placeholder_id], embeddings.weight[placeholder_id + 1 :]])
            embeddings.weight[placeholder_id] = others.float().mean(0).to(embeddings.weight.dtype)
    return placeholder_id


class Prompter:
    """Turns (cleaned) sentences and template strings into a padded batch of token ids.

    Args:
        tokenizer: The backbone's tokenizer, with the placeholder already added (:func:`add_placeholder_token`).
        placeholder: The placeholder text.
        placeholder_id: Its token id.
        padding_side: ``"left"`` or ``"right"``.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, placeholder: str, placeholder_id: int, padding_side: str
    ) -> None:
        self.tokenizer = tokenizer
        self.placeholder = placeholder
        self.placeholder_id = placeholder_id
        self.padding_side = padding_side
        self.placeholder_text_ids = self.plain_text_ids(placeholder)
        self.pad_id = self.choose_pad_id()
        #: Serialises tokenizer calls (fast tokenizers are not safe to call from several threads at once).
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def plain_text_ids(self, text: str) -> list[int]:
        """Ids of ``text`` tokenized as ordinary text, bypassing the added-token match (used for user text that
        contains the placeholder's literal text)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            normalized = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
            pieces = backend.pre_tokenizer.pre_tokenize_str(normalized) if backend.pre_tokenizer else [(normalized,)]
            ids = [token.id for piece in pieces for token in backend.model.tokenize(piece[0])]
            if ids and self.placeholder_id not in ids:
                return ids
        # Fallback: one character at a time.
        ids = []
        for char in text:
            ids.extend(self.tokenizer(char, add_special_tokens=False)["input_ids"])
        return [i for i in ids if i != self.placeholder_id]

    def choose_pad_id(self) -> int:
        """The padding id: the tokenizer's pad, else its end-of-sequence, else its unknown token, else 0."""
        tokenizer = self.tokenizer
        for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    def prepare(
        self,
        sentences: list[str],
        templates: Sequence[str],
        placeholder: str | None,
        truncated: set[int] | None = None,
        max_length: int | None = None,
    ) -> dict[str, Any]:
        """Tokenize every (cleaned) sentence in every template and collate.

        Args:
            sentences: The cleaned sentences.
            templates: Resolved template strings; each sentence gets one row per template, in this order.
            placeholder: The placeholder text (TP on), or None (the vanilla prompt).
            truncated: Gets the indices of sentences that had to be truncated.
            max_length: Token budget of a prompt (None: no limit).

        Returns:
            The collated batch (see :meth:`collate`).
        """
        prompts: list[tuple[str, str, RenderedPrompt]] = []
        for sentence in sentences:
            prompts.extend((template, sentence, render(template, sentence, placeholder)) for template in templates)
        # One tokenizer call for the whole batch (much less host work per batch than one call per prompt).
        encodings = self.tokenize([rendered.text for _, _, rendered in prompts])
        rows: list[list[int]] = []
        placeholder_positions: list[int] = []
        prefix_lengths: list[int] = []
        for index, ((template, sentence, rendered), encoding) in enumerate(zip(prompts, encodings)):
            cut: list[bool] = []
            ids, position, prefix = self.encode_prompt(
                template, sentence, placeholder, rendered, encoding, cut, max_length
            )
            if cut and truncated is not None:
                truncated.add(index // len(templates))
            rows.append(ids)
            placeholder_positions.append(position)
            prefix_lengths.append(prefix)
        return self.collate(rows, placeholder_positions, num_prompts=len(templates), prefix_lengths=prefix_lengths)

    def tokenize(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids and character offsets of each text (special tokens added, no truncation, no padding)."""
        if not texts:
            return []
        with self.lock:
            # verbose=False: no "sequence length is longer than the specified maximum" warning; prepare truncates
            # only the sentence itself and reports how many texts it cut.
            encoding = self.tokenizer(
                texts,
                add_special_tokens=True,
                return_offsets_mapping=True,
                truncation=False,
                padding=False,
                verbose=False,
            )
        return [
            (list(ids), [tuple(span) for span in offsets])
            for ids, offsets in zip(encoding["input_ids"], encoding["offset_mapping"])
        ]

    def encode_prompt(
        self,
        template: str,
        sentence: str,
        placeholder: str | None,
        rendered: RenderedPrompt | None = None,
        encoding: tuple[list[int], list[tuple[int, int]]] | None = None,
        truncated: list[bool] | None = None,
        max_length: int | None = None,
    ) -> tuple[list[int], int, int]:
        """Tokenize one prompt exactly as the whole prompt string at once; truncate only the sentence.

        Args:
            template: The template.
            sentence: The (cleaned) sentence.
            placeholder: The placeholder text, or None without TP.
            rendered: The prompt already rendered from these, if at hand.
            encoding: Its tokenization (ids, offsets), if at hand.
            truncated: Gets ``True`` appended if the sentence had to be truncated.
            max_length: Token budget (None: no limit).

        Returns:
            The ids, the placeholder index (-1 for none) and the length of the cacheable template prefix.

        Raises:
            ValueError: If ``max_length`` cannot hold the prompt even without any sentence.
        """
        while True:
            if rendered is None or encoding is None:
                rendered = render(template, sentence, placeholder)
                (encoding,) = self.tokenize([rendered.text])
            ids, offsets, position = self.fix_placeholders(*encoding, rendered)
            if max_length is None or len(ids) <= max_length:
                return ids, position, prefix_length(offsets, rendered.sentence_start, position)
            if not sentence:
                raise ValueError(
                    f"max_seq_length={max_length} is too small for the template: without any sentence the prompt "
                    f"already has {len(ids)} tokens."
                )
            if truncated is not None and not truncated:
                truncated.append(True)
            # Sentence tokens are those lying entirely inside the sentence span; keep as many as fit, cut the
            # sentence text after the last kept token and tokenize again (each round strictly shortens it).
            inside = [
                i
                for i, (start, end) in enumerate(offsets)
                if start >= rendered.sentence_start and end <= rendered.sentence_end and end > start
            ]
            budget = len(inside) - (len(ids) - max_length)
            cut = offsets[inside[budget - 1]][1] if budget > 0 else rendered.sentence_start
            shorter = sentence[: cut - rendered.sentence_start].rstrip()
            sentence = shorter if len(shorter) < len(sentence) else sentence[:-1]
            rendered = encoding = None

    def fix_placeholders(
        self, ids: list[int], offsets: list[tuple[int, int]], rendered: RenderedPrompt
    ) -> tuple[list[int], list[tuple[int, int]], int]:
        """Find the template's placeholder token; re-encode placeholder text that came from the sentence.

        Args:
            ids: Token ids of the rendered prompt.
            offsets: Their character offsets.
            rendered: The rendered prompt.

        Returns:
            The fixed ids and offsets and the placeholder's index (-1 for none).
        """
        placeholder_id = self.placeholder_id
        position = -1
        fixed_ids: list[int] = []
        fixed_offsets: list[tuple[int, int]] = []
        for token_id, span in zip(ids, offsets):
            if token_id == placeholder_id and rendered.sentence_start <= span[0] < rendered.sentence_end:
                # The sentence contains the placeholder's literal text: encode it as ordinary text.
                fixed_ids.extend(self.placeholder_text_ids)
                fixed_offsets.extend([span] * len(self.placeholder_text_ids))
                continue
            if token_id == placeholder_id and position < 0 and span[0] == rendered.placeholder_start:
                position = len(fixed_ids)
            elif token_id == placeholder_id:
                # Placeholder text in the template outside the placeholder slot: ordinary text as well.
                fixed_ids.extend(self.placeholder_text_ids)
                fixed_offsets.extend([span] * len(self.placeholder_text_ids))
                continue
            fixed_ids.append(token_id)
            fixed_offsets.append(span)
        if rendered.placeholder_start >= 0 and position < 0:
            raise ValueError(
                f"The placeholder {self.placeholder!r} was not found as one token in the prompt {rendered.text!r}."
            )
        return fixed_ids, fixed_offsets, position

    def collate(
        self,
        rows: list[list[int]],
        placeholder_positions: list[int],
        num_prompts: int,
        prefix_lengths: list[int] | None = None,
    ) -> dict[str, Any]:
        """Pad token rows into a batch.

        Args:
            rows: Token ids per prompt.
            placeholder_positions: Placeholder index per row (-1 for none).
            num_prompts: Prompts (templates) per input.
            prefix_lengths: Cacheable template prefix length per row (None: no prefix groups).

        Returns:
            ``input_ids``, ``attention_mask``, ``placeholder_positions``, ``last_positions``, ``num_prompts`` and,
            with ``prefix_lengths``, ``prefix_groups`` / ``prefix_rest``
            (:func:`~sentence_transformers_tp.prefix_cache.group_rows`).
        """
        lengths = [len(row) for row in rows]
        width = max(lengths, default=0)
        pad_id = self.pad_id
        left = self.padding_side == "left"
        # Padded Python lists first, then one tensor each: far less host work than filling tensors row by row.
        starts = [width - length if left else 0 for length in lengths]
        if left:
            padded = [[pad_id] * start + row for row, start in zip(rows, starts)]
            mask = [[0] * start + [1] * length for length, start in zip(lengths, starts)]
            last = torch.full((len(rows),), width - 1, dtype=torch.long)
        else:
            padded = [row + [pad_id] * (width - length) for row, length in zip(rows, lengths)]
            mask = [[1] * length + [0] * (width - length) for length in lengths]
            last = torch.tensor(lengths, dtype=torch.long) - 1
        input_ids = torch.tensor(padded, dtype=torch.long).reshape(len(rows), width)
        attention_mask = torch.tensor(mask, dtype=torch.long).reshape(len(rows), width)
        placeholder = torch.tensor(
            [position + start if position >= 0 else -1 for position, start in zip(placeholder_positions, starts)],
            dtype=torch.long,
        )
        features: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "placeholder_positions": placeholder,
            "last_positions": last,
            "num_prompts": num_prompts,
        }
        if prefix_lengths is not None:
            groups, rest = group_rows(rows, prefix_lengths, placeholder_positions, starts, pad_id)
            features["prefix_groups"] = groups
            features["prefix_rest"] = rest
        return features
