"""Shared template-prefix KV cache: compute the keys/values of a prompt's fixed beginning once, reuse them per batch.

Every prompt of a template starts with the same tokens: the template text before the placeholder (TP on) or before
the sentence (TP off). Under causal attention their keys and values depend on those tokens alone, so they are
computed once and every later batch only runs the remainder (placeholder + sentence + template suffix) on top of
them, with the stock Hugging Face cache API (TP_REFERENCE §3.5: the paper times TP "using a KV cache for the fixed
prompt prefix").

How it fits together:

- :func:`prefix_length` decides, per tokenized prompt, how many leading tokens are a cacheable prefix.
- :func:`group_rows` groups the rows of a batch by their exact prefix ids and builds each group's remainder tensors
  (right padded, so that the real tokens of a row stay contiguous after the prefix: needed by sliding-window
  layers, whose mask counts cache slots).
- :class:`PrefixKVCache` is the per-module store: an LRU of :class:`PrefixEntry` keyed by (prefix ids, device,
  dtype), guarded by a lock, cleared when the weights change.
- :func:`build_entry` runs a prefix alone, once, through exactly the layers the batches need (it stops at the output
  layer like every forward). Every batch, the first one included, then runs on top of the cached prefix, so an
  embedding does not depend on whether the cache was warm.
- :meth:`PrefixEntry.batch_cache` expands an entry to a batch into a *fresh* ``DynamicCache`` per forward; the shared
  entry is never mutated, so concurrent ``encode`` calls are safe.

Correctness does not depend on the prefix being "the same for every sentence": an entry is keyed by the row's own
leading ids, and the cached keys/values are exactly those of the row's first tokens (same ids, positions
``0..p-1``, causal attention; TP only rewrites the placeholder, which is never part of the prefix). Weights are
assumed frozen while a model is used for inference: the cache is used only under ``torch.inference_mode()`` in eval
mode (see ``TokenPrependingTransformer.prefix_cache_active``), and it is cleared whenever a parameter is replaced,
moved or modified in place (tracked by data pointers and version counters).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from sentence_transformers_tp import engine

#: Prefixes shorter than this are not cached (nothing worth saving).
MIN_PREFIX_TOKENS = 2
#: Default number of distinct prefixes kept per module (MetaEOL uses 8).
DEFAULT_MAX_PREFIXES = 32
#: Attention layer kinds whose cache behaves like a plain (possibly windowed) key/value list.
SUPPORTED_LAYER_TYPES = frozenset({"full_attention", "sliding_attention"})


def prefix_length(
    offsets: Sequence[tuple[int, int]],
    sentence_start: int,
    placeholder_position: int,
    min_tokens: int = MIN_PREFIX_TOKENS,
) -> int:
    """How many leading tokens of a tokenized prompt form its cacheable template prefix.

    With the placeholder before the sentence, the prefix is every token before the placeholder: the added token
    splits the text, so that segment is tokenized on its own and is the same for every sentence. Otherwise (TP off,
    or a user template with the placeholder after the sentence) it is the tokens lying wholly before the sentence
    minus the last one, which a tokenizer may merge differently depending on how the sentence starts.

    Args:
        offsets: Character span of each token in the prompt (special tokens have empty spans).
        sentence_start: Index of the sentence's first character in the prompt.
        placeholder_position: Token index of the placeholder, or -1.
        min_tokens: Shorter prefixes count as no prefix.

    Returns:
        The prefix length, 0 for none. It never includes the placeholder.
    """
    before = 0
    for _, end in offsets:
        if end > sentence_start:
            break
        before += 1
    if 0 <= placeholder_position < before:
        length = placeholder_position
    else:
        length = max(before - 1, 0)
        if placeholder_position >= 0:
            length = min(length, placeholder_position)
    return length if length >= min_tokens else 0


@dataclass(frozen=True)
class PrefixGroup:
    """The rows of a batch that share one prefix, with their remainders (the tokens after the prefix).

    Attributes:
        prefix_ids: The prefix token ids (the cache key, with device and dtype).
        rows: ``(n,)`` indices of the rows in the batch.
        input_ids: ``(n, width)`` remainder ids, right padded.
        attention_mask: ``(n, width)`` remainder mask.
        placeholder_positions: ``(n,)`` placeholder index within the remainder, -1 without TP.
        last_positions: ``(n,)`` index of the last real remainder token.
        source_row: A row of the batch holding this prefix (where a cache miss captures it from).
        source_start: Column of that row's first real token in the batch tensors (the left padding).
    """

    prefix_ids: tuple[int, ...]
    rows: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    placeholder_positions: torch.Tensor
    last_positions: torch.Tensor
    source_row: int
    source_start: int

    @property
    def prefix_length(self) -> int:
        """Number of prefix tokens."""
        return len(self.prefix_ids)

    def to(self, device: torch.device) -> PrefixGroup:
        """This group with its tensors on ``device``.

        Args:
            device: The target device.

        Returns:
            A group on ``device`` (``self`` if already there).
        """
        if self.input_ids.device == torch.device(device):
            return self
        move = {"device": device, "non_blocking": True}
        return PrefixGroup(
            self.prefix_ids,
            self.rows.to(**move),
            self.input_ids.to(**move),
            self.attention_mask.to(**move),
            self.placeholder_positions.to(**move),
            self.last_positions.to(**move),
            self.source_row,
            self.source_start,
        )


def group_rows(
    rows: Sequence[Sequence[int]],
    prefix_lengths: Sequence[int],
    placeholder_positions: Sequence[int],
    starts: Sequence[int],
    pad_id: int,
) -> tuple[list[PrefixGroup], list[int]]:
    """Group the rows of a batch by their exact prefix ids and build each group's remainder tensors.

    Args:
        rows: Token ids of each row (unpadded).
        prefix_lengths: Cacheable prefix length of each row (0: none).
        placeholder_positions: Placeholder index of each row in ``rows`` coordinates, or -1.
        starts: Column of each row's first token in the padded batch tensors.
        pad_id: Id used for padding.

    Returns:
        The groups (in order of first appearance) and the indices of the rows without a prefix.
    """
    members: dict[tuple[int, ...], list[int]] = {}
    rest: list[int] = []
    for index, (row, length) in enumerate(zip(rows, prefix_lengths)):
        if length <= 0 or length >= len(row):
            rest.append(index)
            continue
        members.setdefault(tuple(row[:length]), []).append(index)
    groups = []
    for prefix, indices in members.items():
        p = len(prefix)
        remainders = [rows[i][p:] for i in indices]
        width = max(len(remainder) for remainder in remainders)
        # Padded Python lists first, then one tensor each (little host work per batch).
        groups.append(
            PrefixGroup(
                prefix_ids=prefix,
                rows=torch.tensor(indices, dtype=torch.long),
                input_ids=torch.tensor(
                    [list(remainder) + [pad_id] * (width - len(remainder)) for remainder in remainders],
                    dtype=torch.long,
                ),
                attention_mask=torch.tensor(
                    [[1] * len(remainder) + [0] * (width - len(remainder)) for remainder in remainders],
                    dtype=torch.long,
                ),
                placeholder_positions=torch.tensor(
                    [placeholder_positions[i] - p if placeholder_positions[i] >= 0 else -1 for i in indices],
                    dtype=torch.long,
                ),
                last_positions=torch.tensor([len(remainder) - 1 for remainder in remainders], dtype=torch.long),
                source_row=indices[0],
                source_start=int(starts[indices[0]]),
            )
        )
    return groups, rest


@dataclass(frozen=True)
class PrefixEntry:
    """The cached keys and values of one prefix, for the first ``depth`` decoder layers.

    Attributes:
        prefix_ids: The prefix token ids.
        keys: One ``(1, kv_heads, prefix_length, head_dim)`` tensor per layer.
        values: Same shapes as ``keys``.
    """

    prefix_ids: tuple[int, ...]
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    @property
    def depth(self) -> int:
        """Number of decoder layers covered."""
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        """Memory held by the tensors."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def batch_cache(self, batch_size: int, config: Any) -> DynamicCache:
        """A fresh ``DynamicCache`` holding this prefix for every row of a batch (this entry stays untouched).

        Args:
            batch_size: Rows in the batch.
            config: The model config (gives the sliding-window layers their cache class).

        Returns:
            The cache; layers past ``depth`` are left empty (the forward stops before them).
        """
        cache = DynamicCache(config=config)
        for index, (key, value) in enumerate(zip(self.keys, self.values)):
            cache.update(key.expand(batch_size, -1, -1, -1), value.expand(batch_size, -1, -1, -1), index)
        return cache


