"""The shipped pool of in-context demonstrations for PromptEOL ("sentence -> one word" examples).

Jiang et al. (2023, "Scaling Sentence Embeddings with Large Language Models") put one demonstration before the
PromptEOL prompt::

    This sentence : "<demo sentence>" means in one word:"<Word>". This sentence : "<sentence>" means in one word:"

and chose it per model by STS-B dev score from a pool of 300 candidates (100 STS-B train sentences labelled with one
word, 200 dictionary definitions with their headword). This module ships a smaller pool of the same kinds to choose
from (by the same kind of dev search), and helpers to parse demonstrations given by a user or saved in a JSON config.

Pure Python, no torch.

Pool (:data:`POOL`), each entry tagged with its ``source``:

- ``"paper"``: the six demonstrations the authors chose for OPT-125M .. OPT-13B (:data:`PAPER_DEMONSTRATIONS`).
  One of them ("The man is riding a horse.") also occurs in STS-B dev; it is kept verbatim as the paper's choice.
- ``"stsb-train"``: sentences copied verbatim from the STS Benchmark *train* split (captions, forums and news), each
  with a one-word label written for this pool. STS Benchmark (Cer et al. 2017, SemEval-2017 Task 1): annotations
  under CC BY-SA 4.0; the text of each sub-corpus keeps its own terms (MSR-Video, PASCAL image captions, DEFT forum
  and news, MSR-Paraphrase, EMM headlines; see the LICENSE.txt that comes with STS-B).
- ``"sickr-train"``: sentences copied verbatim from the SICK *train* split (Marelli et al. 2014; CC BY-NC-SA 3.0),
  with a one-word label written for this pool.
- ``"definition"``: short dictionary-style definitions written for this pool, with their headword.

A wider pool: :func:`draw_sentences` draws more candidate sentences, seeded, from the STS-B and SICK-R train splits
of a data directory (never one of STS-B dev, SICK-R trial or the pool), for
:func:`sentence_transformers_tp.labeling.label_with_backbone` to label with the backbone's own one-word answer
(source ``"backbone"``); :func:`first_word` is the word rule of such an answer. :func:`draw_passages` draws short
passages of a retrieval corpus for the same labeller (``st-tp tune-retrieval --corpus-demonstrations``).

No sentence of the pool is taken from STS-B dev or SICK trial (the data used to choose a demonstration), apart from
the paper's own choice noted above. Whether an STS-B or SICK train sentence also occurs in a *test* split was not
checked here (the test splits are not shipped with the project data); a demonstration only shares text with the
prompt prefix, never with the evaluated pair, so an overlap would not leak labels.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sentence_transformers_tp.data import load_sts_split

PAPER = "paper"
STSB_TRAIN = "stsb-train"
SICKR_TRAIN = "sickr-train"
DEFINITION = "definition"
CUSTOM = "custom"
BACKBONE = "backbone"
"""The source of a drawn sentence labelled by the backbone itself (not part of the shipped pool)."""

DRAW_SOURCES = ("stsb:train", "sickr:train")
"""The ``task:split`` splits :func:`draw_sentences` draws from by default."""
DRAW_EXCLUDED = ("stsb:dev", "sickr:trial")
"""The ``task:split`` splits whose sentences :func:`draw_sentences` never returns by default (the dev sets)."""

SOURCES = (PAPER, STSB_TRAIN, SICKR_TRAIN, DEFINITION)
"""The sources of the shipped pool, in the order :data:`POOL` lists them."""

# One word: letters and digits (any script), with single hyphens inside ("Horseback-riding", "Blood-donation").
_WORD = re.compile(r"[^\W_]+(?:-[^\W_]+)*")


@dataclass(frozen=True)
class Demonstration:
    """One in-context demonstration: a sentence and the one word it "means".

    Args:
        sentence: The demonstration sentence, put between the quotes of the first ``This sentence : "..."``.
        word: The single word that captures the sentence (letters, digits and internal hyphens only).
        source: Where the demonstration comes from: ``"paper"``, ``"stsb-train"``, ``"sickr-train"``,
            ``"definition"`` for the shipped pool, ``"custom"`` (the default) for a user's own.

    Raises:
        ValueError: If the sentence is empty or blank, the word is not a single word, or the source is empty.
    """

    sentence: str
    word: str
    source: str = CUSTOM

    def __post_init__(self) -> None:
        if not isinstance(self.sentence, str) or not self.sentence.strip():
            raise ValueError(f"Demonstration sentence must be a non-empty string, got {self.sentence!r}.")
        if "\n" in self.sentence or "\r" in self.sentence:
            raise ValueError(f"Demonstration sentence must be a single line, got {self.sentence!r}.")
        if not isinstance(self.word, str) or not _WORD.fullmatch(self.word):
            raise ValueError(
                f"Demonstration word must be one word (letters, digits and internal hyphens only; no spaces or "
                f"quotes), got {self.word!r} for sentence {self.sentence!r}."
            )
        if not isinstance(self.source, str) or not self.source.strip():
            raise ValueError(f"Demonstration source must be a non-empty string, got {self.source!r}.")

    def as_pair(self) -> list[str]:
        """Returns ``[sentence, word]``, the JSON form used by :func:`to_config`."""
        return [self.sentence, self.word]

    def as_prefix(self) -> str:
        """Returns the demonstration as PromptEOL text, ``This sentence : "<s>" means in one word:"<W>". ``.

        The trailing space separates it from the prompt that follows (Jiang et al. 2023, ``run_icl.sh``).
        """
        return f'This sentence : "{self.sentence}" means in one word:"{self.word}". '


PAPER_DEMONSTRATIONS: tuple[Demonstration, ...] = (
    Demonstration("A man is smoking.", "Smoking", PAPER),  # OPT-125M
    Demonstration("A man is playing on a guitar and singing.", "Music", PAPER),  # OPT-350M
    Demonstration("relating to switzerland or its people.", "Swiss", PAPER),  # OPT-1.3B
    Demonstration("A jockey riding a horse.", "Equestrian", PAPER),  # OPT-2.7B
    Demonstration("The man is riding a horse.", "Horseback-riding", PAPER),  # OPT-6.7B
    Demonstration("meat from a deer.", "Venison", PAPER),  # OPT-13B
)
"""The demonstrations Jiang et al. (2023) chose for OPT-125M, 350M, 1.3B, 2.7B, 6.7B and 13B, in that order."""

PAPER_DEMONSTRATIONS_BY_MODEL: dict[str, Demonstration] = {
    "facebook/opt-125m": PAPER_DEMONSTRATIONS[0],
    "facebook/opt-350m": PAPER_DEMONSTRATIONS[1],
    "facebook/opt-1.3b": PAPER_DEMONSTRATIONS[2],
    "facebook/opt-2.7b": PAPER_DEMONSTRATIONS[3],
    "facebook/opt-6.7b": PAPER_DEMONSTRATIONS[4],
    "facebook/opt-13b": PAPER_DEMONSTRATIONS[5],
}
"""The paper's choice per OPT checkpoint (chosen for those models; for any other model, search the pool)."""

