"""Small deterministic channel models for the hybrid retrieval tests (no network, no real LLM)."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

DIM = 64


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _bucket(word: str) -> int:
    return zlib.crc32(word.encode("utf-8")) % DIM


class WordHashModel:
    """Fake dense model: hashed bag of words (``DIM`` buckets); records every encode call as ``(kind, texts)``."""

    def __init__(self, name: str = "word-hash") -> None:
        self.name = name
        self.calls: list[tuple[str, list[str]]] = []

    def __repr__(self) -> str:
        return f"WordHashModel({self.name!r})"

    def _encode(self, kind: str, texts: Sequence[str]) -> np.ndarray:
        self.calls.append((kind, list(texts)))
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _words(text):
                out[row, _bucket(word)] += 1.0
            out[row, DIM - 1] += 0.5  # no all-zero rows
        return out

    def encode_query(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        return self._encode("query", texts)

    def encode_document(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        return self._encode("document", texts)


class WordSparseModel:
    """Fake ``SparseEncoder``: sparse COO tensors of word counts over ``DIM`` hashed buckets; records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def __repr__(self) -> str:
        return "WordSparseModel()"

    def _encode(self, kind: str, texts: Sequence[str]) -> torch.Tensor:
        self.calls.append((kind, list(texts)))
        dense = torch.zeros(len(texts), DIM)
        for row, text in enumerate(texts):
            for word in _words(text):
                dense[row, _bucket(word)] += 1.0
        return dense.to_sparse()

    def encode_query(self, texts: Sequence[str], **kwargs) -> torch.Tensor:
        return self._encode("query", texts)

    def encode_document(self, texts: Sequence[str], **kwargs) -> torch.Tensor:
        return self._encode("document", texts)


def build_tiny_sparse_encoder(directory: Path, texts: Sequence[str]):
    """A real sentence-transformers ``SparseEncoder`` (tiny random BERT fill-mask + SPLADE max pooling).

    Args:
        directory: Where the backbone and tokenizer are saved.
        texts: Sentences the word-level tokenizer is trained on.

    Returns:
        The ``SparseEncoder`` on CPU.
    """
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend.train_from_iterator(list(texts), trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=128,
    )
    BertForMaskedLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    transformer = Transformer(str(directory), transformer_task="fill-mask")
    return SparseEncoder(modules=[transformer, SpladePooling("max")], device="cpu")


CORPUS = {
    "d1": "A man is playing a guitar on the stage.",
    "d2": "Someone plays an instrument in the park.",
    "d3": "A woman is slicing an onion in the kitchen.",
    "d4": "The chef cuts vegetables for the soup.",
    "d5": "A dog runs across the green park.",
    "d6": "Cats sleep on the warm sofa all day.",
}
QUERIES = ["who is playing the guitar", "cutting onions in a kitchen", "a dog in the park", "zzz unknown"]
