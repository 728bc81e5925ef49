"""Centering / whitening module: reference equality, save/load, refit, dimension, card, sentence readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import Centering, TokenPrependingTransformer
from sentence_transformers_tp.centering import fit, read_sentences

from .conftest import run_in_threads

NOUNS = ["man", "woman", "dog", "cat", "child", "bird", "horse", "chef", "pilot", "farmer"]
VERBS = [
    "runs",
    "sleeps",
    "eats an apple",
    "plays a guitar",
    "reads a book",
    "swims",
    "jumps",
    "sings",
    "cooks",
    "waits",
]
#: 100 distinct sentences: more than the tiny backbones' 32 dimensions, so the covariance has full rank.
FIT_SENTENCES = [f"A {noun} {verb}." for noun in NOUNS for verb in VERBS]
OTHER_SENTENCES = ["The weather is lovely today.", "Two men are playing chess.", "A plane is taking off.", "Hi"]


def build(path, **kwargs) -> SentenceTransformer:
    """A SentenceTransformer with only a TP module on a tiny backbone."""
    kwargs = {"tp_start": 1, "tp_exit": 3, "output_layer": 3, **kwargs}
    return SentenceTransformer(modules=[TokenPrependingTransformer(str(path), **kwargs)])


@pytest.fixture(scope="module")
def raw_fit(tiny_llama):
    """The tiny Llama TP model's embeddings of FIT_SENTENCES and OTHER_SENTENCES, without any centering."""
    model = build(tiny_llama)
    return model.encode(FIT_SENTENCES), model.encode(OTHER_SENTENCES)


def su_whitening(vecs: np.ndarray, n_components: int | None, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Su et al. 2021 (compute_kernel_bias) in plain numpy, with the relative eps: returns (W, mu)."""
    mu = vecs.astype(np.float64).mean(axis=0, keepdims=True)
    cov = np.cov(vecs.astype(np.float64).T)
    u, s, _ = np.linalg.svd(cov)
    w = np.dot(u, np.diag(1 / np.sqrt(s + eps * s[0])))
    return w[:, :n_components], mu


def align_signs(reference: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Flip reference columns to the sign of the actual ones (SVD components are defined up to sign)."""
    return reference * np.sign((reference * actual).sum(axis=0))


def test_centering_equals_numpy_reference(tiny_llama, raw_fit):
    """Centered embeddings equal the raw embeddings minus the numpy mean of the fit embeddings."""
    raw, other = raw_fit
    model = fit(build(tiny_llama), FIT_SENTENCES, mode="center")
    mean = raw.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(model.encode(OTHER_SENTENCES), other - mean, atol=1e-5, rtol=0)
    np.testing.assert_allclose(model.encode(FIT_SENTENCES).mean(axis=0), 0, atol=1e-5)
    assert model[-1].n_fit_sentences == len(FIT_SENTENCES)


@pytest.mark.parametrize("n_components", [None, 8])
def test_whitening_identity_covariance_and_numpy_svd(tiny_llama, raw_fit, n_components):
    """Whitened fit embeddings have identity covariance and equal Su et al.'s numpy SVD computation."""
    raw, other = raw_fit
    model = fit(build(tiny_llama), FIT_SENTENCES, mode="whiten", n_components=n_components)
    whitened = model.encode(FIT_SENTENCES)
    k = n_components or raw.shape[1]
    assert whitened.shape == (len(FIT_SENTENCES), k)
    np.testing.assert_allclose(np.cov(whitened.T), np.eye(k), atol=1e-3)
    w, mu = su_whitening(raw, n_components, model[-1].eps)
    reference = align_signs((raw - mu) @ w, whitened)
    scale = np.abs(reference).max()
    np.testing.assert_allclose(whitened, reference, atol=1e-5 * scale, rtol=0)
    signs = np.sign((((raw - mu) @ w) * whitened).sum(axis=0))
    np.testing.assert_allclose(model.encode(OTHER_SENTENCES), ((other - mu) @ w) * signs, atol=1e-5 * scale)


def test_save_load_round_trip_identical(tiny_llama, tmp_path):
    """A saved model with a whitening module loads back (trust_remote_code) and gives identical vectors."""
    model = fit(build(tiny_llama), FIT_SENTENCES, mode="whiten", n_components=8)
    model.save(str(tmp_path / "saved"))
    entries = json.loads((tmp_path / "saved" / "modules.json").read_text())
    assert entries[-1]["type"] == "sentence_transformers_tp.centering.Centering"
    folder = tmp_path / "saved" / entries[-1]["path"]
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder / "config.json").read_text())["n_components"] == 8
    loaded = SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True)
    assert isinstance(loaded[-1], Centering) and loaded[-1].mode == "whiten"
    np.testing.assert_array_equal(loaded.encode(OTHER_SENTENCES), model.encode(OTHER_SENTENCES))
    assert loaded.get_embedding_dimension() == 8