_STSB_TRAIN: tuple[Demonstration, ...] = tuple(
    Demonstration(sentence, word, STSB_TRAIN)
    for sentence, word in (
        # main-captions / MSRvid
        ("A woman is playing the violin.", "Violin"),
        ("A man is playing piano.", "Piano"),
        ("A person is slicing some onions.", "Slicing"),
        ("A man is pouring oil into a skillet.", "Cooking"),
        ("A woman is putting on makeup.", "Makeup"),
        ("A baby elephant is eating.", "Elephant"),
        ("The men are playing basketball.", "Basketball"),
        ("A woman is talking on a telephone.", "Telephone"),
        ("A man climbs up a rope.", "Climbing"),
        ("A man is meditating.", "Meditation"),
        ("A woman walks her dog down the street.", "Dog-walking"),
        # main-captions / images
        ("A dog is running along the grass.", "Dog"),
        ("A computer on a desk.", "Computer"),
        ("A group of sheep in a field.", "Sheep"),
        ("Train pulling into a station.", "Train"),
        ("A skier speeds through the snow.", "Skiing"),
        ("Kids play soccer on a field.", "Soccer"),
        ("An orange tabby cat sleeping on the sofa.", "Cat"),
        ("A large bird is flying through the air.", "Bird"),
        ("A dining table with candles, wine, and a teapot.", "Dinner"),
        # main-forum / deft-forum
        ("There is no freedom of speech.", "Censorship"),
        ("It is an excellent indicator of climate change.", "Climate"),
        ("Stop avoiding the question.", "Evasion"),
        ("I hope everything is okay.", "Concern"),
        ("No healthy person needs gambling.", "Gambling"),
        # main-news / MSRpar
        ("Oracle shares fell 27 cents, or 2 percent, to $13.09.", "Stocks"),
        ("If convicted of the spying charges, he could face the death penalty.", "Espionage"),
        ("Similar bills passed the House twice but died in the Senate.", "Legislation"),
        ("Monkeypox is usually found only in central and western Africa.", "Disease"),
        ("Hospitals and the Red Cross appealed to blood donors yesterday.", "Blood-donation"),
        # main-news / deft-news
        ("myanmar was formerly called burma.", "Myanmar"),
        ("methamphetamine is also known as ice.", "Methamphetamine"),
        ("the cfe treaty was signed in 1990.", "Treaty"),
        ("turkmenistan borders afghanistan.", "Geography"),
        # main-news / headlines
        ("7.2 magnitude earthquake strikes Philippines", "Earthquake"),
        ("Tropical Storm Karen targets US Gulf Coast", "Storm"),
        ("Polls open in Russian presidential election", "Election"),
        ("Eurozone unemployment hits record high", "Unemployment"),
        ("Google releases Nexus 5 phone with Kit Kat", "Smartphone"),
        ("Titanic violin sells for $1.7 million", "Auction"),
        ("Opening ceremony gives Olympics a rocking start", "Olympics"),
        ("Sony to axe PC unit in major business overhaul", "Restructuring"),
    )
)

