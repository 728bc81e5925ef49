"""Moved to :mod:`sentence_transformers_tp.tuning.retrieval`; these names stay importable from here for one release."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sentence_transformers_tp.settings import Setting
from sentence_transformers_tp.templates import template_names
from sentence_transformers_tp.tuning.cells import choose_winner as winner_rule
from sentence_transformers_tp.tuning.retrieval import (
    DEFAULT_DOCUMENT_TEMPLATES,
    DEFAULT_QUERY_TEMPLATES,
    HEADLINE,
    RetrievalTuning,
    task_entry,
    task_settings_entry,
    tune_retrieval,
    write_task_settings,
)

__all__ = ["DEFAULT_DOCUMENT_TEMPLATES", "DEFAULT_QUERY_TEMPLATES", "HEADLINE", "RetrievalTuning", "Side"]
__all__ += ["choose_winner", "task_settings_entry", "tune_retrieval", "write_task_settings"]


def choose_winner(
    cells: Sequence[dict[str, Any]],
    vanilla: dict[str, Any],
    changes: Callable[[dict[str, Any]], int],
    min_gain: float,
) -> dict[str, Any]:
    """Deprecated: :func:`~sentence_transformers_tp.tuning.cells.choose_winner` over cells scored by ``ndcg_at_10``."""
    return winner_rule(cells, vanilla, min_gain, changes=changes, score=lambda cell: cell["ndcg_at_10"])


@dataclass(frozen=True)
class Side:
    """Deprecated (kept for one release; use a :class:`~sentence_transformers_tp.settings.Setting`): a retrieval side.

    Args:
        template: A template spec (a tuple for an ensemble).
        tp: ``(tp_start, tp_exit)``, or None for TP off.
        demonstrations: ``((sentence, word), ...)``.
    """

    template: str | tuple[str, ...]
    tp: tuple[int, int] | None = None
    demonstrations: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_setting(cls, setting: Setting) -> Side:
        """The side of a Setting."""
        tp = (setting.tp_start, setting.tp_exit) if setting.tp_enabled else None
        return cls(setting.template, tp, tuple((d.sentence, d.word) for d in setting.demonstrations))

    def setting(self) -> Setting:
        """The Setting of this side."""
        start, end = self.tp or (1, 1)
        demos = [list(pair) for pair in self.demonstrations]
        return Setting(template=self.template, demonstrations=demos, tp_start=start, tp_exit=end)

    def templates(self) -> tuple[str, ...]:
        """The resolved template strings, with the demonstrations in front."""
        return self.setting().templates()

    @property
    def changes(self) -> int:
        """See :meth:`~sentence_transformers_tp.settings.Setting.changes`."""
        return self.setting().changes()

    def label(self) -> str:
        """The old label, e.g. ``knowledge + demo 'Dog' + TP 1-2``."""
        names = template_names(self.template)
        text = "+".join(names) if names is not None else "user template"
        if self.demonstrations:
            text += " + demo " + ", ".join(repr(word) for _, word in self.demonstrations)
        return text + (f" + TP {self.tp[0]}-{self.tp[1] - 1}" if self.tp is not None else "")

    def entry(self, output_layer: int, max_seq_length: int | None = None) -> dict[str, Any]:
        """The ``task_settings`` entry of this side at one output layer."""
        return task_entry(self.setting().replace(max_seq_length=max_seq_length), output_layer)
