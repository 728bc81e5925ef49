"""The forward engine: one backbone forward with interventions, last-token captures and early exit.

Every embedding of the package is computed here: ``encode``, the tuner and the evaluators all reach it through
:meth:`TokenPrependingTransformer.embed <sentence_transformers_tp.module.TokenPrependingTransformer.embed>`. A forward
is described by a :class:`Plan`:

- **interventions** (:class:`Intervention` subclasses) edit the forward at two kinds of sites: the hidden states
  entering a decoder layer (Token Prepending, :mod:`~sentence_transformers_tp.prepending`) and the input of a
  layer's attention output projection (Contrastive Prompting, :mod:`~sentence_transformers_tp.contrastive`). A new
  intervention is one subclass; the engine, the prefix cache, the tuner and ``encode`` need no change.
- **captures**: the last-token state at one, several or all layers (Hugging Face ``hidden_states`` indexing resolved
  to ``0..num_layers``), or the attention-output-projection input of one layer at the last token.
- **early exit**: the forward stops as soon as everything captured is known; later layers and the LM head never run.

Hooks are installed on the backbone's own modules (no modeling code is copied) only while at least one forward runs,
and removed when the last one ends, also when it raises. The plan of each forward lives in a
:class:`contextvars.ContextVar`, so threads running forwards through one model never see each other's plans.

This file knows nothing of templates, tokenizers or sentence-transformers.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "Batch",
    "Captured",
    "Intervention",
    "Plan",
    "UnsupportedArchitectureError",
    "active_hook_count",
    "cache_argument",
    "check_decoder_only",
    "find_attention_output_projection",
    "find_decoder_layers",
    "resolve_output_layer",
    "run",
]


class UnsupportedArchitectureError(ValueError):
    """Raised when a model is not a decoder-only transformer with a list of decoder layers (or lacks a module an
    intervention needs)."""


# ---------------------------------------------------------------------------------------------- architecture


def _text_config(config: Any) -> Any:
    get_text_config = getattr(config, "get_text_config", None)
    return get_text_config() if callable(get_text_config) else config


def check_decoder_only(model: nn.Module) -> None:
    """Raise :class:`UnsupportedArchitectureError` unless ``model`` looks like a decoder-only (causal) LM backbone.

    Args:
        model: A Hugging Face model.

    Raises:
        UnsupportedArchitectureError: For encoder-decoder models and encoder-only (masked LM) architectures.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    text_type = getattr(_text_config(config), "model_type", model_type) if config is not None else None
    expected = (
        "Token Prepending needs a decoder-only causal language model backbone (e.g. llama, mistral, qwen2, qwen3, "
        "gemma, gemma2, gemma3, phi3, olmo2)"
    )
    if config is None or getattr(config, "is_encoder_decoder", False):
        raise UnsupportedArchitectureError(f"{expected}; got an encoder-decoder or unknown model ({model_type!r}).")
    types = {model_type, text_type} - {None}
    if types & set(MODEL_FOR_MASKED_LM_MAPPING_NAMES) or not types & set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        raise UnsupportedArchitectureError(f"{expected}; got model_type {model_type!r}, which is not a causal LM.")


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """Find the list of decoder layers of a Hugging Face decoder-only model, whatever its family.

    The layers are the ``nn.ModuleList`` whose length equals the (text) config's ``num_hidden_layers``; when
    several qualify (e.g. a vision tower), the shallowest one outside any vision/audio sub-model wins.

    Args:
        model: A Hugging Face base model (``AutoModel``) or causal LM.

    Returns:
        The decoder layers.

    Raises:
        UnsupportedArchitectureError: If no such list exists.
    """
    config = getattr(model, "config", None)
    num_layers = getattr(_text_config(config), "num_hidden_layers", None) if config is not None else None
    candidates: list[tuple[int, str, nn.ModuleList]] = []
    module_lists: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList):
            continue
        module_lists.append(f"{name} ({len(module)})")
        if num_layers is not None and len(module) == num_layers:
            penalty = 1 if any(part in name for part in ("vision", "audio", "visual", "image")) else 0
            candidates.append((penalty * 100 + name.count("."), name, module))
    if not candidates:
        raise UnsupportedArchitectureError(
            f"Could not find the decoder layers of {type(model).__name__}: expected an nn.ModuleList with "
            f"config.num_hidden_layers={num_layers} decoder layers (such as `model.layers` in Llama, Mistral, Qwen2 "
            f"or Gemma). ModuleLists found: {', '.join(module_lists) or 'none'}."
        )
    candidates.sort(key=lambda item: (item[0], item[1]))
    return candidates[0][2]


