"""Contrastive Prompting (CP; Cheng et al. 2025): steer the last token away from an auxiliary prompt's, as one
:class:`~sentence_transformers_tp.engine.Intervention`.

Two forwards per sentence (BOOSTERS.md §3):

1. the auxiliary prompt (default: the "irrelevant information" prompt) runs up to decoder layer ``cp_layer``
   (0-based) and stops there; the engine records the input of that layer's attention output projection (the
   concatenated per-head attention outputs, before ``W_O``) at the last token: ``aux``;
2. the normal prompt runs with :class:`ContrastivePrompting`, which replaces the same projection input ``main`` at
   the last token of the same layer by

   - ``"ns"`` (norm scaling, the default): ``alpha * (main - aux)``;
   - ``"nr"`` (norm recovering): ``(main - aux) * ||main|| / (||main - aux|| + 1e-7)`` (``alpha`` unused).

Only the last position changes; the result goes through ``W_O`` and the residual as usual. The projection is found
per family by :func:`~sentence_transformers_tp.engine.find_attention_output_projection` (``o_proj``, ``dense``,
``out_proj``, ...). CP composes with Token Prepending in the same forward; the auxiliary prompt gets the same TP
band (its placeholder goes before its sentence like in every other prompt).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from sentence_transformers_tp.engine import Batch, Intervention

__all__ = ["CP_MODES", "CP_PROMPT", "ContrastivePrompting"]

#: The auxiliary prompt of the CP code (the only one there), with the TP placeholder slot before the sentence.
CP_PROMPT = 'The irrelevant information of this sentence : {placeholder} "{sentence}" means in one word:"'
#: Norm scaling and norm recovering.
CP_MODES = ("ns", "nr")
_EPS = 1e-7


@dataclass(frozen=True, eq=False)
class ContrastivePrompting(Intervention):
    """Subtract the auxiliary prompt's attention-output-projection input at the last token (see the module doc).

    Args:
        layer: The decoder layer (0-based) whose attention output projection is edited.
        auxiliary: ``(rows, heads * head_dim)`` auxiliary projection inputs, one per row of the forward.
        alpha: Scale of the difference in ``"ns"`` mode.
        mode: ``"ns"`` or ``"nr"``.
    """

    layer: int
    auxiliary: torch.Tensor
    alpha: float = 1.0
    mode: str = "ns"

    def __post_init__(self) -> None:
        if self.mode not in CP_MODES:
            raise ValueError(f"cp_mode must be one of {CP_MODES}, got {self.mode!r}.")

    @property
    def attention_layers(self) -> frozenset[int]:
        """The one edited layer."""
        return frozenset({self.layer})

    def edit_attention_input(self, index: int, values: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """The projection input with the last token's row replaced (see the class docstring).

        Args:
            index: The decoder layer (0-based).
            values: ``(rows, seq, heads * head_dim)`` projection input.
            batch: Positions of the rows.

        Returns:
            A new tensor at ``layer``, else None.
        """
        if index != self.layer:
            return None
        rows = torch.arange(values.shape[0], device=values.device)
        last = batch.last_positions.to(values.device)
        main = values[rows, last]
        diff = main - self.auxiliary.to(device=values.device, dtype=values.dtype)
        if self.mode == "ns":
            new = self.alpha * diff
        else:
            new = diff * (main.norm(dim=-1, keepdim=True) / (diff.norm(dim=-1, keepdim=True) + _EPS))
        edited = values.clone()
        edited[rows, last] = new.to(values.dtype)
        return edited

    def take(self, rows: torch.Tensor) -> ContrastivePrompting:
        """This intervention for some rows of the batch.

        Args:
            rows: ``(n,)`` row indices.

        Returns:
            The intervention with the matching auxiliary rows.
        """
        return dataclasses.replace(self, auxiliary=self.auxiliary[rows.to(self.auxiliary.device)])
