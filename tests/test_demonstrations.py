from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sentence_transformers_tp.demonstrations import (
    PAPER_DEMONSTRATIONS,
    PAPER_DEMONSTRATIONS_BY_MODEL,
    POOL,
    SOURCES,
    Demonstration,
    find_demonstration,
    get_pool,
    parse_demonstrations,
    to_config,
)

DATA = Path("/work/shared/data/sts")

# The paper's choices, verbatim from BOOSTERS.md §1 (Jiang et al. 2023), OPT-125M .. OPT-13B.
PAPER = [
    ("A man is smoking.", "Smoking"),
    ("A man is playing on a guitar and singing.", "Music"),
    ("relating to switzerland or its people.", "Swiss"),
    ("A jockey riding a horse.", "Equestrian"),
    ("The man is riding a horse.", "Horseback-riding"),
    ("meat from a deer.", "Venison"),
]


def _sentences(path: Path) -> set[str]:
    """Reads both sentence columns of an STS TSV, skipping the test when the file is missing."""
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0][:2] == ["sentence1", "sentence2"]
    return {sentence for row in rows[1:] for sentence in row[:2]}


def test_pool_entries_valid():
    """Every pool entry is a Demonstration with a known source and a title-case single word."""
    assert 70 <= len(POOL) <= 100
    for demo in POOL:
        assert isinstance(demo, Demonstration)
        assert demo.source in SOURCES
        assert demo.sentence == demo.sentence.strip() and demo.sentence
        assert demo.word[0].isupper() or demo.word[0].isdigit(), demo
        assert " " not in demo.word and '"' not in demo.word and "'" not in demo.word
        assert Demonstration(demo.sentence, demo.word, demo.source) == demo  # passes validation


def test_pool_sentences_and_words_unique():
    """No sentence or word (case-insensitive) occurs twice in the pool."""
    assert len({demo.sentence for demo in POOL}) == len(POOL)
    assert len({demo.word.casefold() for demo in POOL}) == len(POOL)


def test_pool_size_by_source():
    """The pool holds the paper's six and a few dozen of each other kind, in source order."""
    counts = {source: len(get_pool(source)) for source in SOURCES}
    assert counts["paper"] == 6
    assert 35 <= counts["stsb-train"] <= 50
    assert 10 <= counts["sickr-train"] <= 20
    assert 15 <= counts["definition"] <= 30
    assert sum(counts.values()) == len(POOL)
    assert [demo.source for demo in POOL] == sorted((d.source for d in POOL), key=SOURCES.index)


def test_paper_demonstrations_verbatim():
    """The six paper demonstrations are present verbatim, in model order, with source "paper"."""
    assert [(demo.sentence, demo.word) for demo in PAPER_DEMONSTRATIONS] == PAPER
    assert all(demo.source == "paper" for demo in PAPER_DEMONSTRATIONS)
    assert POOL[: len(PAPER)] == PAPER_DEMONSTRATIONS
    assert PAPER_DEMONSTRATIONS_BY_MODEL["facebook/opt-2.7b"].word == "Equestrian"
    assert PAPER_DEMONSTRATIONS_BY_MODEL["facebook/opt-13b"].word == "Venison"


def test_pool_avoids_tuning_data():
    """No non-paper pool sentence occurs in STS-B dev or SICK-R trial (the data a demonstration is chosen on)."""
    held_out = _sentences(DATA / "stsb" / "dev.tsv") | _sentences(DATA / "sickr" / "trial.tsv")
    leaked = [demo for demo in POOL if demo.source != "paper" and demo.sentence in held_out]
    assert not leaked
    # The one known exception: the paper's OPT-6.7B choice is also an STS-B dev sentence.
    assert [demo.word for demo in PAPER_DEMONSTRATIONS if demo.sentence in held_out] == ["Horseback-riding"]


def test_stsb_sentences_in_train():
    """Every "stsb-train" sentence occurs verbatim in STS-B train."""
    train = _sentences(DATA / "stsb" / "train.tsv")
    missing = [demo.sentence for demo in get_pool("stsb-train") if demo.sentence not in train]
    assert not missing


def test_sickr_sentences_in_train():
    """Every "sickr-train" sentence occurs verbatim in SICK train."""
    train = _sentences(DATA / "sickr" / "train.tsv")
    missing = [demo.sentence for demo in get_pool("sickr-train") if demo.sentence not in train]
    assert not missing


def test_get_pool_filters():
    """get_pool returns the whole pool, one source or several, and rejects unknown sources."""
    assert get_pool() == POOL
    assert get_pool(["paper", "definition"]) == get_pool("paper") + get_pool("definition")
    assert all(demo.source == "definition" for demo in get_pool("definition"))
    with pytest.raises(ValueError, match="wikipedia"):
        get_pool(["paper", "wikipedia"])