#: Names of the attention output projection inside a decoder layer, by family: Llama, Mistral, Qwen2/3, Gemma,
#: Phi-3, OLMo-2 (``self_attn.o_proj``), GPT-NeoX / Pythia (``attention.dense``), Falcon / Phi-1/2
#: (``self_attention.dense``, ``self_attn.dense``), OPT / BART-style (``self_attn.out_proj``), GPT-2 style
#: (``attn.c_proj``), GPT-J / CodeGen (``attn.out_proj``).
ATTENTION_OUTPUT_PROJECTIONS = (
    "self_attn.o_proj",
    "attention.dense",
    "self_attention.dense",
    "self_attn.dense",
    "self_attn.out_proj",
    "attn.out_proj",
    "attn.c_proj",
    "attention.o_proj",
)


def find_attention_output_projection(layer: nn.Module) -> nn.Module:
    """The attention output projection (``W_O``) of a decoder layer, whatever its family.

    Its input is the concatenation of the per-head attention outputs (Contrastive Prompting edits it).

    Args:
        layer: One decoder layer.

    Returns:
        The projection module.

    Raises:
        UnsupportedArchitectureError: If the layer has none of the known projections.
    """
    modules = dict(layer.named_modules())
    for name in ATTENTION_OUTPUT_PROJECTIONS:
        if name in modules:
            return modules[name]
    found = [name for name in modules if name and any(k in name for k in ("attn", "attention"))]
    raise UnsupportedArchitectureError(
        f"Could not find the attention output projection of {type(layer).__name__} (looked for "
        f"{', '.join(ATTENTION_OUTPUT_PROJECTIONS)}); attention modules found: {', '.join(found) or 'none'}. "
        "Contrastive Prompting needs it."
    )


def resolve_output_layer(output_layer: int, num_layers: int) -> int:
    """Map an ``output_layer`` in Hugging Face ``hidden_states`` indexing to ``0..num_layers``.

    Args:
        output_layer: 0 = embeddings, ``k`` = output of decoder layer ``k``, -1 = the final (normed) output,
            other negatives count from the end (-2 = output of the second-to-last layer).
        num_layers: Number of decoder layers.

    Returns:
        The non-negative index.

    Raises:
        ValueError: If the index is out of range.
    """
    if not -(num_layers + 1) <= output_layer <= num_layers:
        raise ValueError(
            f"output_layer={output_layer} is out of range for a model with {num_layers} decoder layers: use "
            f"0..{num_layers} or -{num_layers + 1}..-1 (Hugging Face hidden_states indexing)."
        )
    return output_layer % (num_layers + 1)


@functools.cache
def _cache_argument_of(model_type: type) -> str:
    parameters = inspect.signature(model_type.forward).parameters
    # transformers >= 5.24 names it ``cache`` (``past_key_values`` is deprecated there and removed in 5.40).
    return "cache" if "cache" in parameters else "past_key_values"


def cache_argument(model: nn.Module) -> str:
    """The name of the KV-cache argument of a backbone's forward: ``cache`` (transformers >= 5.24) or
    ``past_key_values`` (older releases). Detected from the signature, once per model class.

    Args:
        model: A Hugging Face backbone.

    Returns:
        The argument name.
    """
    return _cache_argument_of(type(model))


# ---------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Batch:
    """The positions of one forward's rows that interventions work with (in this forward's coordinates: with a
    prefix cache, positions count from the first token after the prefix).

    Attributes:
        placeholder_positions: ``(rows,)`` placeholder index per row, -1 for none.
        last_positions: ``(rows,)`` index of the last real token per row.
    """

    placeholder_positions: torch.Tensor
    last_positions: torch.Tensor