_SICKR_TRAIN: tuple[Demonstration, ...] = tuple(
    Demonstration(sentence, word, SICKR_TRAIN)
    for sentence, word in (
        ("An aircraft is taking off", "Takeoff"),
        ("The surfer is riding a big wave", "Surfing"),
        ("A man is singing into an old microphone", "Singing"),
        ("A man is shooting with a bow", "Archery"),
        ("The man is cracking eggs into a bowl", "Eggs"),
        ("A man is riding a motorcycle through the town", "Motorcycling"),
        ("A tiger is walking around a cage", "Tiger"),
        ("People are clustered around a bonfire at night", "Bonfire"),
        ("Two women are talking", "Conversation"),
        ("The person is playing the flute", "Flute"),
        ("A little dog is running on the sand", "Beach"),
        ("Some men are fighting", "Fight"),
        ("A man is participating in a bmx race", "Cycling"),
        ("The potato is being peeled by a woman", "Peeling"),
        ("A bride with a black veil is looking down", "Bride"),
        ("A man is speaking on a stage", "Speech"),
    )
)

_DEFINITIONS: tuple[Demonstration, ...] = tuple(
    Demonstration(sentence, word, DEFINITION)
    for sentence, word in (
        ("a young dog.", "Puppy"),
        ("the young of a cow.", "Calf"),
        ("a person who flies an aircraft.", "Pilot"),
        ("a doctor who treats teeth.", "Dentist"),
        ("a person who writes poems.", "Poet"),
        ("a building where books are kept for reading or borrowing.", "Library"),
        ("a place where aircraft take off and land.", "Airport"),
        ("a hot drink made from roasted and ground beans.", "Coffee"),
        ("a sweet food baked from flour, eggs, sugar and butter.", "Cake"),
        ("having a very pleasant taste.", "Delicious"),
        ("soft white flakes of frozen water that fall from the sky.", "Snow"),
        ("a violent tropical storm with very strong winds.", "Hurricane"),
        ("a very large body of salt water.", "Ocean"),
        ("the study of stars, planets and space.", "Astronomy"),
        ("a portable computer small enough to use on your lap.", "Laptop"),
        ("money paid regularly to an employee for work.", "Salary"),
        ("a period of ten years.", "Decade"),
        ("relating to the sea or ships.", "Maritime"),
        ("relating to the kidneys.", "Renal"),
        ("an extreme fear of heights.", "Acrophobia"),
    )
)

POOL: tuple[Demonstration, ...] = PAPER_DEMONSTRATIONS + _STSB_TRAIN + _SICKR_TRAIN + _DEFINITIONS
"""All shipped candidates: the paper's six, then STS-B train, SICK train and definitions. Sentences and words are
unique across the pool, so :func:`find_demonstration` is unambiguous."""


def get_pool(sources: str | Iterable[str] | None = None) -> tuple[Demonstration, ...]:
    """Returns the shipped candidates, optionally only those of some sources, in pool order.

    Args:
        sources: One source or several (``"paper"``, ``"stsb-train"``, ``"sickr-train"``, ``"definition"``);
            ``None`` for the whole pool.

    Returns:
        The matching demonstrations.

    Raises:
        ValueError: If a source is not one of the pool's sources.
    """
    if sources is None:
        return POOL
    wanted = {sources} if isinstance(sources, str) else set(sources)
    unknown = sorted(str(source) for source in wanted - set(SOURCES))
    if unknown:
        raise ValueError(f"Unknown demonstration source(s) {unknown}; choose from {list(SOURCES)}.")
    return tuple(demo for demo in POOL if demo.source in wanted)


