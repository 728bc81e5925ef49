"""Prompt templates for Token Prepending: the registry, user templates, sentence cleaning and rendering.

Pure strings, no torch. A template is written with two slots:

- ``{sentence}`` (exactly once): where the (cleaned) sentence goes.
- ``{placeholder}`` (at most once): where the TP placeholder token goes. The built-in templates place it right
  before the opening quote of the sentence, as in the paper (TP_REFERENCE §1.3). A user template without the slot
  gets the placeholder inserted automatically before the sentence (before its opening quote, if it has one).

When TP is off, the placeholder slot is removed together with one adjacent space, which gives back the original
(vanilla) prompt of each method exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SENTENCE_SLOT = "{sentence}"
PLACEHOLDER_SLOT = "{placeholder}"
DEFAULT_PLACEHOLDER = "<PST>"

_QUOTES = ('"', "'")

PROMPTEOL = 'This sentence : {placeholder} "{sentence}" means in one word:"'
PRETENDED_COT = 'After thinking step by step , this sentence : {placeholder} "{sentence}" means in one word:"'
KNOWLEDGE = (
    "The essence of a sentence is often captured by its main subjects and actions, while descriptive terms provide "
    "additional but less central details. With this in mind , this sentence : {placeholder} "
    '"{sentence}" means in one word:"'
)
METAEOL = (
    "In this task, you're presented with a text excerpt. Your task is to categorize the excerpt into a broad category "
    "such as 'Education', 'Technology', 'Health', 'Business', 'Environment', 'Politics', or 'Culture'. These categories "
    "help in organizing content for better accessibility and targeting. For this task, this sentence : {placeholder} "
    '"{sentence}" should be classified under one general category in one word:"',
    "In this task, you're given a statement and you need to determine whether it's presenting an 'Opinion' or a "
    "'Fact'. This distinction is vital for information verification, educational purposes, and content analysis. "
    'For this task, this sentence : {placeholder} "{sentence}" discriminates between opinion and fact in one word:"',
    "In this task, you're given a review from an online platform. Your task is to generate a rating for the product "
    "based on the review on a scale of 1-5, where 1 means 'extremely negative' and 5 means 'extremely positive'. "
    'For this task, this sentence : {placeholder} "{sentence}" reflects the sentiment in one word:"',
    "In this task, you're reading a personal diary entry. Your task is to identify the predominant emotion "
    "expressed, such as joy, sadness, anger, fear, or love. For this task, this sentence : {placeholder} "
    '"{sentence}" conveys the emotion in one word:"',
    "In this task, you're presented with two sentences. Your task is to assess whether the sentences convey the same "
    "meaning. Use 'identical', 'similar', 'different', or 'unrelated' to describe the relationship. To enhance the "
    'performance of this task, this sentence : {placeholder} "{sentence}" means in one word:"',
    "In this task, you're given a sentence and a phrase. Your task is to determine if the phrase can be a contextual "
    "synonym within the given sentence. Options include 'yes', 'no', or 'partially'. To enhance the performance of "
    'this task, this sentence : {placeholder} "{sentence}" means in one word:"',
    "In this task, you're examining a news article. Your task is to extract the most critical fact from the article. "
    'For this task, this sentence : {placeholder} "{sentence}" encapsulates the key fact in one word:"',
    "In this task, you're reviewing a scientific abstract. Your task is to identify the main entities (e.g., "
    "proteins, diseases) and their relations (e.g., causes, treats). For this task, this sentence : {placeholder} "
    '"{sentence}" highlights the primary entity or relation in one word:"',
)
#: Retrieval wordings (the one-word prompts of PromptReps, Zhuang et al. 2024, written in the PromptEOL form: the
#: text in quotes, then the instruction, ending on an opening quote). The instruction comes after the text, so the
#: last token reads it after the whole query / passage.
RETRIEVAL_QUERY = (
    'Query : {placeholder} "{sentence}" Use one word to represent the query in a retrieval task. The word is:"'
)
RETRIEVAL_DOCUMENT = (
    'Passage : {placeholder} "{sentence}" Use one word to represent the passage in a retrieval task. The word is:"'
)

#: Built-in templates by name. Values are tuples of template strings whose embeddings are averaged (MetaEOL has 8;
#: CK, the ensemble of Pretended CoT and Knowledge of Cheng et al. 2025, has 2; the others 1).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "prompteol": (PROMPTEOL,),
    "pretended_cot": (PRETENDED_COT,),
    "knowledge": (KNOWLEDGE,),
    "metaeol": METAEOL,
    "ck": (PRETENDED_COT, KNOWLEDGE),
    "retrieval_query": (RETRIEVAL_QUERY,),
    "retrieval_document": (RETRIEVAL_DOCUMENT,),
}

#: Accepted spellings of the built-in names.
TEMPLATE_ALIASES: dict[str, str] = {
    "prompteol": "prompteol",
    "eol": "prompteol",
    "metaeol": "metaeol",
    "meta_eol": "metaeol",
    "pretended_cot": "pretended_cot",
    "pretendedcot": "pretended_cot",
    "cot": "pretended_cot",
    "knowledge": "knowledge",
    "knowledge_enhancement": "knowledge",
    "ke": "knowledge",
    "ck": "ck",
    "cot_knowledge": "ck",
    "retrieval_query": "retrieval_query",
    "query": "retrieval_query",
    "retrieval_document": "retrieval_document",
    "retrieval_passage": "retrieval_document",
    "document": "retrieval_document",
    "passage": "retrieval_document",
}

#: The layer each method reads without TP in its original code (HF ``hidden_states`` indexing, TP_REFERENCE §6).
USUAL_OUTPUT_LAYER: dict[str, int] = {
    "prompteol": -1,
    "metaeol": -1,
    "pretended_cot": -2,
    "knowledge": -2,
    "ck": -2,
    "retrieval_query": -1,
    "retrieval_document": -1,
}


def canonical_template_name(name: str) -> str | None:
    """Return the canonical built-in name for ``name`` (case, ``-`` and spaces ignored), or None if not built in.

    Args:
        name: A template name such as ``"PromptEOL"``, ``"pretended-cot"`` or ``"ke"``.

    Returns:
        The registry key, or None when ``name`` is not a built-in template name.
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return TEMPLATE_ALIASES.get(key)


