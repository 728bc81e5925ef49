"""The per-forward settings of a :class:`~sentence_transformers_tp.module.TokenPrependingTransformer` and the
engine plans they give: which interventions (Token Prepending, Contrastive Prompting) a forward applies.

Adding an intervention means writing its :class:`~sentence_transformers_tp.engine.Intervention` subclass and a field
here; ``encode``, the tuner and the evaluators all run through :meth:`ForwardSettings.plan`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from sentence_transformers_tp.contrastive import CP_MODES, CP_PROMPT, ContrastivePrompting
from sentence_transformers_tp.engine import Intervention, Plan
from sentence_transformers_tp.prepending import TokenPrepending

__all__ = ["ForwardSettings"]


def _is_int(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


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

    def validate(self, num_layers: int) -> None:
        """Check the settings against a backbone.

        Args:
            num_layers: Number of decoder layers.

        Raises:
            ValueError: On a setting of the wrong type or out of range.
        """
        for key in ("tp_start", "tp_exit"):
            if not _is_int(getattr(self, key)):
                raise ValueError(f"{key} must be an integer, got {getattr(self, key)!r}.")
        if self.tp_start < 0:
            raise ValueError(f"tp_start must be >= 0, got {self.tp_start}.")
        if self.tp_enabled and self.tp_exit > num_layers:
            raise ValueError(
                f"tp_exit={self.tp_exit} is larger than the number of decoder layers ({num_layers}); TP replaces the "
                f"placeholder before layers tp_start..tp_exit-1 (0-based)."
            )
        if self.cp_layer is not None and (not _is_int(self.cp_layer) or not 0 <= self.cp_layer < num_layers):
            raise ValueError(
                f"cp_layer must be None (no Contrastive Prompting) or a decoder layer 0..{num_layers - 1}, got "
                f"{self.cp_layer!r}."
            )
        if self.cp_mode not in CP_MODES:
            raise ValueError(f"cp_mode must be one of {CP_MODES}, got {self.cp_mode!r}.")
        if isinstance(self.cp_alpha, bool) or not isinstance(self.cp_alpha, (int, float)) or self.cp_alpha <= 0:
            raise ValueError(f"cp_alpha must be a positive number, got {self.cp_alpha!r}.")
        if not isinstance(self.cp_prompt, str) or self.cp_prompt.count("{sentence}") != 1:
            raise ValueError(f"cp_prompt must be a template with one {{sentence}} slot, got {self.cp_prompt!r}.")

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
