"""Explicit reference implementations used by the tests: a plain loop over the decoder layers (no engine hooks)."""

from __future__ import annotations

import torch

from sentence_transformers_tp.engine import find_attention_output_projection


def final_norm(model):
    """The final norm module of a backbone."""
    for name in ("norm", "final_layer_norm", "ln_f"):
        if hasattr(model, name):
            return getattr(model, name)
    raise AssertionError("no final norm")


def reference_rows(module, features, tp, target, attention_edit=None, attention_capture=None):
    """A plain loop over the decoder layers with TP written inline and plain torch hooks on the attention output
    projection (no engine): the last-token state at ``target``, or the captured projection input."""
    model, layers = module.model, module._layers
    input_ids, mask = features["input_ids"], features["attention_mask"]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    calls = {}

    def record(index):
        def hook(_module, args, kwargs):
            calls[index] = (args, kwargs)

        return hook

    handles = [layer.register_forward_pre_hook(record(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    rows = torch.arange(input_ids.shape[0])
    ph, last = features["placeholder_positions"], features["last_positions"]
    captured = {}
    handles = []
    if attention_edit is not None:
        layer, edit = attention_edit
        proj = find_attention_output_projection(layers[layer])
        handles.append(proj.register_forward_pre_hook(lambda m, args: (edit(args[0], rows, last), *args[1:])))
    if attention_capture is not None:
        proj = find_attention_output_projection(layers[attention_capture])

        def capture(_module, args):
            captured.setdefault("x", args[0][rows, last])

        handles.append(proj.register_forward_pre_hook(capture))
    args0, kwargs0 = calls[0]
    hidden = args0[0] if args0 else kwargs0["hidden_states"]
    try:
        with torch.no_grad():
            for index in range(len(layers)):
                if index == target:
                    break
                if tp[0] <= index < tp[1]:
                    hidden = hidden.clone()
                    hidden[rows, ph] = hidden[rows, last]
                args, kwargs = calls[index]
                kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                out = layers[index](hidden, *args[1:], **kwargs)
                hidden = out[0] if isinstance(out, tuple) else out
                if attention_capture is not None and "x" in captured:
                    return captured["x"]
            if target == len(layers):
                hidden = final_norm(model)(hidden)
    finally:
        for handle in handles:
            handle.remove()
    return hidden[rows, last]
