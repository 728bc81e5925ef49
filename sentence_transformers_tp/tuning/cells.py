"""Scored Settings and the one winner rule every search uses (:func:`choose_winner`), each cell read at its
:func:`best_layer`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from sentence_transformers_tp.settings import Setting

__all__ = ["Scored", "best_layer", "choose_winner", "describe"]

T = TypeVar("T")


def finite(value: float) -> float:
    """``value``, with ``nan`` as ``-inf`` (an undefined score never wins)."""
    return value if value == value else float("-inf")


def best_layer(scores: Sequence[float]) -> int:
    """The layer with the highest score (``nan`` ignored); ties go to the deeper layer."""
    values = np.array([finite(float(v)) for v in scores])
    return int(len(values) - 1 - np.argmax(values[::-1]))


def choose_winner(
    cells: Sequence[T],
    vanilla: T,
    min_gain: float = 0.0,
    *,
    changes: Callable[[T], int] | None = None,
    score: Callable[[T], float] | None = None,
) -> T:
    """The winner of scored cells: vanilla unless the best cell beats it by more than ``min_gain``; else, of the cells
    within ``min_gain`` of the best, the fewest changes win, then the higher score, then plan order.

    Args:
        cells: The cells, in plan order (vanilla among them or not).
        vanilla: The vanilla cell.
        min_gain: Points a cell must gain over vanilla, and a cell with more changes over a simpler one.
        changes: A cell's changes from vanilla (default ``cell.changes()``).
        score: A cell's score (default ``cell.best``).
    """
    changes = changes or (lambda cell: cell.changes())
    value = (lambda cell: finite(score(cell))) if score else (lambda cell: finite(cell.best))
    if not cells:
        return vanilla
    top = max(value(cell) for cell in cells)
    if not top - value(vanilla) > min_gain:
        return vanilla
    near = [cell for cell in cells if top - value(cell) <= min_gain]
    return min(near, key=lambda cell: (changes(cell), -value(cell)))


def describe(setting: Setting) -> str:
    """The label of reports and preset records: :meth:`~sentence_transformers_tp.settings.Setting.label` without the
    layer and token budget, e.g. ``ck + demo(Music) + TP 1..3 + CP L4 ns 1`` (TP before layers 1-3), with
    `` + mean of 3 layers`` for a ``layer_span`` of 3 (ending at the layer reported next to it)."""
    label = setting.replace(output_layer=-1, max_seq_length=None, layer_span=1).label().removesuffix(", L-1")
    return label + (f" + mean of {setting.layer_span} layers" if setting.layer_span != 1 else "")


@dataclass
class Scored:
    """A pass (or a query x document pair of passes) scored at every output layer.

    Args:
        settings: The Setting of the pass (one; two for a query x document cell).
        scores: One score per layer ``0..num_layers``.
        seconds: Wall time of the pass(es).
        data: Which data it was scored on (``"sample"``, ``"full"``, ``"second"``, ...).
    """

    settings: tuple[Setting, ...]
    scores: list[float]
    seconds: float = 0.0
    data: str = "sample"

    @property
    def setting(self) -> Setting:
        """The (first) Setting."""
        return self.settings[0]

    @property
    def best_layer(self) -> int:
        """The best layer (ties: the deeper one)."""
        return best_layer(self.scores)

    @property
    def best(self) -> float:
        """The score at :attr:`best_layer`."""
        return float(self.scores[self.best_layer])

    def changes(self) -> int:
        """Changes from vanilla PromptEOL, summed over the Settings."""
        return sum(setting.changes() for setting in self.settings)