class Intervention:
    """An edit of the forward, written once and applied by the engine wherever a plan includes it.

    Subclasses override :meth:`edit_layer_input` and/or :meth:`edit_attention_input` (return a new tensor, never
    modify the argument in place, or None for no change), and :meth:`take` if they hold per-row state.
    """

    def edit_layer_input(self, index: int, hidden: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """Edit the hidden states entering decoder layer ``index``.

        Args:
            index: The decoder layer (0-based).
            hidden: ``(rows, seq, hidden)`` input of the layer.
            batch: Positions of the rows.

        Returns:
            The edited hidden states, or None to leave them.
        """
        return None

    def edit_attention_input(self, index: int, values: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """Edit the input of decoder layer ``index``'s attention output projection.

        Args:
            index: The decoder layer (0-based).
            values: ``(rows, seq, heads * head_dim)`` concatenated attention outputs.
            batch: Positions of the rows.

        Returns:
            The edited input, or None to leave it.
        """
        return None

    @property
    def attention_layers(self) -> frozenset[int]:
        """Layers whose attention output projection this intervention edits (those get hooks)."""
        return frozenset()

    def take(self, rows: torch.Tensor) -> Intervention:
        """This intervention restricted to some rows of the batch (for sub-batches such as prefix-cache groups).

        Args:
            rows: ``(n,)`` row indices.

        Returns:
            The restricted intervention (``self`` when it holds no per-row state).
        """
        return self


@dataclass(frozen=True)
class Plan:
    """What one forward should do.

    Args:
        capture: Layers whose last-token state to return, in ``hidden_states`` indexing resolved to
            ``0..num_layers`` (0 = embeddings, ``k`` = output of decoder layer ``k``, ``num_layers`` = the final normed
            output). Empty when ``capture_attention_input`` is given.
        interventions: Edits to apply, in order.
        capture_attention_input: A decoder layer whose attention-output-projection input at the last token to
            return instead of layer states; the forward stops right there.
    """

    capture: tuple[int, ...] = ()
    interventions: tuple[Intervention, ...] = ()
    capture_attention_input: int | None = None

    def take(self, rows: torch.Tensor) -> Plan:
        """This plan with every intervention restricted to ``rows``.

        Args:
            rows: ``(n,)`` row indices.

        Returns:
            The plan.
        """
        return Plan(self.capture, tuple(i.take(rows) for i in self.interventions), self.capture_attention_input)


@dataclass
class Captured:
    """What a forward captured.

    Attributes:
        layers: ``(rows, len(plan.capture), hidden)`` last-token states, in the order of ``plan.capture``.
        attention_input: ``(rows, heads * head_dim)`` for ``plan.capture_attention_input``, else None.
    """

    layers: torch.Tensor | None = None
    attention_input: torch.Tensor | None = None


@dataclass
class _Active:
    """The state of one running forward (held in the context variable)."""

    plan: Plan
    batch: Batch
    num_layers: int
    by_layer: dict[int, torch.Tensor] = field(default_factory=dict)
    stop_after: int = -1  # decoder layer after whose output the forward stops (-1: never)
    attention_input: torch.Tensor | None = None


class _EarlyExit(Exception):
    """Raised from a hook to stop the forward once everything of the plan is captured."""


_ACTIVE: contextvars.ContextVar[tuple[int, _Active] | None] = contextvars.ContextVar(
    "sentence_transformers_tp_active_forward", default=None
)


def _gather_rows(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, positions.to(hidden.device)]


# ---------------------------------------------------------------------------------------------- hooks


class _HookSet:
    """Hooks on one backbone's decoder layers (and attention output projections), installed while forwards run."""

    def __init__(self, layers: nn.ModuleList) -> None:
        self.layers_ref = weakref.ref(layers)
        self.num_layers = len(layers)
        self.lock = threading.Lock()
        self.users = 0
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.projections: dict[int, nn.Module] = {}
        self.hooked_projections: set[int] = set()

    def projection(self, index: int) -> nn.Module:
        """The attention output projection of layer ``index`` (found once)."""
        with self.lock:
            module = self.projections.get(index)
            if module is None:
                module = self.projections[index] = find_attention_output_projection(self.layers_ref()[index])
            return module

    def acquire(self, attention_layers: frozenset[int]) -> None:
        with self.lock:
            if self.users == 0:
                for index, layer in enumerate(self.layers_ref()):
                    self.handles.append(
                        layer.register_forward_pre_hook(functools.partial(self._pre_hook, index), with_kwargs=True)
                    )
                    self.handles.append(layer.register_forward_hook(functools.partial(self._post_hook, index)))
                for index, module in self.projections.items():
                    self.handles.append(module.register_forward_pre_hook(functools.partial(self._attn_hook, index)))
                self.hooked_projections = set(self.projections)
            missing = attention_layers - self.hooked_projections
            for index in sorted(missing):
                # Installed while other forwards run: harmless to them (their plans do not touch this layer).
                module = self.projections[index]
                self.handles.append(module.register_forward_pre_hook(functools.partial(self._attn_hook, index)))
                self.hooked_projections.add(index)
            self.users += 1

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                for handle in self.handles:
                    handle.remove()
                self.handles.clear()
                self.hooked_projections = set()

    def _active(self) -> _Active | None:
        active = _ACTIVE.get()
        if active is None or active[0] != id(self):
            return None
        return active[1]

    def _pre_hook(self, index: int, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        active = self._active()
        if active is None:
            return None
        from_args = len(args) > 0
        hidden = args[0] if from_args else kwargs["hidden_states"]
        if index == 0 and 0 in active.plan.capture:
            active.by_layer[0] = _gather_rows(hidden, active.batch.last_positions)
            if active.stop_after == -1 and active.plan.capture == (0,):
                raise _EarlyExit
        edited = hidden
        for intervention in active.plan.interventions:
            new = intervention.edit_layer_input(index, edited, active.batch)
            if new is not None:
                edited = new
        if edited is hidden:
            return None
        if from_args:
            return (edited, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": edited}

    def _post_hook(self, index: int, module: nn.Module, args: tuple, output: Any) -> None:
        active = self._active()
        # The last layer's output is not captured here: the final output (after the final norm) is the model's own.
        if active is None or index + 1 >= self.num_layers:
            return None
        if index + 1 in active.plan.capture:
            hidden = output[0] if isinstance(output, tuple) else output
            active.by_layer[index + 1] = _gather_rows(hidden, active.batch.last_positions)
        if index == active.stop_after:
            raise _EarlyExit

    def _attn_hook(self, index: int, module: nn.Module, args: tuple) -> tuple | None:
        active = self._active()
        if active is None or not args:
            return None
        values = args[0]
        plan = active.plan
        edited = values
        for intervention in plan.interventions:
            if index in intervention.attention_layers:
                new = intervention.edit_attention_input(index, edited, active.batch)
                if new is not None:
                    edited = new
        if plan.capture_attention_input == index:
            active.attention_input = _gather_rows(edited, active.batch.last_positions)
            raise _EarlyExit
        if edited is values:
            return None
        return (edited, *args[1:])


_HOOK_SETS: weakref.WeakKeyDictionary[nn.ModuleList, _HookSet] = weakref.WeakKeyDictionary()
_HOOK_SETS_LOCK = threading.Lock()


def _hook_set(layers: nn.ModuleList) -> _HookSet:
    with _HOOK_SETS_LOCK:
        hook_set = _HOOK_SETS.get(layers)
        if hook_set is None:
            hook_set = _HOOK_SETS[layers] = _HookSet(layers)
        return hook_set


def active_hook_count(layers: nn.ModuleList) -> int:
    """Number of engine hooks currently registered on ``layers`` and their submodules (0 when no forward runs).

    Args:
        layers: Decoder layers as returned by :func:`find_decoder_layers`.

    Returns:
        The number of hooks.
    """
    with _HOOK_SETS_LOCK:
        hook_set = _HOOK_SETS.get(layers)
    return 0 if hook_set is None else len(hook_set.handles)


# ---------------------------------------------------------------------------------------------- the forward


def _check_plan(plan: Plan, num_layers: int) -> None:
    if plan.capture_attention_input is not None:
        if plan.capture:
            raise ValueError("A plan captures either layer states or an attention input, not both.")
        if not 0 <= plan.capture_attention_input < num_layers:
            raise ValueError(
                f"capture_attention_input={plan.capture_attention_input} is not a decoder layer (0..{num_layers - 1})."
            )
        return
    if not plan.capture:
        raise ValueError("A plan must capture at least one layer.")
    bad = [k for k in plan.capture if not 0 <= k <= num_layers]
    if bad:
        raise ValueError(f"Capture layers {bad} are outside 0..{num_layers}.")


def run(
    model: nn.Module,
    layers: nn.ModuleList,
    plan: Plan,
    *,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    placeholder_positions: torch.Tensor,
    last_positions: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    cache: Any = None,
    use_cache: bool | None = None,
) -> Captured:
    """Run the backbone once with the plan's interventions; return what it captures, stopping as early as possible.

    Args:
        model: The backbone (a Hugging Face base model).
        layers: Its decoder layers (:func:`find_decoder_layers`).
        plan: Interventions and captures.
        input_ids: ``(rows, seq)`` token ids.
        attention_mask: ``(rows, cache_len + seq)`` mask (covering the cached prefix, if any), or None (no padding).
        placeholder_positions: ``(rows,)`` placeholder index per row (-1: none), in ``input_ids`` coordinates.
        last_positions: ``(rows,)`` last real token per row, in ``input_ids`` coordinates.
        position_ids: Position ids; by default derived from the attention mask, so results do not depend on the
            padding side or the batch mates.
        cache: A KV cache holding a prefix the rows continue (or to be filled when ``use_cache``).
        use_cache: Passed to the backbone (default: whether ``cache`` is given).

    Returns:
        The captured states.
    """
    num_layers = len(layers)
    _check_plan(plan, num_layers)
    if position_ids is None:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    batch = Batch(placeholder_positions, last_positions)
    active = _Active(plan=plan, batch=batch, num_layers=num_layers)
    deepest = max(plan.capture, default=num_layers)
    if plan.capture_attention_input is None and 0 < deepest < num_layers:
        active.stop_after = deepest - 1
    hook_set = _hook_set(layers)
    attention_layers = frozenset().union(*(i.attention_layers for i in plan.interventions))
    if plan.capture_attention_input is not None:
        attention_layers |= {plan.capture_attention_input}
    for index in attention_layers:
        hook_set.projection(index)  # finds it, or raises a clear error before any work
    hook_set.acquire(attention_layers)
    token = _ACTIVE.set((id(hook_set), active))
    arguments = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        cache_argument(model): cache,
        "use_cache": cache is not None if use_cache is None else use_cache,
        "return_dict": True,
    }
    try:
        output = model(**arguments)
    except _EarlyExit:
        output = None
    finally:
        _ACTIVE.reset(token)
        hook_set.release()
    if plan.capture_attention_input is not None:
        if active.attention_input is None:
            raise RuntimeError(f"The forward never reached layer {plan.capture_attention_input}'s attention output.")
        return Captured(attention_input=active.attention_input)
    if num_layers in plan.capture:
        if output is None:  # pragma: no cover - the plan never stops before the last layer when it is captured
            raise RuntimeError("The forward stopped early; cannot read the final layer.")
        active.by_layer[num_layers] = _gather_rows(output.last_hidden_state, last_positions)
    missing = [k for k in plan.capture if k not in active.by_layer]
    if missing:  # pragma: no cover - every capture site is hooked
        raise RuntimeError(f"Layers {missing} were not captured.")
    return Captured(layers=torch.stack([active.by_layer[k] for k in plan.capture], dim=1))


def capture_layers(spec: int | Sequence[int] | str | None, default: int, num_layers: int) -> tuple[int, ...]:
    """Resolve a capture spec to ``hidden_states`` indices ``0..num_layers``.

    Args:
        spec: None (``default``), ``"all"`` (every layer), one layer or several, in ``hidden_states`` indexing
            (negatives count from the end).
        default: The layer for None (e.g. the module's output layer).
        num_layers: Number of decoder layers.

    Returns:
        The resolved indices, in the given order.
    """
    if spec is None:
        spec = [default]
    elif isinstance(spec, str):
        if spec != "all":
            raise ValueError(f"layers must be None, 'all', an integer or a list of integers; got {spec!r}.")
        return tuple(range(num_layers + 1))
    elif isinstance(spec, int):
        spec = [spec]
    resolved = tuple(resolve_output_layer(int(k), num_layers) for k in spec)
    if not resolved:
        raise ValueError("layers must name at least one layer.")
    return resolved
