"""The LM head of a backbone that was loaded without one (``AutoModel``): tied to the input embeddings, or read
from the checkpoint's safetensors.

sentence-transformers loads the backbone with ``AutoModel``, i.e. the decoder without its output projection. Most
small decoders tie the projection to the input embedding matrix (SmolLM2, Gemma-3-270M, Qwen2.5-0.5B), so it is
already loaded; untied ones (Llama-2/3, Mistral, and the Qwen2.5-Coder GGUF files, whose output projection is
quantized on its own) keep it as a separate tensor in the checkpoint, which is read here on its own, without loading
a second model. A converted GGUF checkpoint keeps it in its own file,
:data:`~sentence_transformers_tp.gguf_conversion.LM_HEAD_FILE`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from sentence_transformers_tp.gguf_conversion import LM_HEAD_FILE

__all__ = ["MissingLMHeadError", "head_is_tied", "logit_softcap", "output_embedding_key", "read_lm_head"]


class MissingLMHeadError(ValueError):
    """Raised when an untied backbone's checkpoint holds no LM head weight."""


def _text_config(config: Any) -> Any:
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def head_is_tied(model: nn.Module) -> bool:
    """Whether the backbone's LM head is its input embedding matrix (``tie_word_embeddings``).

    Args:
        model: The backbone (base model).

    Returns:
        True when tied.
    """
    config = model.config
    for candidate in (_text_config(config), config):
        value = getattr(candidate, "tie_word_embeddings", None)
        if value is not None:
            return bool(value)
    return False


def logit_softcap(model: nn.Module) -> float | None:
    """The final-logit soft-capping of the family (Gemma-2: 30.0), or None.

    Args:
        model: The backbone.

    Returns:
        The cap, or None for none.
    """
    value = getattr(_text_config(model.config), "final_logit_softcapping", None)
    return float(value) if value else None


def output_embedding_key(model: nn.Module) -> str:
    """The checkpoint key of the family's LM head weight (``lm_head.weight`` for most, ``embed_out.weight`` for
    GPT-NeoX), found by building the causal-LM class on the meta device (no memory, no weights).

    Args:
        model: The backbone.

    Returns:
        The key.
    """
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            causal = AutoModelForCausalLM.from_config(model.config)
    except Exception:  # an architecture without a causal-LM class: the usual name
        return "lm_head.weight"
    head = causal.get_output_embeddings()
    for name, module in causal.named_modules():
        if module is head:
            return f"{name}.weight"
    return "lm_head.weight"  # pragma: no cover - every causal LM names its head


def read_lm_head(checkpoint: str | os.PathLike, key: str = "lm_head.weight") -> torch.Tensor:
    """Read one tensor (the LM head weight) from a checkpoint's safetensors, single-file or sharded, or from the
    :data:`~sentence_transformers_tp.gguf_conversion.LM_HEAD_FILE` of a converted GGUF checkpoint.

    Args:
        checkpoint: A local checkpoint folder or a hub id (read from the local hub cache or the hub).
        key: The tensor name.

    Returns:
        The ``(vocab, hidden)`` weight.

    Raises:
        MissingLMHeadError: If the checkpoint has no safetensors or no such tensor.
    """
    from safetensors import safe_open

    checkpoint = str(checkpoint)
    index = _checkpoint_file(checkpoint, "model.safetensors.index.json")
    if index is not None:
        with open(index, encoding="utf-8") as handle:
            shard = json.load(handle).get("weight_map", {}).get(key)
        files = [_checkpoint_file(checkpoint, shard)] if shard else []
    else:
        files = [_checkpoint_file(checkpoint, "model.safetensors")]
    files.append(_checkpoint_file(checkpoint, LM_HEAD_FILE))
    for path in files:
        if path is None:
            continue
        with safe_open(path, framework="pt") as handle:
            if key in handle.keys():
                return handle.get_tensor(key)
    raise MissingLMHeadError(
        f"The backbone {checkpoint!r} does not tie its LM head to the input embeddings, and its checkpoint has no "
        f"{key!r} in safetensors (a checkpoint saved from AutoModel has no head). The sparse channel needs the LM head: "
        "use the original causal-LM checkpoint."
    )


def _checkpoint_file(checkpoint: str, filename: str) -> str | None:
    if os.path.isdir(checkpoint):
        path = os.path.join(checkpoint, filename)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    try:
        return cached_file(checkpoint, filename, _raise_exceptions_for_missing_entries=False)
    except OSError:
        return None
