from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data"
"""Hand-written STS fixture in the shared data layout (sts12/test, stsb/dev(+senteval), sickr/trial)."""


def fixture_sentences() -> list[str]:
    """Return every sentence of the STS fixture files (used to train the tiny tokenizer)."""
    from sentence_transformers_tp.data import read_sts_tsv

    texts: list[str] = []
    for path in sorted(FIXTURE_DATA.glob("sts/*/*.tsv")):
        data = read_sts_tsv(path)
        texts.extend(data.sentence1 + data.sentence2)
    return texts


def build_tiny_sentence_transformer(directory: Path, texts: Sequence[str] | None = None):
    """Build a tiny random Llama ``SentenceTransformer`` (last-token pooling) saved under ``directory``.

    Args:
        directory: Folder where the backbone and tokenizer are written with ``save_pretrained``.
        texts: Sentences the word-level tokenizer is trained on (default: the STS fixture sentences).

    Returns:
        A ``SentenceTransformer`` with a ``Transformer`` and a last-token ``Pooling`` module, on CPU.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = list(texts) if texts is not None else fixture_sentences()
    corpus.append('This sentence : "" means in one word .')
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    transformer = Transformer(str(directory))
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


@pytest.fixture(scope="session")
def tiny_sentence_transformer(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random-weight Llama ``SentenceTransformer`` shared by the evaluation tests."""
    return build_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny-llama"))


class LookupModel:
    """Fake encoder returning fixed vectors from a table and recording every ``encode`` call."""

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        self.table = {k: np.asarray(v, dtype=np.float32) for k, v in table.items()}
        self.calls: list[list[str]] = []

    def encode(self, sentences: list[str], **kwargs) -> np.ndarray:
        self.calls.append(list(sentences))
        return np.stack([self.table[s] for s in sentences])


class BagOfCharsModel:
    """Fake deterministic encoder: counts of the letters a-z (case-insensitive); records every ``encode`` call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, sentences: list[str], **kwargs) -> np.ndarray:
        self.calls.append(list(sentences))
        out = np.zeros((len(sentences), 26), dtype=np.float32)
        for i, text in enumerate(sentences):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - ord("a")] += 1
        return out


def _write_tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header), *("\t".join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


FILLER = ["alma", "mona", "loan", "moan", "nolan", "llama"]
"""Filler words sharing no letter with the class signature words."""

SIGNATURES = {"ABBR": "bbb", "DESC": "ddd", "ENTY": "kkk", "HUM": "hhh", "LOC": "ccc", "NUM": "xxx"}
"""One signature word per TREC-like class; binary tasks use ``zzz`` (label 1) and ``qqq`` (label 0)."""


def _sentence(rng: np.random.Generator, signature: str) -> str:
    words = list(rng.choice(FILLER, size=int(rng.integers(2, 5))))
    words.insert(int(rng.integers(0, len(words) + 1)), signature)
    return " ".join(words) + ' " .'


def write_transfer_data(root: Path) -> Path:
    """Write a tiny, linearly separable SentEval-layout ``classification`` tree under ``root``.

    Binary tasks: label 1 sentences contain ``zzz``, label 0 ``qqq``. MR has 2 duplicated sentences. SST2's test
    split has 1 of 10 labels flipped (known accuracy 90), TREC's test 1 of 12 (known accuracy 11/12). MRPC: label 1
    pairs are word permutations of each other, label 0 pairs are unrelated sentences.

    Args:
        root: Data root to create.

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(0)
    cls = root / "classification"

    def binary(n: int) -> list[list[str]]:
        return [[_sentence(rng, "zzz" if i % 2 else "qqq"), str(i % 2)] for i in range(n)]

    mr = binary(40)
    mr += [mr[0], mr[1]]  # duplicated sentences (same labels)
    _write_tsv(cls / "mr" / "all.tsv", ["sentence", "label"], mr)
    for task in ("cr", "subj", "mpqa"):
        _write_tsv(cls / task / "all.tsv", ["sentence", "label"], binary(30))
    _write_tsv(cls / "sst2" / "train.tsv", ["sentence", "label"], binary(30))
    _write_tsv(cls / "sst2" / "dev.tsv", ["sentence", "label"], binary(10))
    test = binary(10)
    test[0][1] = "1" if test[0][1] == "0" else "0"
    _write_tsv(cls / "sst2" / "test.tsv", ["sentence", "label"], test)

    labels = list(SIGNATURES)
    trec_train = [[_sentence(rng, SIGNATURES[lab]), lab, f"{lab}:x"] for lab in labels for _ in range(6)]
    trec_test = [[_sentence(rng, SIGNATURES[lab]), lab, f"{lab}:x"] for lab in labels for _ in range(2)]
    trec_test[0][1] = "NUM"  # signature of ABBR, gold NUM: one error by construction
    _write_tsv(cls / "trec" / "train.tsv", ["sentence", "label", "fine_label"], trec_train)
    _write_tsv(cls / "trec" / "test.tsv", ["sentence", "label", "fine_label"], trec_test)

    def pairs(n: int) -> list[list[str]]:
        rows = []
        for i in range(n):
            first = _sentence(rng, str(rng.choice(["zzz", "qqq", "bbb", "kkk"])))
            if i % 2:
                words = first.split()
                second = " ".join(words[::-1])
            else:
                second = _sentence(rng, str(rng.choice(["hhh", "ccc", "xxx", "ddd"])))
            rows.append([first, second, str(i % 2)])
        return rows

    _write_tsv(cls / "mrpc" / "train.tsv", ["sentence1", "sentence2", "label"], pairs(40))
    _write_tsv(cls / "mrpc" / "test.tsv", ["sentence1", "sentence2", "label"], pairs(20))
    return root


@pytest.fixture(scope="session")
def transfer_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SentEval-layout transfer data root (see :func:`write_transfer_data`)."""
    return write_transfer_data(tmp_path_factory.mktemp("transfer-data"))