def test_refit_replaces_rather_than_stacks(tiny_llama):
    """Fitting a model that ends with Centering replaces it, fitted on the embeddings before it."""
    model = fit(build(tiny_llama), FIT_SENTENCES[:50], mode="center")
    fit(model, FIT_SENTENCES, mode="whiten", n_components=8)
    assert len(model) == 2 and model[-1].mode == "whiten"
    fresh = fit(build(tiny_llama), FIT_SENTENCES, mode="whiten", n_components=8)
    np.testing.assert_allclose(model.encode(OTHER_SENTENCES), fresh.encode(OTHER_SENTENCES), atol=1e-5)
    fit(model, FIT_SENTENCES, mode="center")
    assert len(model) == 2 and model.get_embedding_dimension() == 32


def test_centering_elsewhere_than_the_end_is_refused(tiny_llama):
    """fit() refuses a model whose Centering module is not its last module."""
    from sentence_transformers.base.modules import Normalize

    model = fit(build(tiny_llama), FIT_SENTENCES[:10])
    model.append(Normalize())
    with pytest.raises(ValueError, match="only at the end"):
        fit(model, FIT_SENTENCES[:10])


def test_unfitted_module_raises_clear_error(tiny_llama):
    """An unfitted module raises on forward, naming how to fit it; its dimension defers to the TP module."""
    model = build(tiny_llama)
    model.append(Centering())
    assert model.get_embedding_dimension() == 32
    with pytest.raises(RuntimeError, match="no statistics yet.*fit"):
        model.encode(["A sentence."])


def test_dimension_with_n_components(tiny_llama, raw_fit):
    """get_embedding_dimension is n_components for whitening with n_components, else the backbone's width."""
    for mode, n_components, expected in [("center", None, 32), ("whiten", None, 32), ("whiten", 5, 5)]:
        module = Centering.from_embeddings(raw_fit[0], mode=mode, n_components=n_components)
        model = build(tiny_llama)
        model.append(module)
        assert model.get_embedding_dimension() == expected
        assert model.encode(OTHER_SENTENCES).shape == (len(OTHER_SENTENCES), expected)


def test_invalid_settings_are_refused(tiny_llama, raw_fit):
    """Bad modes, n_components and inputs fail with a clear ValueError, before any encoding."""
    with pytest.raises(ValueError, match="mode"):
        Centering(mode="pca")
    with pytest.raises(ValueError, match="applies to mode='whiten' only"):
        Centering(mode="center", n_components=4)
    with pytest.raises(ValueError, match="exceeds the embedding dimension"):
        fit(build(tiny_llama), FIT_SENTENCES, mode="whiten", n_components=64)
    with pytest.raises(ValueError, match="at least one"):
        fit(build(tiny_llama), [])
    with pytest.raises(ValueError, match="non-finite"):
        Centering.from_embeddings(np.full((3, 4), np.nan))
    with pytest.raises(ValueError, match="without any variance"):
        Centering.from_embeddings(np.ones((5, 4)), mode="whiten")
    module = Centering.from_embeddings(raw_fit[0][:, :16])
    with pytest.raises(ValueError, match="16-dimensional"):
        module({"sentence_embedding": torch.zeros(2, 32)})


