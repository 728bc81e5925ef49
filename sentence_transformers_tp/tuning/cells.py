"""Scored Settings and the one winner rule every search uses.

* :func:`best_layer`: the best output layer of a pass; ties go to the **deeper** layer (the final normed output
  is the deepest, so an exact tie with it picks it).
* :func:`choose_winner`: the winner among scored cells (each at its best layer). It is never below the vanilla cell
  (always searched): vanilla wins unless the best cell beats it by more than ``min_gain``. Otherwise, among the
  cells within ``min_gain`` of the best, the one with the fewest changes from vanilla PromptEOL
  (:meth:`~sentence_transformers_tp.settings.Setting.changes`, summed over a cell's Settings) wins, then the higher
  score, then the one listed first by the plan (plans list simpler Settings first: TP off, narrower bands).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from sentence_transformers_tp.settings import CP_KEYS, LAYER_KEYS, Setting
from sentence_transformers_tp.templates import template_names

__all__ = ["Candidate", "Scored", "best_layer", "choose_winner", "combination_kwargs", "describe"]

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
    """The winner of scored cells (see the module docstring).

    Args:
        cells: The cells, in plan order (vanilla among them or not).
        vanilla: The vanilla cell.
        min_gain: Points a cell must gain over vanilla, and a cell with more changes over a simpler one.
        changes: A cell's changes from vanilla (default ``cell.changes()``).
        score: A cell's score (default ``cell.best``).

    Returns:
        The chosen cell.
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
    """A short label, e.g. ``ck + demo(Music) + TP 1..3 + CP L4 ns 1`` (``TP a..b``: replaced before layers a-b)."""
    names = template_names(setting.template)
    parts = ["+".join(names) if names else str(setting.template)]
    if setting.demonstrations:
        parts.append(f"demo({', '.join(demo.word for demo in setting.demonstrations)})")
    if setting.tp_enabled:
        parts.append(f"TP {setting.tp_start}..{setting.tp_exit - 1}")
    if setting.cp_enabled:
        parts.append(
            f"CP L{setting.cp_layer} {setting.cp_mode}" + (f" {setting.cp_alpha:g}" * (setting.cp_mode == "ns"))
        )
    return " + ".join(parts)


def combination_kwargs(setting: Setting, output_layer: int) -> dict[str, Any]:
    """Constructor arguments of a module with ``setting`` at ``output_layer``: a preset ``combination``'s keys, in
    the order presets write them."""
    keys = ["template", *LAYER_KEYS, *(["demonstrations"] if setting.demonstrations else [])]
    return setting.replace(output_layer=output_layer).to_config([*keys, *(CP_KEYS if setting.cp_enabled else [])])


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

    @property
    def candidate(self) -> Candidate:
        """Deprecated: the Setting as the old :class:`Candidate`."""
        return Candidate.from_setting(self.setting)


@dataclass(frozen=True)
class Candidate:
    """Deprecated (kept for one release): the joint search's old candidate type; use a Setting.

    Args:
        template: A built-in template name or a tuple of names (an ensemble).
        demonstration: ``(sentence, word)``, or None.
        tp: ``(tp_start, tp_exit)``, or None for TP off.
        cp: ``(cp_layer, cp_mode, cp_alpha)``, or None for no Contrastive Prompting.
    """

    template: str | tuple[str, ...]
    demonstration: tuple[str, str] | None = None
    tp: tuple[int, int] | None = None
    cp: tuple[int, str, float] | None = None

    def setting(self) -> Setting:
        """The Setting this candidate stands for."""
        tp_start, tp_exit = self.tp or (1, 1)
        cp = dict(zip(("cp_layer", "cp_mode", "cp_alpha"), self.cp)) if self.cp else {}
        demos = [self.demonstration] if self.demonstration else []
        return Setting(template=self.template, demonstrations=demos, tp_start=tp_start, tp_exit=tp_exit, **cp)

    @classmethod
    def from_setting(cls, setting: Setting) -> Candidate:
        """The candidate of a Setting (its first demonstration only)."""
        demo = setting.demonstrations[0] if setting.demonstrations else None
        return cls(
            setting.template,
            (demo.sentence, demo.word) if demo else None,
            (setting.tp_start, setting.tp_exit) if setting.tp_enabled else None,
            (setting.cp_layer, setting.cp_mode, setting.cp_alpha) if setting.cp_enabled else None,
        )

    @property
    def boosters(self) -> int:
        """The old booster count (ensemble, demonstration, TP, CP)."""
        return int(not isinstance(self.template, str)) + sum(
            x is not None for x in (self.demonstration, self.tp, self.cp)
        )

    def label(self) -> str:
        """See :func:`describe`."""
        return describe(self.setting())

    def module_kwargs(self, output_layer: int) -> dict[str, Any]:
        """See :func:`combination_kwargs`."""
        return combination_kwargs(self.setting(), output_layer)