def build_entry(
    model: nn.Module, layers: nn.ModuleList, prefix_ids: tuple[int, ...], depth: int, device: torch.device
) -> PrefixEntry:
    """Run a prefix through the first ``depth`` decoder layers and keep their keys and values.

    The forward stops after layer ``depth - 1`` (the engine's early exit, :mod:`~sentence_transformers_tp.engine`),
    so it runs exactly the layers the batches will run. Its cache has a full (untrimmed) layer everywhere, also for
    sliding-window layers: the per-batch cache trims them itself.

    Args:
        model: The backbone.
        layers: Its decoder layers.
        prefix_ids: The prefix token ids.
        depth: Number of decoder layers to run (1..num_layers).
        device: Where the model's inputs go.

    Returns:
        The entry, with plain (non-inference) tensors so that it may be used in and outside inference mode.
    """
    length = len(prefix_ids)
    input_ids = torch.tensor([prefix_ids], dtype=torch.long, device=device)
    cache = DynamicCache()
    with torch.inference_mode(False), torch.no_grad():
        engine.run(
            model,
            layers,
            engine.Plan(capture=(depth,)),
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            placeholder_positions=torch.full((1,), -1, dtype=torch.long, device=device),
            last_positions=torch.full((1,), length - 1, dtype=torch.long, device=device),
            position_ids=torch.arange(length, device=device).unsqueeze(0),
            cache=cache,
            use_cache=True,
        )
    ran = cache.layers[:depth]
    if len(ran) < depth or any(layer.keys is None for layer in ran):
        raise RuntimeError(f"the prefix forward filled {len(ran)} cache layers, expected {depth}")
    return PrefixEntry(prefix_ids, tuple(layer.keys for layer in ran), tuple(layer.values for layer in ran))


