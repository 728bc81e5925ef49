"""Encoding for the dense and sparse channels, and the fingerprint that ties a saved index to its models.

* Dense: a ``SentenceTransformer`` (or any object with ``encode_query`` / ``encode_document``); embeddings are
  L2-normalised float32, so a dot product is the cosine similarity (MTEB's score for such models).
* Sparse: a sentence-transformers ``SparseEncoder`` (or any object whose ``encode_query`` / ``encode_document``
  return sparse torch tensors, dense tensors or arrays); vectors become scipy CSR matrices scored by dot product
  (``SparseEncoder``'s similarity).
* Joint: the dense embedding and the PromptReps sparse vector of a TP model from one forward
  (:func:`encode_joint`), for a retriever whose sparse channel is its dense model's own backbone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse

from sentence_transformers_tp.truncation import report_truncation


def _encode(
    model: Any,
    texts: Sequence[str],
    kind: str,
    batch_size: int,
    show_progress_bar: bool,
    encode_kwargs: Mapping[str, Any] | None,
    **extra: Any,
) -> Any:
    """Call ``encode_query`` / ``encode_document`` (one truncation report for the call) and return its output."""
    method = getattr(model, f"encode_{kind}", None)
    if not callable(method):
        raise TypeError(
            f"{type(model).__name__} has no encode_{kind}(); a channel model needs encode_query and encode_document"
        )
    with report_truncation():
        return method(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            **extra,
            **dict(encode_kwargs or {}),
        )


def _checked_rows(matrix: Any, kind: str, count: int) -> Any:
    """``matrix`` if it has one row per text, else a one-line error."""
    if matrix.shape[0] != count:
        raise ValueError(f"encode_{kind} returned {matrix.shape[0]} rows for {count} texts")
    return matrix


def normalize_rows(array: Any) -> np.ndarray:
    """L2-normalise the rows of a 2-D array (zero rows stay zero).

    Args:
        array: ``(n, dim)`` array-like.

    Returns:
        float32 array.
    """
    values = np.asarray(array, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D embedding array, got shape {values.shape}")
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.where(norms > 0, norms, 1.0)


def encode_dense(
    model: Any,
    texts: Sequence[str],
    kind: str,
    *,
    batch_size: int = 32,
    show_progress_bar: bool = False,
    encode_kwargs: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Encode texts with ``encode_query`` (``kind="query"``) or ``encode_document`` (``"document"``).

    Args:
        model: The dense model.
        texts: The texts.
        kind: ``"query"`` or ``"document"``.
        batch_size: Encode batch size.
        show_progress_bar: Show the encoder's progress bar.
        encode_kwargs: Further keyword arguments of the encode call.

    Returns:
        ``(len(texts), dim)`` unit-length float32 embeddings.
    """
    emb = _encode(model, texts, kind, batch_size, show_progress_bar, encode_kwargs, convert_to_numpy=True)
    return _checked_rows(normalize_rows(emb), kind, len(texts))


