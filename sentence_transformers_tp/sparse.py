"""The sparse (PromptReps) channel: a lexical vocabulary vector from the same forward as the dense embedding.

PromptReps (Zhuang et al., EMNLP 2024) reads, at the last prompt position, the next-token logits of the LM head
applied to the final-layer state (``hidden_states[-1]``, the final normed output), takes ``log(1 + relu(logits))``
and keeps only the ids of the input text's own words (:mod:`sentence_transformers_tp.word_ids`), at most ``top_k``
(default 128) of them, the largest. The prompt is the one of the dense embedding: every template of the package
ends on an opening quote after a "in one word" instruction, as PromptReps' prompts do (they also differ between
queries, ``Query: ... represent the query``, and passages, ``Passage: ... represent the passage``: the built-in
``retrieval_query`` / ``retrieval_document`` templates).

Pieces:

- :class:`PromptRepsTransformer`: a :class:`~sentence_transformers_tp.module.TokenPrependingTransformer` that also
  returns the final-layer state (``final_layer_embedding``) and the text's word ids (``sparse_token_ids``) next to
  the dense ``sentence_embedding``, captured in the same forward.
- :class:`PromptRepsSparse`: the module after it, which turns them into the sparse vocabulary-sized
  ``sentence_embedding`` (a ``SparseEncoder`` output). Tied backbones reuse the input embedding matrix; untied ones
  carry the LM head weight read from the checkpoint (and save it with the model).
- :func:`build_sparse_model`: the ``SparseEncoder`` of both.
- :func:`encode_dense_and_sparse`: dense embeddings and sparse vectors of a list of texts from ONE forward per
  batch, for a dense ``SentenceTransformer`` of the package or a sparse model of :func:`build_sparse_model`.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer, SparseEncoder
from sentence_transformers.base.modules import Module
from sentence_transformers.util import batch_to_device
from tqdm.auto import tqdm

from sentence_transformers_tp.inputs import check_texts
from sentence_transformers_tp.lm_head import head_is_tied, logit_softcap, output_embedding_key, read_lm_head
from sentence_transformers_tp.model_card import MODEL_NAME_PREFIX
from sentence_transformers_tp.module import TokenPrependingTransformer
from sentence_transformers_tp.sparse_model_card import install_sparse_model_card_data
from sentence_transformers_tp.word_ids import WordTokenIds

__all__ = [
    "DEFAULT_TOP_K",
    "FINAL_STATE_KEY",
    "TOKEN_IDS_KEY",
    "PromptRepsSparse",
    "PromptRepsTransformer",
    "build_sparse_model",
    "encode_dense_and_sparse",
    "sparse_to_dicts",
]

#: Tokens kept per sparse vector by default (PromptReps: 128).
DEFAULT_TOP_K = 128
#: Tokens of the whole vocabulary kept when a text has no usable word (PromptReps: 10).
DEFAULT_FALLBACK_TOP_K = 10
#: Feature holding the final-layer state at the last position, ``(batch, hidden)``.
FINAL_STATE_KEY = "final_layer_embedding"
#: Feature holding the vocabulary ids of each text's words, ``(batch, n)`` padded with -1.
TOKEN_IDS_KEY = "sparse_token_ids"

_WORD_IDS: weakref.WeakKeyDictionary[TokenPrependingTransformer, WordTokenIds] = weakref.WeakKeyDictionary()
_HEADS: weakref.WeakKeyDictionary[TokenPrependingTransformer, PromptRepsSparse] = weakref.WeakKeyDictionary()


def word_token_ids(module: TokenPrependingTransformer) -> WordTokenIds:
    """The word-id restriction of a TP module's tokenizer (built once per module; the placeholder is excluded).

    Args:
        module: The TP module.

    Returns:
        The :class:`~sentence_transformers_tp.word_ids.WordTokenIds`.
    """
    table = _WORD_IDS.get(module)
    if table is None or table.tokenizer is not module.tokenizer:
        table = _WORD_IDS[module] = WordTokenIds(module.tokenizer, exclude=[module.placeholder_id])
    return table


def dense_and_final(module: TokenPrependingTransformer, features: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense embedding (at the output layer, or the task's, averaged over its ``layer_span``) and the final-layer
    state of a preprocessed batch, all captured in one forward (:meth:`TokenPrependingTransformer.embed` with the
    span's layers and the final one).

    Args:
        module: The TP module.
        features: Its preprocessed features, on the model's device.

    Returns:
        ``(dense, final)``, each ``(batch, hidden)`` float32.
    """
    states = module.embed(features, layers=[*module.span_layers(features), -1])
    return states[:, :-1].mean(1), states[:, -1]