def test_find_demonstration():
    """find_demonstration looks up by exact sentence or case-insensitive word, KeyError otherwise."""
    assert find_demonstration("A jockey riding a horse.").word == "Equestrian"
    assert find_demonstration("equestrian").sentence == "A jockey riding a horse."
    assert find_demonstration("HORSEBACK-RIDING").source == "paper"
    assert find_demonstration("a young dog.").word == "Puppy"
    with pytest.raises(KeyError, match="Zeppelin"):
        find_demonstration("Zeppelin")


def test_parse_accepted_forms():
    """parse_demonstrations accepts a Demonstration, a pair, a dict, lists of these, and None."""
    demo = Demonstration("A man is smoking.", "Smoking", "paper")
    assert parse_demonstrations(demo) == (demo,)
    assert parse_demonstrations(("A man is smoking.", "Smoking")) == (Demonstration("A man is smoking.", "Smoking"),)
    assert parse_demonstrations(["a young dog.", "Puppy"]) == (Demonstration("a young dog.", "Puppy"),)
    assert parse_demonstrations({"sentence": "a young dog.", "word": "Puppy", "source": "definition"}) == (
        Demonstration("a young dog.", "Puppy", "definition"),
    )
    mixed = parse_demonstrations([demo, ["a young dog.", "Puppy"], {"sentence": "x y", "word": "Z"}])
    assert [d.word for d in mixed] == ["Smoking", "Puppy", "Z"]
    assert parse_demonstrations([demo, demo]) == (demo, demo)
    assert parse_demonstrations(None) == ()
    assert parse_demonstrations([]) == ()


def test_config_round_trip():
    """to_config gives JSON-serialisable pairs that parse back to the same sentences and words."""
    config = to_config(POOL)
    assert json.loads(json.dumps(config)) == config
    assert config[0] == ["A man is smoking.", "Smoking"]
    back = parse_demonstrations(json.loads(json.dumps(config)))
    assert [(d.sentence, d.word) for d in back] == [(d.sentence, d.word) for d in POOL]
    assert to_config(PAPER_DEMONSTRATIONS[3]) == [["A jockey riding a horse.", "Equestrian"]]
    assert to_config(demo for demo in PAPER_DEMONSTRATIONS[:2]) == [list(pair) for pair in PAPER[:2]]
    assert to_config(None) == []


def test_as_prefix_matches_template():
    """as_prefix renders the demonstration as in the paper's ICL template."""
    assert PAPER_DEMONSTRATIONS[1].as_prefix() == (
        'This sentence : "A man is playing on a guitar and singing." means in one word:"Music". '
    )


@pytest.mark.parametrize(
    "word",
    ["", "two words", '"Quoted"', "Don't", "-leading", "trailing-", "double--hyphen", "under_score", "Word.", None, 3],
)
def test_demonstration_rejects_bad_word(word):
    """A word that is not a single word (letters, digits, internal hyphens) raises ValueError."""
    with pytest.raises(ValueError, match="one word"):
        Demonstration("A man is smoking.", word)


@pytest.mark.parametrize("sentence", ["", "   ", None, "two\nlines"])
def test_demonstration_rejects_bad_sentence(sentence):
    """An empty, blank, non-string or multi-line sentence raises ValueError."""
    with pytest.raises(ValueError, match="sentence"):
        Demonstration(sentence, "Smoking")


def test_demonstration_is_frozen_and_accepts_hyphens():
    """Demonstrations are immutable; hyphenated and non-ASCII words are accepted."""
    demo = Demonstration("The man is riding a horse.", "Horseback-riding")
    with pytest.raises(AttributeError):
        demo.word = "Riding"  # type: ignore[misc]
    assert Demonstration("un café.", "Café").word == "Café"
    with pytest.raises(ValueError, match="source"):
        Demonstration("a young dog.", "Puppy", "")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("just a string", "just a string"),
        (42, "42"),
        (("A man is smoking.", "two words"), "two words"),
        ({"sentence": "a young dog."}, "a young dog."),
        ({"sentence": "a young dog.", "word": "Puppy", "label": "x"}, "label"),
        ([("a young dog.", "Puppy"), ("A man is smoking.", "")], "entry 1"),
        ([("a young dog.", "Puppy"), ("only one",)], "entry 1"),
        ([("a young dog.", "Puppy"), 7, ("A man is smoking.", "Smoking")], "entry 1"),
        ([["", "Puppy"]], "entry 0"),
    ],
)
def test_parse_rejects_bad_entries(value, named):
    """Bad inputs raise ValueError whose message names the offending entry."""
    with pytest.raises(ValueError) as info:
        parse_demonstrations(value)
    assert named in str(info.value)