def weights_fingerprint(model: nn.Module) -> tuple[Any, ...]:
    """What identifies the values of a model's weights without reading them: device, dtype, and the storage and
    version counter of every parameter (``model.to``, ``load_state_dict`` and optimizer steps all change it).

    Args:
        model: The model.

    Returns:
        A hashable fingerprint.
    """
    parameters = list(model.parameters())
    first = parameters[0] if parameters else torch.empty(0)
    state = tuple((p.data_ptr(), p._version) for p in parameters)
    return (str(first.device), first.dtype, hash(state))


def unsupported_reason(model: nn.Module) -> str | None:
    """Why the prefix cache cannot be used with ``model``, or None if it can.

    It needs attention layers whose cache is a plain (possibly sliding-window) key/value list and a forward that
    accepts ``past_key_values`` and ``position_ids``. Recurrent, linear-attention, chunked-attention and KV-sharing
    layers are not supported.

    Args:
        model: A Hugging Face decoder backbone.

    Returns:
        A human-readable reason, or None.
    """
    import inspect

    from transformers.cache_utils import get_layer_types_and_kwargs

    config = getattr(model, "config", None)
    if config is None:
        return "the model has no config"
    try:
        text_config = config.get_text_config(decoder=True)
        layer_types, _ = get_layer_types_and_kwargs(text_config)
    except Exception as error:  # noqa: BLE001 - any failure here means "unknown layout"
        return f"its layer layout could not be read ({type(error).__name__}: {error})"
    unsupported = sorted(set(layer_types) - SUPPORTED_LAYER_TYPES)
    if unsupported:
        return f"it has {', '.join(unsupported)} layers (only full and sliding-window attention are supported)"
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "its forward signature could not be read"
    accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    missing = [name for name in ("past_key_values", "position_ids") if name not in parameters]
    if missing and not accepts_kwargs:
        return f"its forward takes no {' / '.join(missing)}"
    return None


