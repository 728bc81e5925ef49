"""Demonstration labels from the backbone's own greedy one-word answer under the PromptEOL prompt."""

from __future__ import annotations

import pytest
import torch

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.demonstrations import BACKBONE, Demonstration, first_word
from sentence_transformers_tp.labeling import finished, greedy_answers, label_with_backbone
from sentence_transformers_tp.sparse import PromptRepsSparse
from sentence_transformers_tp.templates import PROMPTEOL

SENTENCES = [f"A man number {i} is playing a guitar." for i in range(6)] + ["Two dogs run in the park."]


@pytest.fixture(scope="module")
def module(tiny_llama) -> TokenPrependingTransformer:
    """The tiny Llama with TP on (the labeller runs vanilla PromptEOL whatever the module's own setting)."""
    return TokenPrependingTransformer(str(tiny_llama), "knowledge", tp_start=1, tp_exit=3, output_layer=2)


def test_answers_grow_greedily_and_are_deterministic(module):
    """One more step extends only unfinished answers (greedy, so a prefix); the batch size changes nothing."""
    answers = [greedy_answers(module, SENTENCES, max_steps=k, batch_size=4) for k in (1, 2, 3)]
    assert answers[2] == greedy_answers(module, SENTENCES, max_steps=3, batch_size=7)
    for shorter, longer in zip(answers, answers[1:]):
        for (text, done), (more, more_done) in zip(shorter, longer):
            assert more == text if done else (more.startswith(text.removesuffix("\ufffd")) and more != text)
            assert more_done == finished(more)


def test_first_token_is_the_lm_head_argmax_of_the_final_state(module):
    """The first answer token is the argmax of the LM head over the final normed state of the PromptEOL prompt."""
    from sentence_transformers_tp.settings import Setting

    answers = greedy_answers(module, SENTENCES[:2], max_steps=1)
    weight = PromptRepsSparse.from_module(module).head_weight()
    with torch.inference_mode(), module.using(Setting(template=PROMPTEOL, tp_start=1, tp_exit=1)):
        final = module.embed(module.preprocess(SENTENCES[:2]), layers=[-1])[:, 0]
    tokens = (final @ weight.T).argmax(-1).tolist()
    assert [text for text, _ in answers] == [module.tokenizer.decode([t]) for t in tokens]


def test_labels_are_valid_words_at_most_one_per_sentence(module):
    """Every label is a Demonstration of a given sentence with its answer's first word; dropped ones had no word."""
    labelled = label_with_backbone(module, SENTENCES, max_steps=4, batch_size=3)
    answers = dict(zip(SENTENCES, greedy_answers(module, SENTENCES, max_steps=4)))
    assert labelled.asked == len(SENTENCES) and labelled.seconds >= 0
    assert [d.sentence for d in labelled] == [s for s in SENTENCES if s in {d.sentence for d in labelled}]
    assert len({d.sentence for d in labelled}) == len(labelled)
    for demo in labelled:
        assert isinstance(demo, Demonstration) and demo.source == BACKBONE
        text, done = answers[demo.sentence]
        assert done and demo.word == first_word(text) and not text.lstrip()[len(demo.word) :].startswith("\ufffd")
    for sentence in set(SENTENCES) - {d.sentence for d in labelled}:
        text, done = answers[sentence]
        word = first_word(text)
        assert not done or word is None or text.lstrip()[len(word) :].startswith("\ufffd")
    assert list(labelled) == list(label_with_backbone(module, SENTENCES, max_steps=4))


def test_finished_means_a_non_word_character_past_leading_space():
    """A continuation has ended its word once it holds a quote, a space after the word, or another non-word char."""
    assert not finished("") and not finished(" Mus") and not finished("Horse-")
    assert finished('Music"') and finished(" Music ") and finished("<s>") and finished("foo_")
    assert not finished("caf\ufffd") and finished('caf\ufffd"')
    with pytest.raises(ValueError, match="max_steps"):
        greedy_answers(None, [], max_steps=0)