def test_encode_query_and_document_are_centered(tiny_llama):
    """encode_query / encode_document (with their own templates) go through the module too."""
    model = build(tiny_llama, query_template="knowledge", document_template="pretended_cot")
    fit(model, FIT_SENTENCES, mode="center")
    mean = model[-1].mean.numpy()
    for encode in (model.encode_query, model.encode_document):
        raw = encode(OTHER_SENTENCES, skip_centering=True)
        np.testing.assert_allclose(encode(OTHER_SENTENCES), raw - mean, atol=1e-6)
    assert not np.allclose(model.encode_query(OTHER_SENTENCES), model.encode_document(OTHER_SENTENCES))


def test_batch_invariant_and_thread_safe(tiny_llama):
    """Whitened embeddings do not depend on the batch size or on concurrent calls."""
    model = fit(build(tiny_llama), FIT_SENTENCES, mode="whiten", n_components=16)
    reference = model.encode(OTHER_SENTENCES, batch_size=len(OTHER_SENTENCES))
    np.testing.assert_allclose(model.encode(OTHER_SENTENCES, batch_size=1), reference, atol=1e-5)
    results = run_in_threads(lambda i: model.encode(OTHER_SENTENCES[i % 2 :], batch_size=2), count=4)
    for i, result in enumerate(results):
        np.testing.assert_allclose(result, reference[i % 2 :], atol=1e-5)


def test_forward_keeps_dtype_and_statistics_precision(raw_fit):
    """Outputs keep the input dtype; the float64 statistics survive module.half() unrounded."""
    module = Centering.from_embeddings(raw_fit[0], mode="whiten", n_components=4)
    mean, weight = module.mean.clone(), module.weight.clone()
    x = torch.from_numpy(raw_fit[1])
    expected = module({"sentence_embedding": x.clone()})["sentence_embedding"]
    assert expected.dtype == torch.float32
    module.half()
    assert module.mean.dtype == torch.float64 and torch.equal(module.mean, mean) and torch.equal(module.weight, weight)
    for dtype in (torch.bfloat16, torch.float16):
        out = module({"sentence_embedding": x.to(dtype)})["sentence_embedding"]
        assert out.dtype == dtype and out.device == x.device and out.shape == (len(x), 4)
    out = module({"sentence_embedding": x.clone()})["sentence_embedding"]
    assert out.dtype == torch.float32 and torch.equal(out, expected)


def test_model_card_mentions_centering(tiny_llama, tmp_path):
    """The saved model card names the centering step; a model without one does not mention it."""
    model = fit(build(tiny_llama), FIT_SENTENCES, mode="whiten", n_components=8)
    model.save(str(tmp_path / "with"))
    card = (tmp_path / "with" / "README.md").read_text(encoding="utf-8")
    assert "**Post-processing:** whitening" in card and "top 8 of 32" in card
    build(tiny_llama).save(str(tmp_path / "without"))
    assert "Post-processing" not in (tmp_path / "without" / "README.md").read_text(encoding="utf-8")


def test_read_sentences_text_tsv_and_split(tmp_path):
    """Text files give their non-blank lines, STS TSVs and TASK:SPLIT both sentence columns, deduplicated."""
    text = tmp_path / "s.txt"
    text.write_text("one\n\n  two  \none\nthree\n", encoding="utf-8")
    assert read_sentences(text) == ["one", "two", "three"]
    folder = tmp_path / "data" / "sts" / "stsb"
    folder.mkdir(parents=True)
    rows = ["sentence1\tsentence2\tscore", "A b.\tC d.\t1.0", "E f.\tA b.\t2.0", 'G "h".\tI j.\t3.0']
    (folder / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    expected = ["A b.", "C d.", "E f.", 'G "h".', "I j."]
    assert read_sentences(folder / "train.tsv") == expected
    assert read_sentences("stsb:train", data_dir=tmp_path / "data") == expected
    sample = read_sentences("stsb:train", data_dir=tmp_path / "data", max_sentences=3, seed=1)
    assert len(sample) == 3 and sample == [s for s in expected if s in sample]
    assert sample == read_sentences("stsb:train", data_dir=tmp_path / "data", max_sentences=3, seed=1)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_sentences(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="data directory"):
        read_sentences("stsb:train")
    with pytest.raises(FileNotFoundError, match="no split 'dev'"):
        read_sentences("stsb:dev", data_dir=tmp_path / "data")
