"""sentence-transformers-tp: training-free sentence embeddings from decoder-only LLMs with Token Prepending.

The public names are imported lazily, so ``import sentence_transformers_tp`` stays cheap and submodules such as
``sentence_transformers_tp.templates`` can be used without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "TokenPrependingTransformer": "sentence_transformers_tp.module",
    "TokenPrependingModelCardData": "sentence_transformers_tp.model_card",
    "Centering": "sentence_transformers_tp.centering",
    "TEMPLATES": "sentence_transformers_tp.templates",
    "clean_sentence": "sentence_transformers_tp.templates",
    "resolve_backbone": "sentence_transformers_tp.backbones",
    "NAMED_BACKBONES": "sentence_transformers_tp.backbones",
    "BackboneNotInstalledError": "sentence_transformers_tp.gguf_conversion",
    "UnsupportedArchitectureError": "sentence_transformers_tp.prepending",
    "report_truncation": "sentence_transformers_tp.truncation",
    "build_sparse_model": "sentence_transformers_tp.sparse",
    "encode_dense_and_sparse": "sentence_transformers_tp.sparse",
    "PromptRepsTransformer": "sentence_transformers_tp.sparse",
    "PromptRepsSparse": "sentence_transformers_tp.sparse",
}

__all__ = [
    "__version__",
    "TokenPrependingTransformer",
    "TokenPrependingModelCardData",
    "Centering",
    "TEMPLATES",
    "clean_sentence",
    "resolve_backbone",
    "NAMED_BACKBONES",
    "BackboneNotInstalledError",
    "UnsupportedArchitectureError",
    "report_truncation",
    "build_sparse_model",
    "encode_dense_and_sparse",
    "PromptRepsTransformer",
    "PromptRepsSparse",
]

if TYPE_CHECKING:
    from sentence_transformers_tp.backbones import NAMED_BACKBONES, resolve_backbone
    from sentence_transformers_tp.centering import Centering
    from sentence_transformers_tp.gguf_conversion import BackboneNotInstalledError
    from sentence_transformers_tp.model_card import TokenPrependingModelCardData
    from sentence_transformers_tp.module import TokenPrependingTransformer
    from sentence_transformers_tp.prepending import UnsupportedArchitectureError
    from sentence_transformers_tp.sparse import (
        PromptRepsSparse,
        PromptRepsTransformer,
        build_sparse_model,
        encode_dense_and_sparse,
    )
    from sentence_transformers_tp.templates import TEMPLATES, clean_sentence
    from sentence_transformers_tp.truncation import report_truncation


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sentence_transformers_tp' has no attribute {name!r}")