def write_split(root: Path, task: str, split: str, sentences: list[str]) -> None:
    """Write ``root/sts/<task>/<split>.tsv`` pairing consecutive sentences (score 1.0)."""
    folder = root / "sts" / task
    folder.mkdir(parents=True, exist_ok=True)
    pairs = zip(sentences[::2], sentences[1::2])
    rows = ["sentence1\tsentence2\tscore", *(f"{a}\t{b}\t1.0" for a, b in pairs)]
    (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


TRAIN_STSB = [f"A man number {i} is playing a guitar." for i in range(12)]
TRAIN_SICK = [f"Two dogs number {i} run in the park." for i in range(12)]
DEV_STSB = ["A woman is slicing an onion today.", "The cat sleeps on the warm sofa."]
TRIAL_SICK = ["A boy is jumping into the lake.", "The girl reads a long book."]


def write_draw_data(root: Path) -> Path:
    """STS-B train/dev and SICK-R train/trial whose train splits also hold dev/trial, pool, duplicate, too short and
    too long sentences (24 sentences qualify); returns ``root``."""
    bad = [
        "a woman  is slicing an onion today",  # STS-B dev, other case, spacing and no period
        "A boy is jumping into the lake.",  # SICK-R trial
        "A man is smoking.",  # the pool
        "Too short here.",  # 3 words
        " ".join(["word"] * 31) + ".",  # 31 words
        TRAIN_STSB[0],  # a duplicate
    ]
    write_split(root, "stsb", "train", TRAIN_STSB + bad[:4])
    write_split(root, "sickr", "train", TRAIN_SICK + bad[4:])
    write_split(root, "stsb", "dev", DEV_STSB)
    write_split(root, "sickr", "trial", TRIAL_SICK)
    return root


def test_draw_sentences_excludes_dev_sets_pool_duplicates_and_lengths(tmp_path):
    """Drawn sentences come from both train splits, are unique, 4-30 words, never dev/trial or pool sentences."""
    from sentence_transformers_tp.demonstrations import draw_sentences

    root = write_draw_data(tmp_path)
    drawn = draw_sentences(root, 24, seed=0)
    assert sorted(drawn) == sorted(TRAIN_STSB + TRAIN_SICK)
    with pytest.raises(ValueError, match="Only 24 sentences"):
        draw_sentences(root, 25)


def test_draw_sentences_is_seeded(tmp_path):
    """The same seed draws the same sentences in the same order; another seed another order."""
    from sentence_transformers_tp.demonstrations import draw_sentences

    root = write_draw_data(tmp_path)
    first = draw_sentences(root, 10, seed=3)
    assert first == draw_sentences(root, 10, seed=3) and len(set(first)) == 10
    assert draw_sentences(root, 24, seed=3) != draw_sentences(root, 24, seed=4)


def test_draw_sentences_needs_every_split(tmp_path):
    """A missing split (here SICK-R trial, an excluded one) is an error, never a silent skip."""
    from sentence_transformers_tp.demonstrations import draw_sentences

    root = write_draw_data(tmp_path)
    (root / "sts" / "sickr" / "trial.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="trial"):
        draw_sentences(root, 5)
    with pytest.raises(ValueError, match="task:split"):
        draw_sentences(root, 5, sources=["stsb"], exclude=["stsb:dev"])


def test_first_word_is_the_demonstration_word_rule():
    """first_word gives the leading word of an answer (internal hyphens kept), or None when none leads."""
    from sentence_transformers_tp.demonstrations import first_word

    assert first_word('Music". This') == "Music"
    assert first_word(' Horseback-riding"') == "Horseback-riding"
    assert first_word('"') is None and first_word("") is None and first_word("<s>") is None


def test_draw_passages_are_titles_else_first_sentences_never_excluded_and_seeded():
    """A passage is the title, else the first sentence (at most max_words words); excluded ids are never drawn."""
    from sentence_transformers_tp.demonstrations import draw_passages

    docs = {f"d{i}": (f"Title {i}", "Body.") for i in range(20)}
    docs["t"] = ("", "First  sentence here. Second one!")
    docs["long"] = ("", " ".join(["word"] * 60) + ". More.")
    docs["empty"], docs["slot"] = ("", " "), ("A {sentence} slot", "x")
    drawn = draw_passages(docs, 20, seed=3, exclude={"d0", "d1"})
    assert set(drawn) == set(docs) - {"d0", "d1", "empty", "slot"}
    assert drawn["d5"] == "Title 5" and drawn["t"] == "First sentence here."
    assert drawn["long"] == " ".join(["word"] * 40)
    assert draw_passages(docs, 5, seed=3) == draw_passages(docs, 5, seed=3) != draw_passages(docs, 5, seed=4)
    assert list(draw_passages(docs, 5, seed=3, max_words=1).values())[0] in {"Title", "First", "word"}
    with pytest.raises(ValueError, match="non-negative"):
        draw_passages(docs, -1)
    with pytest.raises(ValueError, match="only 20 of the 24 documents can be drawn"):
        draw_passages(docs, 21, exclude={"d0", "d1"})
