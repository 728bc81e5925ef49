"""The per-forward settings of a :class:`~sentence_transformers_tp.module.TokenPrependingTransformer` and the
engine plans they give: which interventions (Token Prepending, Contrastive Prompting) a forward applies.

``ForwardSettings`` is the engine's projection of a :class:`~sentence_transformers_tp.settings.Setting`
(:meth:`Setting.forward_settings`), which validates it. Adding an intervention means writing its
:class:`~sentence_transformers_tp.engine.Intervention` subclass, a field here and its field and check in
:class:`~sentence_transformers_tp.settings.Setting`; ``encode``, the tuner and the evaluators all run through
:meth:`ForwardSettings.plan`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from sentence_transformers_tp.contrastive import CP_PROMPT, ContrastivePrompting
from sentence_transformers_tp.engine import Intervention, Plan
from sentence_transformers_tp.prepending import TokenPrepending

__all__ = ["ForwardSettings"]


@dataclass(frozen=True)
class ForwardSettings:
    """What a forward does besides running the prompt: the TP band and Contrastive Prompting.

    Args:
        tp_start: First decoder layer (0-based) whose placeholder is replaced.
        tp_exit: First decoder layer after ``tp_start`` without replacement; ``tp_exit <= tp_start`` is TP off.
        cp_layer: Decoder layer (0-based) of Contrastive Prompting, or None for no CP.
        cp_alpha: CP scale (``"ns"`` mode).
        cp_mode: ``"ns"`` (norm scaling) or ``"nr"`` (norm recovering).
        cp_prompt: The auxiliary prompt template (``{sentence}`` slot, optional ``{placeholder}`` slot).
    """

    tp_start: int = 1
    tp_exit: int = 1
    cp_layer: int | None = None
    cp_alpha: float = 1.0
    cp_mode: str = "ns"
    cp_prompt: str = CP_PROMPT

    @property
    def tp_enabled(self) -> bool:
        """Whether Token Prepending is on."""
        return self.tp_exit > self.tp_start

    @property
    def cp_enabled(self) -> bool:
        """Whether Contrastive Prompting is on."""
        return self.cp_layer is not None

    def replace(self, **changes: Any) -> ForwardSettings:
        """A copy with some fields changed.

        Args:
            **changes: Field values.

        Returns:
            The new settings.
        """
        return dataclasses.replace(self, **changes)

    def interventions(self, auxiliary: torch.Tensor | None = None) -> tuple[Intervention, ...]:
        """The interventions of the main forward.

        Args:
            auxiliary: ``(rows, d)`` auxiliary attention inputs (needed when CP is on; see :meth:`auxiliary_plan`).

        Returns:
            The interventions, TP first.
        """
        out: list[Intervention] = []
        if self.tp_enabled:
            out.append(TokenPrepending(self.tp_start, self.tp_exit))
        if self.cp_enabled:
            if auxiliary is None:
                raise ValueError("Contrastive Prompting needs the auxiliary prompt's attention inputs.")
            out.append(ContrastivePrompting(self.cp_layer, auxiliary, float(self.cp_alpha), self.cp_mode))
        return tuple(out)

    def plan(self, capture: tuple[int, ...], auxiliary: torch.Tensor | None = None) -> Plan:
        """The engine plan of the main forward.

        Args:
            capture: Layers to capture (resolved ``hidden_states`` indices).
            auxiliary: See :meth:`interventions`.

        Returns:
            The plan.
        """
        return Plan(capture=capture, interventions=self.interventions(auxiliary))

    def auxiliary_plan(self) -> Plan:
        """The engine plan of the CP auxiliary forward: TP as in the main forward, stopped at ``cp_layer``'s
        attention output projection, whose input at the last token it captures."""
        if self.cp_layer is None:
            raise ValueError("Contrastive Prompting is off (cp_layer is None).")
        tp = (TokenPrepending(self.tp_start, self.tp_exit),) if self.tp_enabled else ()
        return Plan(interventions=tp, capture_attention_input=self.cp_layer)
