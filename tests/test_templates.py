"""Templates: exact strings, placeholder placement, sentence cleaning and rendering."""

from __future__ import annotations

import pytest

from sentence_transformers_tp.templates import (
    METAEOL,
    TEMPLATES,
    clean_sentence,
    render,
    resolve_templates,
    without_placeholder,
)


def _vanilla(template: str, sentence: str) -> str:
    return render(template, sentence, None).text


def _tp(template: str, sentence: str) -> str:
    return render(template, sentence, "<PST>").text


def test_prompteol_strings_are_exact():
    """PromptEOL renders exactly as in the paper, with and without the placeholder."""
    (template,) = TEMPLATES["prompteol"]
    assert _vanilla(template, "A cat.") == 'This sentence : "A cat." means in one word:"'
    assert _tp(template, "A cat.") == 'This sentence : <PST> "A cat." means in one word:"'


def test_pretended_cot_and_knowledge_strings_are_exact():
    """Pretended CoT and Knowledge Enhancement render exactly as in TP_REFERENCE §2.2-2.3."""
    assert (
        _tp(TEMPLATES["pretended_cot"][0], "X.")
        == 'After thinking step by step , this sentence : <PST> "X." means in one word:"'
    )
    assert _vanilla(TEMPLATES["knowledge"][0], "X.") == (
        "The essence of a sentence is often captured by its main subjects and actions, while descriptive terms "
        'provide additional but less central details. With this in mind , this sentence : "X." means in one word:"'
    )


def test_metaeol_has_eight_prompts_with_placeholder_after_this_sentence():
    """MetaEOL has the 8 meta-task prompts, each with the placeholder right after 'this sentence : '."""
    assert len(METAEOL) == 8
    for template in METAEOL:
        assert 'this sentence : {placeholder} "{sentence}"' in template
        assert _tp(template, "S.").count("<PST>") == 1
    assert _vanilla(METAEOL[3], "S.").endswith('For this task, this sentence : "S." conveys the emotion in one word:"')


def test_names_are_case_and_alias_insensitive():
    """Built-in names resolve with any case, dashes or common aliases."""
    assert resolve_templates("PromptEOL") == TEMPLATES["prompteol"]
    assert resolve_templates("pretended-cot") == TEMPLATES["pretended_cot"]
    assert resolve_templates("KE") == TEMPLATES["knowledge"]
    assert resolve_templates("MetaEOL") == METAEOL


def test_user_template_gets_placeholder_before_opening_quote():
    """A user template without a placeholder slot gets it before the sentence's opening quote."""
    (template,) = resolve_templates('Summarize sentence "{sentence}" in one word:"')
    assert _tp(template, "Hi.") == 'Summarize sentence <PST> "Hi." in one word:"'
    assert _vanilla(template, "Hi.") == 'Summarize sentence "Hi." in one word:"'


def test_user_template_without_quotes_and_explicit_slot():
    """Without a quote the placeholder goes right before the sentence; an explicit slot is kept where it is."""
    (plain,) = resolve_templates("Represent: {sentence}")
    assert _tp(plain, "Hi.") == "Represent: <PST> Hi."
    (explicit,) = resolve_templates("Given the keyword {placeholder}, this sentence: '{sentence}' means in one word:")
    assert _tp(explicit, "Hi.") == "Given the keyword <PST>, this sentence: 'Hi.' means in one word:"
    assert _vanilla(explicit, "Hi.") == "Given the keyword, this sentence: 'Hi.' means in one word:"


def test_template_lists_are_averaged_templates():
    """A list of user templates resolves to one template per entry."""
    assert len(resolve_templates(["A {sentence}", "B {sentence}"])) == 2


@pytest.mark.parametrize(
    "bad",
    ["no slot here", "{sentence} and {sentence}", "{placeholder} {placeholder} {sentence}", [], "unknown_name"],
)
def test_invalid_templates_raise_clear_errors(bad):
    """Templates without exactly one sentence slot, or with two placeholder slots, are rejected."""
    with pytest.raises(ValueError, match="template"):
        resolve_templates(bad)


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("A man plays", "A man plays."),
        ("A man plays.", "A man plays."),
        ("Is it raining?", "Is it raining."),
        ('He said "hi"', "He said 'hi'"),
        ('He said "hi" loudly', "He said 'hi' loudly."),
        ("  many   spaces\nand lines ", "many spaces and lines."),
        ("", ""),
        ("   ", ""),
        ("It's", "It's."),
        ("end'", "end'"),
    ],
)
def test_clean_sentence_follows_the_paper(raw, cleaned):
    """Sentence cleaning: collapse whitespace, add '.', '"' -> "'", final '?' -> '.'."""
    assert clean_sentence(raw) == cleaned


def test_render_spans_point_at_sentence_and_placeholder():
    """The rendered spans locate the sentence and the placeholder exactly, even when the sentence holds slot text."""
    sentence = "Odd {placeholder} and {sentence} text."
    rendered = render(TEMPLATES["prompteol"][0], sentence, "<PST>")
    assert rendered.text[rendered.sentence_start : rendered.sentence_end] == sentence
    assert rendered.text[rendered.placeholder_start : rendered.placeholder_start + 5] == "<PST>"
    assert rendered.text.count("<PST>") == 1


def test_render_strips_like_the_paper():
    """Leading/trailing template whitespace is stripped and spans are adjusted accordingly."""
    rendered = render("  {placeholder} {sentence}  ", "Hi.", "<P>")
    assert rendered.text == "<P> Hi."
    assert rendered.placeholder_start == 0
    assert rendered.text[rendered.sentence_start : rendered.sentence_end] == "Hi."


def test_without_placeholder_removes_one_space():
    """Removing the slot removes exactly one adjacent space."""
    assert without_placeholder('a : {placeholder} "{sentence}"') == 'a : "{sentence}"'
    assert without_placeholder("{sentence} {placeholder}") == "{sentence}"