def to_csr(vectors: Any) -> scipy.sparse.csr_matrix:
    """Convert encoder output (a sparse or dense torch tensor, a list of 1-D tensors, an array) to float32 CSR.

    Args:
        vectors: ``(n, vocab)`` vectors.

    Returns:
        The CSR matrix.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        torch = None
    if isinstance(vectors, list | tuple):
        if not vectors:
            return scipy.sparse.csr_matrix((0, 0), dtype=np.float32)
        return scipy.sparse.vstack(
            [to_csr(v.unsqueeze(0) if hasattr(v, "unsqueeze") else [v]) for v in vectors]
        ).tocsr()
    if torch is not None and isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().to("cpu")
        if vectors.dim() == 1:
            vectors = vectors.unsqueeze(0)
        if vectors.is_sparse:
            coo = vectors.coalesce()
            rows, cols = coo.indices().numpy()
            values = coo.values().to(torch.float32).numpy()
            return scipy.sparse.csr_matrix((values, (rows, cols)), shape=tuple(coo.shape), dtype=np.float32)
        if vectors.layout == torch.sparse_csr:
            vectors = vectors.to_dense()
        return scipy.sparse.csr_matrix(vectors.to(torch.float32).numpy())
    if scipy.sparse.issparse(vectors):
        return scipy.sparse.csr_matrix(vectors, dtype=np.float32)
    return scipy.sparse.csr_matrix(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))


def encode_sparse(
    model: Any,
    texts: Sequence[str],
    kind: str,
    *,
    batch_size: int = 32,
    show_progress_bar: bool = False,
    encode_kwargs: Mapping[str, Any] | None = None,
) -> scipy.sparse.csr_matrix:
    """Encode texts with a ``SparseEncoder``'s ``encode_query`` / ``encode_document`` into a CSR matrix.

    Args:
        model: The sparse model.
        texts: The texts.
        kind: ``"query"`` or ``"document"``.
        batch_size: Encode batch size.
        show_progress_bar: Show the encoder's progress bar.
        encode_kwargs: Further keyword arguments of the encode call.

    Returns:
        ``(len(texts), vocab)`` float32 CSR matrix.
    """
    vectors = _encode(model, texts, kind, batch_size, show_progress_bar, encode_kwargs)
    return _checked_rows(to_csr(vectors), kind, len(texts))


def encode_joint(
    model: Any,
    texts: Sequence[str],
    kind: str,
    *,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> tuple[np.ndarray, scipy.sparse.csr_matrix]:
    """Dense embeddings and PromptReps sparse vectors of a TP model from ONE forward per batch.

    Uses :func:`sentence_transformers_tp.sparse.encode_dense_and_sparse`: the dense embedding is what
    ``encode_query`` / ``encode_document`` gives, the sparse vector the PromptReps vector of the same forward.

    Args:
        model: A ``SentenceTransformer`` whose first module is a ``TokenPrependingTransformer``.
        texts: The texts.
        kind: ``"query"`` or ``"document"``.
        batch_size: Texts per forward.
        show_progress_bar: Show a progress bar.

    Returns:
        ``(dense, sparse)``: unit-length float32 embeddings and a float32 CSR matrix.
    """
    # Imported here, not at the top: it loads torch and the TP module, which fusion and BM25 alone do not need.
    from sentence_transformers_tp.sparse import encode_dense_and_sparse

    with report_truncation():
        dense, sparse = encode_dense_and_sparse(
            model, list(texts), kind, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
    return normalize_rows(dense), to_csr(sparse)


VOLATILE_CONFIG_KEYS = frozenset({"embedding_dimension"})
"""Module config keys that change when a model first encodes (e.g. ``SpladePooling``'s vocabulary size)."""


def _module_description(model: Any) -> Any:
    """Per module: class and configuration (volatile keys left out); the repr for objects without modules."""
    try:
        modules = list(model.children()) if hasattr(model, "children") else None
    except TypeError:
        modules = None
    if not modules:
        return str(model)
    described = []
    for module in modules:
        config = module.get_config_dict() if callable(getattr(module, "get_config_dict", None)) else {}
        config = {key: value for key, value in dict(config).items() if key not in VOLATILE_CONFIG_KEYS}
        described.append([f"{type(module).__module__}.{type(module).__qualname__}", config])
    return described


def _weights_digest(model: Any) -> str | None:
    """A digest of the parameters (name, shape and sum of each), so two models of one architecture differ."""
    named = getattr(model, "named_parameters", None)
    if not callable(named):
        return None
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, parameter in named():
            total = float(parameter.detach().to(torch.float64).sum().item())
            digest.update(f"{name}:{tuple(parameter.shape)}:{total:.6e};".encode())
    return digest.hexdigest()


def model_fingerprint(model: Any) -> str:
    """A hash of what decides a model's embeddings: class, modules and their configuration, prompts, weights.

    The configuration of every module (template, TP layers, pooling, ...) and a digest of the parameters are
    included, so a saved index built with another model or other settings is refused instead of silently mixing
    embeddings; keys that a model fills in when it first encodes are left out, so the fingerprint of a model is the
    same before and after use.

    Args:
        model: A channel model.

    Returns:
        A short hex digest.
    """
    description = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "modules": _module_description(model),
        "prompts": getattr(model, "prompts", None),
        "max_seq_length": getattr(model, "max_seq_length", None),
        "similarity": str(getattr(model, "similarity_fn_name", None)),
        "weights": _weights_digest(model),
    }
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


__all__ = ["encode_dense", "encode_joint", "encode_sparse", "model_fingerprint", "normalize_rows", "to_csr"]