def resolve_templates(template: str | Sequence[str]) -> tuple[str, ...]:
    """Turn a template spec into template strings: a built-in name, one user template, or a list of built-in names
    and user templates (a template ensemble: the embeddings of all its templates are averaged, like MetaEOL).

    Args:
        template: A built-in name (see :data:`TEMPLATES`), a user template string with a ``{sentence}`` slot, or a
            list of such names and strings, e.g. ``["pretended_cot", "knowledge"]`` (the same as ``"ck"``).

    Returns:
        The validated template strings, each with exactly one ``{placeholder}`` slot.

    Raises:
        ValueError: If the spec is empty, names no built-in template and has no ``{sentence}`` slot, or a template
            has the slots a wrong number of times.
    """
    items = [template] if isinstance(template, str) else list(template)
    if not items:
        raise ValueError("A template list must contain at least one template.")
    out: list[str] = []
    for item in items:
        name = canonical_template_name(item) if isinstance(item, str) else None
        if name is not None:
            out.extend(TEMPLATES[name])
        else:
            out.append(_with_placeholder_slot(item))
    return tuple(out)


def template_names(template: str | Sequence[str]) -> tuple[str, ...] | None:
    """The canonical built-in names of a spec made only of built-in names (e.g. ``("pretended_cot", "knowledge")``
    for that list), or None when it holds a user template.

    Args:
        template: A template spec.

    Returns:
        The names, or None.
    """
    items = [template] if isinstance(template, str) else list(template)
    names = [canonical_template_name(item) if isinstance(item, str) else None for item in items]
    if not names or any(name is None for name in names):
        return None
    return tuple(names)


def with_demonstrations(template: str, demonstrations: Sequence[Any]) -> str:
    """Put in-context demonstrations in front of a template, each written in the template's own wording.

    A demonstration ``(sentence, word)`` becomes the template filled with the (cleaned) sentence, without
    placeholder, followed by the word, the closing quote when the template ends with an opening one, and ``". "``.
    For PromptEOL this is exactly the prompt of Jiang et al. (2023): ``This sentence : "A jockey riding a horse."
    means in one word:"Equestrian". This sentence : {placeholder} "{sentence}" means in one word:"``. The
    demonstrations lie before the placeholder, so Token Prepending treats only the query sentence, and the prefix
    cache computes them once.

    Args:
        template: A template with a ``{sentence}`` and a ``{placeholder}`` slot.
        demonstrations: Objects with ``sentence`` and ``word`` attributes
            (:class:`~sentence_transformers_tp.demonstrations.Demonstration`).

    Returns:
        The template with the demonstrations in front.

    Raises:
        ValueError: If a demonstration contains slot text.
    """
    pieces = []
    closing = template.rstrip()[-1:] if template.rstrip().endswith(_QUOTES) else ""
    for demo in demonstrations:
        for text in (demo.sentence, demo.word):
            if SENTENCE_SLOT in text or PLACEHOLDER_SLOT in text:
                raise ValueError(f"A demonstration may not contain {SENTENCE_SLOT} or {PLACEHOLDER_SLOT}: {text!r}.")
        rendered = render(template, clean_sentence(demo.sentence), None).text
        pieces.append(f"{rendered}{demo.word}{closing}. ")
    return "".join(pieces) + template.lstrip()