class PrefixKVCache:
    """The prefix entries of one model: an LRU keyed by (prefix ids, device, dtype), safe to share between threads.

    Entries are immutable once stored; a forward only reads them (see :meth:`PrefixEntry.batch_cache`).

    Args:
        max_prefixes: How many distinct prefixes to keep (least recently used ones are dropped).
    """

    def __init__(self, max_prefixes: int = DEFAULT_MAX_PREFIXES) -> None:
        if max_prefixes < 1:
            raise ValueError(f"max_prefixes must be >= 1, got {max_prefixes}.")
        self.max_prefixes = max_prefixes
        self._entries: OrderedDict[tuple[Any, ...], PrefixEntry] = OrderedDict()
        self._fingerprint: tuple[Any, ...] | None = None
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Memory held by all entries."""
        with self._lock:
            return sum(entry.nbytes for entry in self._entries.values())

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def sync(self, model: nn.Module) -> tuple[Any, ...]:
        """Check the model's weights and return the context to key entries by; clears the store if they changed.

        Args:
            model: The backbone.

        Returns:
            ``(device, dtype, weights hash)``.
        """
        fingerprint = weights_fingerprint(model)
        with self._lock:
            if fingerprint != self._fingerprint:
                self._entries.clear()
                self._fingerprint = fingerprint
        return fingerprint

    def get(self, prefix_ids: tuple[int, ...], depth: int, context: tuple[Any, ...]) -> PrefixEntry | None:
        """The entry for a prefix covering at least ``depth`` layers, or None.

        Args:
            prefix_ids: The prefix ids.
            depth: Decoder layers the forward will run.
            context: From :meth:`sync`.

        Returns:
            The entry, or None on a miss.
        """
        key = (prefix_ids, context)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.depth < depth:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, entry: PrefixEntry, context: tuple[Any, ...]) -> None:
        """Store an entry (keeping a deeper one already there), dropping the least recently used beyond the limit.

        Args:
            entry: The entry.
            context: From :meth:`sync` (an entry computed under stale weights is ignored).
        """
        key = (entry.prefix_ids, context)
        with self._lock:
            if context != self._fingerprint:
                return
            existing = self._entries.get(key)
            if existing is None or existing.depth < entry.depth:
                self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_prefixes:
                self._entries.popitem(last=False)

    def get_or_build(
        self,
        model: nn.Module,
        layers: nn.ModuleList,
        prefix_ids: tuple[int, ...],
        depth: int,
        context: tuple[Any, ...],
        device: torch.device,
    ) -> PrefixEntry:
        """The entry for a prefix, built (once, even with concurrent callers) on a miss.

        Args:
            model: The backbone.
            layers: Its decoder layers.
            prefix_ids: The prefix ids.
            depth: Decoder layers the forward will run.
            context: From :meth:`sync`.
            device: Where the model's inputs go.

        Returns:
            The entry.
        """
        entry = self.get(prefix_ids, depth, context)
        if entry is not None:
            return entry
        with self._build_lock:
            # Another thread may have built it while this one waited.
            key = (prefix_ids, context)
            with self._lock:
                entry = self._entries.get(key)
            if entry is not None and entry.depth >= depth:
                return entry
            entry = build_entry(model, layers, prefix_ids, depth, device)
            self.put(entry, context)
            return entry