class PromptRepsTransformer(TokenPrependingTransformer):
    """A :class:`~sentence_transformers_tp.module.TokenPrependingTransformer` whose forward also returns what the
    PromptReps sparse vector needs, from the same forward.

    Everything else (templates, TP, task settings, truncation, prefix cache, saving) is the parent's. The forward
    captures the output layer and the final layer together (so it runs the whole decoder, also when the output
    layer is an earlier one). Features added: ``sparse_token_ids`` by :meth:`preprocess` (the ids of each input's
    words, see :mod:`sentence_transformers_tp.word_ids`) and ``final_layer_embedding`` by :meth:`forward`; the
    dense embedding stays in ``sentence_embedding`` until :class:`PromptRepsSparse` replaces it with the sparse
    vector and moves it to ``dense_embedding``.

    Args:
        *args: See :class:`~sentence_transformers_tp.module.TokenPrependingTransformer`.
        **kwargs: See :class:`~sentence_transformers_tp.module.TokenPrependingTransformer`.
    """

    def preprocess(
        self, inputs: Sequence[str], prompt: str | None = None, task: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The parent's features plus ``sparse_token_ids``.

        Args:
            inputs: The texts.
            prompt: See :meth:`TokenPrependingTransformer.preprocess`.
            task: See :meth:`TokenPrependingTransformer.preprocess`.
            **kwargs: See :meth:`TokenPrependingTransformer.preprocess`.

        Returns:
            The features.
        """
        features = super().preprocess(inputs, prompt, task, **kwargs)
        features[TOKEN_IDS_KEY] = word_token_ids(self).padded(list(inputs))
        return features

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Dense ``sentence_embedding`` and ``final_layer_embedding`` from one forward.

        Args:
            features: The output of :meth:`preprocess`.
            **kwargs: Ignored.

        Returns:
            ``features`` with both.
        """
        features["sentence_embedding"], features[FINAL_STATE_KEY] = dense_and_final(self, features)
        return features

    def on_model_ready(self, model: Any) -> None:
        """The parent's setup; a ``SparseEncoder`` also gets the PromptReps model card (usage with
        ``trust_remote_code=True``) and a unique model name (for MTEB result folders).

        Args:
            model: The owning model.
        """
        super().on_model_ready(model)
        if isinstance(model, SparseEncoder):
            install_sparse_model_card_data(model, f"{MODEL_NAME_PREFIX}/{self.model_slug()}-promptreps")

    def __repr__(self) -> str:
        return type(self).__name__ + super().__repr__()[len("TokenPrependingTransformer") :]


class PromptRepsSparse(Module):
    """The PromptReps sparse head: LM head on the final-layer state, ``log(1 + relu(logits))``, restricted to the
    text's word ids, top-k.

    It follows a :class:`PromptRepsTransformer` in a ``SparseEncoder`` and writes the vocabulary-sized
    ``sentence_embedding`` (all zeros except at most ``top_k`` word ids); the dense embedding moves to
    ``dense_embedding``. A text without any usable word (empty, only stopwords or punctuation) keeps the
    ``fallback_top_k`` largest weights of the whole vocabulary, as PromptReps does.

    Args:
        vocab_size: Rows of the LM head (the backbone's embedding rows, the output dimension).
        hidden_size: Hidden size of the backbone.
        top_k: Tokens kept per vector. Defaults to 128.
        tied: Whether the head is the backbone's input embedding matrix (set when the model is ready); otherwise
            the module holds the weight. Defaults to True.
        fallback_top_k: Tokens kept for a text without words. Defaults to 10.
        logit_softcapping: Final-logit soft-capping of the family (Gemma-2), or None.
    """

    config_keys: list[str] = ["vocab_size", "hidden_size", "top_k", "tied", "fallback_top_k", "logit_softcapping"]

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        top_k: int = DEFAULT_TOP_K,
        tied: bool = True,
        fallback_top_k: int = DEFAULT_FALLBACK_TOP_K,
        logit_softcapping: float | None = None,
    ) -> None:
        super().__init__()
        _check_top_k(top_k, "top_k")
        if isinstance(fallback_top_k, bool) or not isinstance(fallback_top_k, int) or fallback_top_k < 0:
            raise ValueError(f"fallback_top_k must be a non-negative integer, got {fallback_top_k!r}.")
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.top_k = top_k
        self.tied = bool(tied)
        self.fallback_top_k = fallback_top_k
        self.logit_softcapping = logit_softcapping
        if not self.tied:
            self.weight = torch.nn.Parameter(torch.zeros(self.vocab_size, self.hidden_size), requires_grad=False)
        self.__dict__["_embeddings"] = None

    @classmethod
    def from_module(
        cls,
        module: TokenPrependingTransformer,
        top_k: int = DEFAULT_TOP_K,
        fallback_top_k: int = DEFAULT_FALLBACK_TOP_K,
    ) -> PromptRepsSparse:
        """The head of a TP module's backbone: its input embeddings when tied, else the LM head weight read from
        its checkpoint's safetensors.

        Args:
            module: The TP module.
            top_k: Tokens kept per vector.
            fallback_top_k: Tokens kept for a text without words.

        Returns:
            The head.

        Raises:
            MissingLMHeadError: For an untied backbone whose checkpoint has no LM head weight.
        """
        backbone = module.model
        embeddings = backbone.get_input_embeddings()
        vocab_size, hidden_size = embeddings.weight.shape
        tied = head_is_tied(backbone)
        head = cls(vocab_size, hidden_size, top_k, tied, fallback_top_k, logit_softcap(backbone))
        if tied:
            head.tie_to(module)
            return head
        checkpoint = getattr(backbone, "name_or_path", None) or backbone.config._name_or_path
        weight = read_lm_head(checkpoint, output_embedding_key(backbone))
        rows = min(weight.shape[0], vocab_size)
        if weight.shape[1] != hidden_size:
            raise ValueError(
                f"The LM head of {checkpoint!r} has hidden size {weight.shape[1]}, the backbone {hidden_size}."
            )
        with torch.no_grad():
            # Rows the checkpoint lacks (the TP placeholder added to the vocabulary) stay zero: never a word id.
            head.weight[:rows] = weight[:rows].to(head.weight.dtype)
        head.to(embeddings.weight.device)
        return head

    def tie_to(self, module: TokenPrependingTransformer) -> None:
        """Use the input embedding matrix of ``module``'s backbone as the head (tied backbones).

        Args:
            module: The TP module.
        """
        embeddings = module.model.get_input_embeddings()
        if tuple(embeddings.weight.shape) != (self.vocab_size, self.hidden_size):
            raise ValueError(
                f"The backbone's embeddings are {tuple(embeddings.weight.shape)}, the sparse head expects "
                f"{(self.vocab_size, self.hidden_size)}."
            )
        # A plain attribute, not a submodule: the weights belong to (and are saved with) the TP module.
        self.__dict__["_embeddings"] = embeddings

    def on_model_ready(self, model: Any) -> None:
        """Tie to the first module's input embeddings (tied backbones).

        Args:
            model: The owning model.
        """
        first = model[0] if len(model) else None
        if self.tied and isinstance(first, TokenPrependingTransformer):
            self.tie_to(first)

    def head_weight(self) -> torch.Tensor:
        """The ``(vocab_size, hidden_size)`` LM head weight."""
        if not self.tied:
            return self.weight
        embeddings = self.__dict__.get("_embeddings")
        if embeddings is None:
            raise RuntimeError(
                "This tied PromptRepsSparse head is not attached to a backbone: put it after a PromptRepsTransformer "
                "in a SparseEncoder, or build it with PromptRepsSparse.from_module(module)."
            )
        return embeddings.weight

    def weights(self, final_states: torch.Tensor) -> torch.Tensor:
        """``log(1 + relu(logits))`` over the whole vocabulary.

        Args:
            final_states: ``(batch, hidden)`` final-layer states at the last position.

        Returns:
            ``(batch, vocab_size)`` float32 weights.
        """
        weight = self.head_weight()
        logits = (final_states.to(device=weight.device, dtype=weight.dtype) @ weight.T).float()
        if self.logit_softcapping:
            logits = torch.tanh(logits / self.logit_softcapping) * self.logit_softcapping
        return torch.log1p(torch.relu(logits))

    def select(
        self, final_states: torch.Tensor, token_ids: torch.Tensor, top_k: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The non-zero entries of the sparse vectors of a batch.

        Args:
            final_states: ``(batch, hidden)`` final-layer states.
            token_ids: ``(batch, n)`` word ids per row, padded with -1.
            top_k: Tokens kept per row (default: the module's).

        Returns:
            ``(rows, token_ids, weights)``: three 1-D tensors of the same length.
        """
        top_k = self.top_k if top_k is None else top_k
        _check_top_k(top_k, "top_k")
        weights = self.weights(final_states)
        token_ids = token_ids.to(weights.device)
        batch = weights.shape[0]
        valid = token_ids >= 0
        has_words = (
            valid.any(dim=1) if token_ids.shape[1] else torch.zeros(batch, dtype=torch.bool, device=weights.device)
        )
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        if bool(has_words.any()):
            safe = token_ids.clamp(min=0)
            candidates = weights.gather(1, safe).masked_fill(~valid, -1.0)
            values, positions = candidates.topk(min(top_k, token_ids.shape[1]), dim=1)
            columns = safe.gather(1, positions)
            parts.append((torch.arange(batch, device=weights.device).unsqueeze(1).expand_as(columns), columns, values))
        empty = (~has_words).nonzero().squeeze(1)
        if empty.numel() and self.fallback_top_k:
            values, columns = weights[empty].topk(min(self.fallback_top_k, weights.shape[1]), dim=1)
            parts.append((empty.unsqueeze(1).expand_as(columns), columns, values))
        if not parts:
            empty_long = torch.zeros(0, dtype=torch.long, device=weights.device)
            return empty_long, empty_long, torch.zeros(0, device=weights.device)
        rows = torch.cat([p[0].reshape(-1) for p in parts])
        columns = torch.cat([p[1].reshape(-1) for p in parts])
        values = torch.cat([p[2].reshape(-1) for p in parts])
        keep = values > 0
        return rows[keep], columns[keep], values[keep]

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Replace the dense ``sentence_embedding`` by the sparse vector (kept as ``dense_embedding``).

        Args:
            features: Features from :class:`PromptRepsTransformer`.
            **kwargs: Ignored.

        Returns:
            ``features`` with a ``(batch, vocab_size)`` ``sentence_embedding``.
        """
        if FINAL_STATE_KEY not in features or TOKEN_IDS_KEY not in features:
            raise ValueError(
                "PromptRepsSparse needs the features of a PromptRepsTransformer (final_layer_embedding and "
                "sparse_token_ids); put it right after one."
            )
        final = features[FINAL_STATE_KEY]
        rows, columns, values = self.select(final, features[TOKEN_IDS_KEY])
        sparse = torch.zeros((final.shape[0], self.vocab_size), dtype=torch.float32, device=final.device)
        sparse[rows, columns] = values
        features["dense_embedding"] = features.get("sentence_embedding")
        features["sentence_embedding"] = sparse
        return features

    def get_embedding_dimension(self) -> int:
        """The vocabulary size."""
        return self.vocab_size

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Save the config, and the LM head weight of an untied backbone.

        Args:
            output_path: The module folder.
            *args: Ignored.
            safe_serialization: Save as safetensors. Defaults to True.
            **kwargs: Ignored.
        """
        self.save_config(output_path)
        if not self.tied:
            self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> PromptRepsSparse:
        """Load a saved head (tied heads attach to the backbone when the model is ready).

        Args:
            model_name_or_path: The saved model.
            subfolder: The module folder.
            token: Hub token.
            cache_folder: Hub cache folder.
            revision: Hub revision.
            local_files_only: Do not use the network.
            **kwargs: Ignored.

        Returns:
            The head.
        """
        hub = {
            "subfolder": subfolder,
            "token": token,
            "cache_folder": cache_folder,
            "revision": revision,
            "local_files_only": local_files_only,
        }
        head = cls(**cls.load_config(model_name_or_path, **hub))
        if not head.tied:
            head = cls.load_torch_weights(model_name_or_path, model=head, **hub)
        return head

    def __repr__(self) -> str:
        return f"PromptRepsSparse({self.get_config_dict()})"


def _check_top_k(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def build_sparse_model(
    backbone: str | None = None,
    template: str | Sequence[str] | None = None,
    *,
    top_k: int = DEFAULT_TOP_K,
    preset: str | None = None,
    device: str | None = None,
    **module_kwargs: Any,
) -> SparseEncoder:
    """A ``SparseEncoder`` giving PromptReps sparse vectors: :class:`PromptRepsTransformer` + :class:`PromptRepsSparse`.

    The module takes the same settings as :class:`~sentence_transformers_tp.module.TokenPrependingTransformer`
    (by default the backbone preset's, including its retrieval ``task_settings``), so the sparse vector comes from
    the same prompt and forward as the dense embedding of the same settings. Similarity is the dot product.

    Args:
        backbone: Hub id, local checkpoint, ``.gguf`` file or named offline backbone. Defaults to the preset's
            backbone, or ``"smollm2"``.
        template: A template spec (default: the preset's settings). The PromptReps wording is ``template=
            "prompteol", query_template="retrieval_query", document_template="retrieval_document"``.
        top_k: Tokens kept per vector. Defaults to 128.
        preset: A preset name or YAML path.
        device: Device for the model.
        **module_kwargs: Further module arguments (``tp_start``, ``output_layer``, ``max_seq_length``...).

    Returns:
        The model (save it with ``save``; load it with ``SparseEncoder(path, trust_remote_code=True)``).
    """
    _check_top_k(top_k, "top_k")
    module_kwargs = {key: value for key, value in module_kwargs.items() if value is not None}
    if preset is not None:
        if backbone is not None:
            module_kwargs["model_name_or_path"] = backbone
        module = PromptRepsTransformer.from_preset(preset, template, **module_kwargs)
    else:
        module = PromptRepsTransformer(backbone or "smollm2", template, **module_kwargs)
    head = PromptRepsSparse.from_module(module, top_k=top_k)
    return SparseEncoder(modules=[module, head], device=device, similarity_fn_name="dot")


def sparse_head(model: SentenceTransformer | SparseEncoder) -> PromptRepsSparse:
    """The sparse head of a model: its :class:`PromptRepsSparse` module, or (for a dense model) one built once for
    its TP module's backbone.

    Args:
        model: A model whose first module is a TP module.

    Returns:
        The head.
    """
    module = _tp_module(model)
    for child in model:
        if isinstance(child, PromptRepsSparse):
            return child
    head = _HEADS.get(module)
    if head is None:
        head = _HEADS[module] = PromptRepsSparse.from_module(module)
    return head


def _tp_module(model: Any) -> TokenPrependingTransformer:
    first = model[0] if isinstance(model, (SentenceTransformer, SparseEncoder)) and len(model) else None
    if not isinstance(first, TokenPrependingTransformer):
        raise ValueError(
            "encode_dense_and_sparse needs a SentenceTransformer or SparseEncoder whose first module is a "
            f"TokenPrependingTransformer, got {type(model).__name__}"
            + (f" starting with {type(first).__name__}." if first is not None else ".")
        )
    return first


def _task_prompt(model: SentenceTransformer | SparseEncoder, task: str | None) -> str | None:
    """The prompt ``encode_query`` / ``encode_document`` would pass for the task (from ``model.prompts``)."""
    prompts = getattr(model, "prompts", None) or {}
    names = {"query": ("query",), "document": ("document", "passage", "corpus")}.get(task or "", ())
    for name in names:
        if name in prompts:
            return prompts[name]
    return None


def encode_dense_and_sparse(
    model: SentenceTransformer | SparseEncoder,
    texts: Sequence[str],
    task: str | None = "document",
    *,
    prompt: str | None = None,
    batch_size: int = 32,
    top_k: int | None = None,
    show_progress_bar: bool = False,
) -> tuple[np.ndarray, torch.Tensor]:
    """Dense embeddings and PromptReps sparse vectors of ``texts``, both from ONE backbone forward per batch.

    The dense embedding is what ``model.encode_document`` / ``encode_query`` gives for a dense
    ``SentenceTransformer`` (its modules after the TP module, e.g. ``Centering``, are applied), or the dense
    state at the output layer for a sparse model of :func:`build_sparse_model`; the sparse vector is what the
    sparse model's ``encode_document`` / ``encode_query`` gives. For a dense model the sparse head is built once
    per TP module (tied backbones: its embeddings; untied: the LM head read from the checkpoint).

    Args:
        model: A ``SentenceTransformer`` or ``SparseEncoder`` whose first module is a TP module.
        texts: The texts.
        task: ``"document"`` (default), ``"query"``, another ``task_settings`` key, or None (plain ``encode``).
        prompt: A prompt for the TP module (see ``TokenPrependingTransformer.templates_for``); default: the
            model's ``query`` / ``document`` prompt, as ``encode_query`` / ``encode_document`` pass it.
        batch_size: Texts per forward.
        top_k: Tokens kept per sparse vector (default: the head's, 128).
        show_progress_bar: Show a progress bar over batches.

    Returns:
        ``(dense, sparse)``: a ``(len(texts), dim)`` float32 array and a coalesced ``(len(texts), vocab_size)``
        float32 ``torch.sparse_coo_tensor`` on the CPU (see :func:`sparse_to_dicts`).

    Raises:
        ValueError: For a model without a TP module first, a text that is not a string, or a bad ``batch_size`` /
            ``top_k``.
    """
    module = _tp_module(model)
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string.")
    texts = list(texts)
    check_texts(texts)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if top_k is not None:
        _check_top_k(top_k, "top_k")
    head = sparse_head(model)
    dense_modules = [] if isinstance(model, SparseEncoder) else list(model)[1:]
    if prompt is None:
        prompt = _task_prompt(model, task)
    table = word_token_ids(module)
    device = model.device
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    dense_parts: list[torch.Tensor] = []
    rows_parts: list[torch.Tensor] = []
    cols_parts: list[torch.Tensor] = []
    vals_parts: list[torch.Tensor] = []
    for start in tqdm(range(0, len(texts), batch_size), desc="Batches", disable=not show_progress_bar):
        positions = order[start : start + batch_size]
        batch = [texts[i] for i in positions]
        features = model.preprocess(batch, prompt=prompt, task=task)
        if TOKEN_IDS_KEY not in features:
            features[TOKEN_IDS_KEY] = table.padded(batch)
        features = batch_to_device(features, device)
        with torch.inference_mode():
            dense, final = dense_and_final(module, features)
            if dense_modules:
                outputs: dict[str, Any] = {**features, "sentence_embedding": dense}
                for child in dense_modules:
                    outputs = child(outputs)
                dense = outputs["sentence_embedding"]
            rows, cols, vals = head.select(final, features[TOKEN_IDS_KEY], top_k)
        index = torch.tensor(positions, dtype=torch.long)
        dense_parts.append(dense.float().cpu())
        rows_parts.append(index[rows.cpu()])
        cols_parts.append(cols.cpu())
        vals_parts.append(vals.float().cpu())
    dimension = dense_parts[0].shape[1] if dense_parts else _dense_dimension(model, module)
    dense_out = np.zeros((len(texts), dimension), dtype=np.float32)
    if dense_parts:
        dense_out[np.asarray(order)] = torch.cat(dense_parts).numpy()
    indices = (
        torch.stack([torch.cat(rows_parts), torch.cat(cols_parts)])
        if rows_parts
        else torch.zeros((2, 0), dtype=torch.long)
    )
    values = torch.cat(vals_parts) if vals_parts else torch.zeros(0)
    sparse = torch.sparse_coo_tensor(indices, values, (len(texts), head.vocab_size), check_invariants=True).coalesce()
    return dense_out, sparse


def _dense_dimension(model: SentenceTransformer | SparseEncoder, module: TokenPrependingTransformer) -> int:
    if isinstance(model, SentenceTransformer):
        return int(model.get_embedding_dimension() or module.get_embedding_dimension())
    return int(module.get_embedding_dimension())


def sparse_to_dicts(sparse: torch.Tensor) -> list[dict[int, float]]:
    """Rows of a 2-D sparse (or dense) tensor as ``{token_id: weight}`` dicts of their non-zero entries.

    Args:
        sparse: ``(n, vocab_size)`` tensor.

    Returns:
        One dict per row.
    """
    if sparse.ndim != 2:
        raise ValueError(f"Expected a 2-D tensor, got {sparse.ndim}-D.")
    sparse = (sparse if sparse.is_sparse else sparse.to_sparse()).coalesce().cpu()
    rows, cols = sparse.indices().tolist()
    out: list[dict[int, float]] = [{} for _ in range(sparse.shape[0])]
    for row, col, value in zip(rows, cols, sparse.values().tolist()):
        out[row][col] = value
    return out
