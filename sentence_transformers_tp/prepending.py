"""The Token Prepending mechanism, model-family agnostic: one :class:`~sentence_transformers_tp.engine.Intervention`.

Before each decoder layer whose index lies in ``[tp_start, tp_exit)``, the hidden state at the placeholder position
of that layer's input is replaced by the hidden state of the last real token of the same input (Fu et al., 2025;
TP_REFERENCE §1.4). The engine (:mod:`sentence_transformers_tp.engine`) applies it with a forward pre-hook on the
backbone's own decoder layers, so no modeling code is copied.

Layer discovery (:func:`find_decoder_layers` and friends) lives in the engine and is re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sentence_transformers_tp.engine import (
    Batch,
    Intervention,
    UnsupportedArchitectureError,
    active_hook_count,
    check_decoder_only,
    find_decoder_layers,
    resolve_output_layer,
)

__all__ = [
    "TokenPrepending",
    "UnsupportedArchitectureError",
    "active_hook_count",
    "check_decoder_only",
    "find_decoder_layers",
    "resolve_output_layer",
]


@dataclass(frozen=True)
class TokenPrepending(Intervention):
    """Replace the placeholder's hidden state by the last token's, before decoder layers ``tp_start..tp_exit-1``.

    Rows without a placeholder (position -1) are left unchanged. There is no host-device synchronisation (no
    ``nonzero`` / ``item``): on a GPU the host keeps queueing kernels ahead.

    Args:
        tp_start: First decoder layer (0-based) whose input gets the placeholder replaced.
        tp_exit: First decoder layer after ``tp_start`` whose input is no longer replaced; ``tp_exit <= tp_start``
            disables TP.
    """

    tp_start: int
    tp_exit: int

    @property
    def enabled(self) -> bool:
        """Whether any layer is edited."""
        return self.tp_exit > self.tp_start

    def edit_layer_input(self, index: int, hidden: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """The layer input with the placeholder row replaced, inside the TP band (see the class docstring).

        Args:
            index: The decoder layer (0-based).
            hidden: ``(rows, seq, hidden)`` input of the layer.
            batch: Positions of the rows.

        Returns:
            A new tensor, or None outside the band.
        """
        if not self.tp_start <= index < self.tp_exit:
            return None
        placeholder = batch.placeholder_positions.to(hidden.device)
        last = batch.last_positions.to(hidden.device)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        target = placeholder.clamp(min=0)
        # Rows without a placeholder (-1) rewrite their position 0 with its own value, i.e. stay unchanged.
        source = torch.where((placeholder >= 0)[:, None], hidden[rows, last], hidden[rows, target])
        # Write into a copy: the input tensor may already be recorded elsewhere (e.g. in output_hidden_states).
        replaced = hidden.clone()
        replaced[rows, target] = source
        return replaced