def _with_placeholder_slot(template: str) -> str:
    """Validate a template and insert the ``{placeholder}`` slot if it has none."""
    if not isinstance(template, str):
        raise ValueError(f"A template must be a string, got {type(template).__name__}.")
    n_sentence = template.count(SENTENCE_SLOT)
    if n_sentence != 1:
        known = ", ".join(sorted(TEMPLATES))
        raise ValueError(
            f"A template must contain the slot {SENTENCE_SLOT} exactly once (found {n_sentence} times) or be one of "
            f"the built-in names ({known}); got {template!r}."
        )
    n_placeholder = template.count(PLACEHOLDER_SLOT)
    if n_placeholder > 1:
        raise ValueError(f"A template may contain {PLACEHOLDER_SLOT} at most once; got {template!r}.")
    if n_placeholder == 1:
        return template
    before, after = template.split(SENTENCE_SLOT)
    if before.endswith(_QUOTES):
        # Before the opening quote, as in the paper: ': <PST> "sentence"'.
        head, quote = before[:-1], before[-1]
        sep = "" if head == "" or head.endswith(" ") else " "
        return f"{head}{sep}{PLACEHOLDER_SLOT} {quote}{SENTENCE_SLOT}{after}"
    sep = "" if before == "" or before.endswith(" ") else " "
    return f"{before}{sep}{PLACEHOLDER_SLOT} {SENTENCE_SLOT}{after}"


def without_placeholder(template: str) -> str:
    """Remove the ``{placeholder}`` slot and one adjacent space: the vanilla (TP off) form of a template.

    Args:
        template: A template string with a ``{placeholder}`` slot.

    Returns:
        The template without the slot.
    """
    for variant in (PLACEHOLDER_SLOT + " ", " " + PLACEHOLDER_SLOT, PLACEHOLDER_SLOT):
        if variant in template:
            return template.replace(variant, "", 1)
    return template


def clean_sentence(sentence: str) -> str:
    """The sentence cleaning of PromptEOL / Pretended CoT / MetaEOL / TP (TP_REFERENCE §2.0).

    Whitespace runs (including newlines) become single spaces; a non-empty sentence whose last character is not
    one of ``. ? " '`` gets a final ``.``; every ``"`` becomes ``'``; a final ``?`` becomes ``.``.

    Args:
        sentence: The raw sentence.

    Returns:
        The cleaned sentence.
    """
    sentence = " ".join(sentence.split())
    if sentence and sentence[-1] not in ".?\"'":
        sentence += "."
    sentence = sentence.replace('"', "'")
    if sentence and sentence[-1] == "?":
        sentence = sentence[:-1] + "."
    return sentence


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt string with the character spans that matter for tokenization.

    Attributes:
        text: The full prompt.
        sentence_start: Index of the first character of the sentence in ``text``.
        sentence_end: Index one past the last character of the sentence.
        placeholder_start: Index of the placeholder text in ``text``, or -1 without placeholder.
    """

    text: str
    sentence_start: int
    sentence_end: int
    placeholder_start: int


def render(template: str, sentence: str, placeholder: str | None) -> RenderedPrompt:
    """Fill a template with a sentence and, if given, the placeholder text; the result is stripped, as in the paper.

    The sentence is inserted verbatim (clean it first with :func:`clean_sentence` if wanted). Slot text that occurs
    inside the sentence is never substituted.

    Args:
        template: A template with one ``{sentence}`` slot and at most one ``{placeholder}`` slot.
        sentence: The sentence text.
        placeholder: The placeholder token text, or None to render the vanilla (TP off) prompt.

    Returns:
        The rendered prompt with the sentence and placeholder spans.
    """
    if placeholder is None:
        template = without_placeholder(template)
    before, after = template.split(SENTENCE_SLOT)
    before_index = before.find(PLACEHOLDER_SLOT)
    after_index = after.find(PLACEHOLDER_SLOT)
    ph_text = placeholder or ""
    before = before.replace(PLACEHOLDER_SLOT, ph_text)
    after = after.replace(PLACEHOLDER_SLOT, ph_text)
    text = before + sentence + after
    stripped_left = len(text) - len(text.lstrip())
    text = text.strip()
    start = len(before) - stripped_left
    end = start + len(sentence)
    if placeholder is None:
        ph_start = -1
    elif before_index >= 0:
        ph_start = before_index - stripped_left
    else:
        ph_start = len(before) + len(sentence) + after_index - stripped_left
    return RenderedPrompt(
        text=text, sentence_start=max(start, 0), sentence_end=max(end, 0), placeholder_start=ph_start
    )


def layer_label(output_layer: int, layer_span: int = 1) -> str:
    """The layer part of a setting's label: ``L28``, or for a span of layers ``L26-28 mean`` (``L-1 mean of 3`` for a
    negative output layer).

    Args:
        output_layer: The output layer (Hugging Face ``hidden_states`` indexing).
        layer_span: Consecutive layers averaged, ending at ``output_layer``.
    """
    if layer_span == 1:
        return f"L{output_layer}"
    if output_layer >= 0:
        return f"L{output_layer - layer_span + 1}-{output_layer} mean"
    return f"L{output_layer} mean of {layer_span}"


def template_label(template: str | Sequence[str]) -> str:
    """A short label for a template spec: the built-in name(s), or ``custom-<hash>`` for user templates.

    Args:
        template: A template spec as accepted by :func:`~sentence_transformers_tp.templates.resolve_templates`.

    Returns:
        The label, e.g. ``"prompteol"``, ``"pretended_cot+knowledge"`` or ``"custom-1a2b3c4d"``.
    """
    names = template_names(template)
    if names is not None:
        return "+".join(names)
    payload = json.dumps(template if isinstance(template, str) else list(template))
    return "custom-" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:8]
