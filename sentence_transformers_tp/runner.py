"""Run preprocessed prompt rows through the engine: whole, or each template-prefix group on top of its cached
prefix keys/values (:mod:`sentence_transformers_tp.prefix_cache`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sentence_transformers_tp import engine
from sentence_transformers_tp.engine import Plan
from sentence_transformers_tp.prefix_cache import PrefixGroup, PrefixKVCache

__all__ = ["plan_depth", "run_rows"]


def plan_depth(plan: Plan) -> int:
    """Number of decoder layers a forward with ``plan`` runs."""
    attention = plan.capture_attention_input
    return attention + 1 if attention is not None else max(plan.capture)


def run_rows(
    model: nn.Module,
    layers: Sequence[nn.Module],
    features: dict[str, Any],
    plan: Plan,
    cache: PrefixKVCache | None = None,
) -> torch.Tensor:
    """Run every row of preprocessed features through the engine with ``plan``; with a cache, each prefix group runs
    on top of its cached prefix (built on first use), the other rows as they are.

    Args:
        model: The backbone.
        layers: Its decoder layers.
        features: Rows from ``TokenPrependingTransformer.preprocess`` (the main or the auxiliary prompts).
        plan: The engine plan (interventions restricted per sub-batch with :meth:`Plan.take`).
        cache: The prefix cache to use, or None to run every row whole.

    Returns:
        Per row in batch order: the captured layer states ``(rows, n_capture, hidden)``, or the captured attention
        inputs ``(rows, d)`` for an auxiliary plan.
    """
    device = model.device
    input_ids = features["input_ids"].to(device)
    attention = plan.capture_attention_input is not None

    def run(rows: torch.Tensor | None, **inputs: Any) -> torch.Tensor:
        captured = engine.run(model, layers, plan if rows is None else plan.take(rows), **inputs)
        return captured.attention_input if attention else captured.layers

    if cache is None or "prefix_groups" not in features:
        return run(
            None,
            input_ids=input_ids,
            attention_mask=features["attention_mask"].to(device),
            placeholder_positions=features["placeholder_positions"].to(device),
            last_positions=features["last_positions"].to(device),
        )
    depth = plan_depth(plan)
    groups: list[PrefixGroup] = features["prefix_groups"]
    context = cache.sync(model)
    results: list[tuple[torch.Tensor, torch.Tensor]] = []
    for group in groups:
        # The forward runs decoder layers 0..depth-1: those are the prefix layers needed.
        entry = cache.get_or_build(model, layers, group.prefix_ids, depth, context, device)
        group = group.to(device)
        n, p = group.input_ids.shape[0], group.prefix_length
        mask = group.attention_mask
        states = run(
            group.rows,
            input_ids=group.input_ids,
            attention_mask=torch.cat([mask.new_ones((n, p)), mask], dim=1),
            placeholder_positions=group.placeholder_positions,
            last_positions=group.last_positions,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0) + p,
            cache=entry.batch_cache(n, model.config),
        )
        results.append((group.rows, states))
    rest = features["prefix_rest"]
    if rest:
        rows = torch.tensor(rest, dtype=torch.long, device=device)
        states = run(
            rows,
            input_ids=input_ids[rows],
            attention_mask=features["attention_mask"].to(device)[rows],
            placeholder_positions=features["placeholder_positions"].to(device)[rows],
            last_positions=features["last_positions"].to(device)[rows],
        )
        results.append((rows, states))
    first = results[0][1]
    out = first.new_empty((input_ids.shape[0], *first.shape[1:]))
    for rows, states in results:
        out[rows.to(out.device)] = states.to(out.device)
    return out