def find_demonstration(word_or_sentence: str) -> Demonstration:
    """Looks a shipped demonstration up by its sentence (exact) or its word (case-insensitive).

    Args:
        word_or_sentence: A pool sentence, e.g. ``"A jockey riding a horse."``, or a pool word, e.g.
            ``"equestrian"``.

    Returns:
        The pool entry.

    Raises:
        KeyError: If no pool entry has that sentence or word.
    """
    for demo in POOL:
        if demo.sentence == word_or_sentence:
            return demo
    key = word_or_sentence.strip().casefold()
    for demo in POOL:
        if demo.word.casefold() == key or demo.sentence.strip().casefold() == key:
            return demo
    raise KeyError(f"No shipped demonstration has the sentence or word {word_or_sentence!r}.")


def _parse_one(entry: Any, index: int | None) -> Demonstration:
    """Turns one entry (Demonstration, pair or dict) into a Demonstration, naming it in the error otherwise."""
    where = "Demonstration" if index is None else f"Demonstration entry {index}"
    if isinstance(entry, Demonstration):
        return entry
    try:
        if isinstance(entry, Mapping):
            extra = set(entry) - {"sentence", "word", "source"}
            if "sentence" not in entry or "word" not in entry or extra:
                raise ValueError(
                    'a dict needs the keys "sentence" and "word" (and optionally "source")'
                    + (f", got unexpected keys {sorted(map(str, extra))}" if extra else "")
                )
            return Demonstration(entry["sentence"], entry["word"], entry.get("source", CUSTOM))
        if isinstance(entry, (list, tuple)) and len(entry) == 2:
            return Demonstration(entry[0], entry[1])
    except ValueError as error:
        raise ValueError(f"{where} {entry!r} is invalid: {error}") from None
    raise ValueError(
        f"{where} {entry!r} is invalid: expected a Demonstration, a (sentence, word) pair or a "
        '{"sentence": ..., "word": ...} dict.'
    )


def _is_single(value: Any) -> bool:
    """Whether ``value`` is one demonstration (rather than a list of them)."""
    if isinstance(value, (Demonstration, Mapping)):
        return True
    # A (sentence, word) pair starts with a string; a list of two demonstrations does not.
    return isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)


def parse_demonstrations(value: Any) -> tuple[Demonstration, ...]:
    """Normalises user- or config-given demonstrations to a tuple of :class:`Demonstration`.

    Args:
        value: A :class:`Demonstration`, a ``(sentence, word)`` pair, a ``{"sentence": ..., "word": ...}`` dict (as
            saved in a JSON config; an optional ``"source"`` key is kept), or a list/tuple of any of these.
            ``None`` or an empty list gives an empty tuple (no demonstration).

    Returns:
        The demonstrations, in the given order.

    Raises:
        ValueError: If an entry is none of the accepted forms or is invalid; the message names the entry (and its
            index in a list).
    """
    if value is None:
        return ()
    if _is_single(value):
        return (_parse_one(value, None),)
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(
            f"Demonstrations {value!r} are invalid: expected a Demonstration, a (sentence, word) pair, a "
            '{"sentence": ..., "word": ...} dict, or a list of these.'
        )
    return tuple(_parse_one(entry, index) for index, entry in enumerate(value))


def to_config(demos: Any) -> list[list[str]]:
    """Returns demonstrations in their JSON form, ``[[sentence, word], ...]``, which :func:`parse_demonstrations`
    reads back.

    Args:
        demos: Anything :func:`parse_demonstrations` accepts (a generator of demonstrations too).

    Returns:
        A JSON-serialisable list of ``[sentence, word]`` pairs (the source is not kept).

    Raises:
        ValueError: If an entry is invalid (see :func:`parse_demonstrations`).
    """
    if demos is not None and not _is_single(demos) and not isinstance(demos, (list, tuple, str, bytes, Mapping)):
        if isinstance(demos, Iterable):
            demos = list(demos)
    return [demo.as_pair() for demo in parse_demonstrations(demos)]


def first_word(text: str) -> str | None:
    """The one word a one-word answer starts with (leading whitespace skipped; the word rule of
    :class:`Demonstration`: letters and digits with internal hyphens), or None when it starts with anything else.

    Args:
        text: The answer, e.g. ``'Music". This'``.
    """
    match = _WORD.match(text.lstrip())
    return match.group(0) if match else None


def sentence_key(sentence: str) -> str:
    """The form two sentences are compared in when :func:`draw_sentences` excludes one: whitespace runs collapsed,
    case folded, final periods and spaces dropped (``"A man  plays."`` and ``"a man plays"`` are one sentence)."""
    return " ".join(sentence.split()).casefold().rstrip(". ")


