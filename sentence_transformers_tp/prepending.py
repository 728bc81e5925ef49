"""The Token Prepending mechanism, model-family agnostic.

Before each decoder layer whose index lies in ``[tp_start, tp_exit)``, the hidden state at the placeholder position
of that layer's input is replaced by the hidden state of the last real token of the same input (Fu et al., 2025;
TP_REFERENCE §1.4). The replacement is done by forward pre-hooks on the backbone's own decoder layers, so no
modeling code is copied. The same hooks implement early exit: after the decoder layer that produces the requested
output layer, the last-token states are captured and the rest of the forward is skipped.

Hooks exist only while a forward runs through :func:`run_with_prepending` and are removed when the last concurrent
forward ends, also when it raises. Each forward's settings live in a :class:`contextvars.ContextVar`, so several
threads can run forwards through one model at the same time without seeing each other's settings.

This file knows nothing of templates, tokenizers or sentence-transformers.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")


class UnsupportedArchitectureError(ValueError):
    """Raised when a model is not a decoder-only transformer with a list of decoder layers."""


@dataclass
class PrependingPlan:
    """What one forward should do.

    Args:
        placeholder_positions: ``(batch,)`` long tensor, the placeholder index of each row, or -1 for rows without a
            placeholder (those rows are left alone).
        last_positions: ``(batch,)`` long tensor, the index of the last real token of each row.
        tp_start: First decoder layer (0-based) whose input gets the placeholder replaced.
        tp_exit: First decoder layer after ``tp_start`` whose input is no longer replaced. ``tp_exit <= tp_start``
            disables TP.
        output_layer: Which hidden state to capture, in Hugging Face ``hidden_states`` indexing resolved to
            ``0..num_layers``: 0 is the embedding output, ``k`` the output of decoder layer ``k`` (1-based), and
            ``num_layers`` means "the model's final output", which the caller reads from the model output itself.
    """

    placeholder_positions: torch.Tensor
    last_positions: torch.Tensor
    tp_start: int
    tp_exit: int
    output_layer: int
    captured: torch.Tensor | None = field(default=None, init=False)


class _EarlyExit(Exception):
    """Raised from a hook to stop the forward once the requested layer output has been captured."""


_ACTIVE_PLAN: contextvars.ContextVar[tuple[int, PrependingPlan] | None] = contextvars.ContextVar(
    "sentence_transformers_tp_active_plan", default=None
)


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


def _gather_rows(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, positions.to(hidden.device)]


class _HookSet:
    """Hooks on one list of decoder layers, installed while at least one forward is active."""

    def __init__(self, layers: nn.ModuleList) -> None:
        self.layers_ref = weakref.ref(layers)
        self.num_layers = len(layers)
        self.lock = threading.Lock()
        self.users = 0
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def acquire(self) -> None:
        with self.lock:
            if self.users == 0:
                layers = self.layers_ref()
                for index, layer in enumerate(layers):
                    self.handles.append(
                        layer.register_forward_pre_hook(functools.partial(self._pre_hook, index), with_kwargs=True)
                    )
                    self.handles.append(layer.register_forward_hook(functools.partial(self._post_hook, index)))
            self.users += 1

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                for handle in self.handles:
                    handle.remove()
                self.handles.clear()

    def _plan(self) -> PrependingPlan | None:
        active = _ACTIVE_PLAN.get()
        if active is None or active[0] != id(self):
            return None
        return active[1]

    def _pre_hook(self, index: int, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        plan = self._plan()
        if plan is None:
            return None
        from_args = len(args) > 0
        hidden = args[0] if from_args else kwargs["hidden_states"]
        if index == 0 and plan.output_layer == 0:
            plan.captured = _gather_rows(hidden, plan.last_positions)
            raise _EarlyExit
        if not plan.tp_start <= index < plan.tp_exit:
            return None
        # No host-device synchronisation here (no nonzero / item): on a GPU the host keeps queueing kernels ahead.
        # Rows without a placeholder (-1) rewrite their position 0 with its own value, i.e. stay unchanged.
        placeholder = plan.placeholder_positions.to(hidden.device)
        last = plan.last_positions.to(hidden.device)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        target = placeholder.clamp(min=0)
        source = torch.where((placeholder >= 0)[:, None], hidden[rows, last], hidden[rows, target])
        # Write into a copy: the input tensor may already be recorded elsewhere (e.g. in output_hidden_states).
        replaced = hidden.clone()
        replaced[rows, target] = source
        if from_args:
            return (replaced, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": replaced}

    def _post_hook(self, index: int, module: nn.Module, args: tuple, output: Any) -> None:
        plan = self._plan()
        # The last layer's output is not captured: the final output (after the final norm) is the model's own.
        if plan is None or plan.output_layer != index + 1 or plan.output_layer >= self.num_layers:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        plan.captured = _gather_rows(hidden, plan.last_positions)
        raise _EarlyExit


_HOOK_SETS: weakref.WeakKeyDictionary[nn.ModuleList, _HookSet] = weakref.WeakKeyDictionary()
_HOOK_SETS_LOCK = threading.Lock()


def _hook_set(layers: nn.ModuleList) -> _HookSet:
    with _HOOK_SETS_LOCK:
        hook_set = _HOOK_SETS.get(layers)
        if hook_set is None:
            hook_set = _HOOK_SETS[layers] = _HookSet(layers)
        return hook_set


def active_hook_count(layers: nn.ModuleList) -> int:
    """Number of TP hooks currently registered on ``layers`` (0 when no forward is running).

    Args:
        layers: Decoder layers as returned by :func:`find_decoder_layers`.

    Returns:
        The number of pre- and post-hooks of this module on those layers.
    """
    with _HOOK_SETS_LOCK:
        hook_set = _HOOK_SETS.get(layers)
    return 0 if hook_set is None else len(hook_set.handles)


def run_with_prepending(layers: nn.ModuleList, plan: PrependingPlan, forward: Callable[[], T]) -> T | None:
    """Run ``forward`` (a call of the backbone) with Token Prepending and early exit as described by ``plan``.

    Args:
        layers: The backbone's decoder layers (:func:`find_decoder_layers`).
        plan: Placeholder/last positions, the TP layer band and the output layer. When the output layer is a
            decoder layer's output, ``plan.captured`` receives the ``(batch, hidden)`` last-token states of that
            layer and the remaining layers are not run.
        forward: A callable that runs the backbone on the batch described by ``plan``.

    Returns:
        The return value of ``forward``, or None when the forward stopped early (read ``plan.captured``).
    """
    hook_set = _hook_set(layers)
    hook_set.acquire()
    token = _ACTIVE_PLAN.set((id(hook_set), plan))
    try:
        return forward()
    except _EarlyExit:
        return None
    finally:
        _ACTIVE_PLAN.reset(token)
        hook_set.release()