def split_sentences(data_dir: str | os.PathLike, spec: str) -> list[str]:
    """Both sentences of every pair of a ``task:split`` STS split of a data directory, in file order.

    Args:
        data_dir: The data directory.
        spec: ``task:split``, e.g. ``"stsb:train"``.

    Raises:
        ValueError: If ``spec`` is not ``task:split``.
        FileNotFoundError: If the data directory has no such split.
    """
    task, colon, split = spec.partition(":")
    if not colon or not task or not split:
        raise ValueError(f"A split must be written task:split (e.g. stsb:train), got {spec!r}.")
    data, _, _ = load_sts_split(data_dir, task, split)
    return [text for pair in zip(data.sentence1, data.sentence2) for text in pair]


def draw_sentences(
    data_dir: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    sources: Sequence[str] = DRAW_SOURCES,
    exclude: Sequence[str] = DRAW_EXCLUDED,
    min_words: int = 4,
    max_words: int = 30,
) -> list[str]:
    """``n`` candidate demonstration sentences drawn, seeded, from STS train splits: deduplicated, of ``min_words``
    to ``max_words`` words, and never a sentence of ``exclude`` (the dev sets a demonstration is chosen on) or of
    :data:`POOL` (compared by :func:`sentence_key`). Each split given must exist, the excluded ones too.

    Args:
        data_dir: The data directory (``sts/<task>/<split>.tsv``).
        n: How many sentences.
        seed: Seed of the draw (the same arguments give the same sentences, in the same order).
        sources: ``task:split`` splits drawn from.
        exclude: ``task:split`` splits whose sentences are never drawn.
        min_words: Fewest words of a sentence (whitespace-separated).
        max_words: Most words of a sentence.

    Raises:
        ValueError: If ``n`` is negative, the word bounds are empty, or fewer than ``n`` sentences qualify.
        FileNotFoundError: If a split is missing.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"The number of sentences to draw must be a non-negative integer, got {n!r}.")
    if not 1 <= min_words <= max_words:
        raise ValueError(f"Need 1 <= min_words <= max_words, got {min_words} and {max_words}.")
    banned = {sentence_key(text) for spec in exclude for text in split_sentences(data_dir, spec)}
    banned.update(sentence_key(demo.sentence) for demo in POOL)
    candidates: dict[str, str] = {}
    for spec in sources:
        for text in split_sentences(data_dir, spec):
            text, key = " ".join(text.split()), sentence_key(text)
            if key in banned or key in candidates or "{" in text or not min_words <= len(text.split()) <= max_words:
                continue
            candidates[key] = text
    if len(candidates) < n:
        raise ValueError(
            f"Only {len(candidates)} sentences of {', '.join(sources)} qualify ({min_words}-{max_words} words, not in "
            f"{', '.join(exclude)} or the shipped pool); asked for {n}."
        )
    return random.Random(seed).sample(list(candidates.values()), n)


def draw_passages(
    documents: Mapping[str, tuple[str, str]],
    n: int,
    *,
    seed: int = 0,
    exclude: Collection[str] = (),
    max_words: int = 40,
) -> dict[str, str]:
    """``n`` documents drawn, seeded, as short demonstration passages: a document's title, else the first sentence of
    its text (up to the first ``.``, ``!`` or ``?`` followed by a space), on one line and cut to ``max_words`` words.
    A document in ``exclude``, or whose passage is empty or holds a ``{`` (template slot text), is never drawn.

    Args:
        documents: ``{id: (title, text)}``, e.g. a BEIR corpus.
        n: How many documents.
        seed: Seed of the draw (the same arguments give the same documents, in the same order).
        exclude: Ids never drawn (e.g. every document relevant to a query of the split being tuned).
        max_words: Most words of a passage.

    Returns:
        ``{id: passage}`` in draw order.

    Raises:
        ValueError: If ``n`` is negative or more than the documents that can be drawn.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"The number of demonstration documents must be a non-negative integer, got {n!r}.")
    passages = {}
    for doc_id, (title, text) in documents.items():
        passage = " ".join(title.split()) or re.split(r"(?<=[.!?])\s", " ".join(text.split()), maxsplit=1)[0]
        passage = " ".join(passage.split()[:max_words])
        if doc_id not in exclude and passage and "{" not in passage:
            passages[doc_id] = passage
    if len(passages) < n:
        raise ValueError(
            f"Asked for {n} demonstration documents, but only {len(passages)} of the {len(documents)} documents can "
            "be drawn (not excluded, e.g. as relevant to a query of the split, and with a title or text)."
        )
    return {doc_id: passages[doc_id] for doc_id in random.Random(seed).sample(list(passages), n)}
