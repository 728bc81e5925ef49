"""Moved to :mod:`sentence_transformers_tp.tuning.joint`; these names stay importable from here for one release."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sentence_transformers_tp.settings import Setting
from sentence_transformers_tp.tuning.cells import Scored, describe
from sentence_transformers_tp.tuning.joint import (
    DEFAULT_CP_ALPHAS,
    DEFAULT_TEMPLATES,
    JointResult,
    combination_entry,
    tune_joint,
    write_combination,
)

__all__ = ["DEFAULT_CP_ALPHAS", "DEFAULT_TEMPLATES", "Candidate", "JointResult", "Scored", "combination_entry"]
__all__ += ["tune_joint", "write_combination"]


@dataclass(frozen=True)
class Candidate:
    """Deprecated (kept for one release; use a :class:`~sentence_transformers_tp.settings.Setting`): a joint candidate.

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
        tp = (setting.tp_start, setting.tp_exit) if setting.tp_enabled else None
        cp = (setting.cp_layer, setting.cp_mode, setting.cp_alpha) if setting.cp_enabled else None
        return cls(setting.template, (demo.sentence, demo.word) if demo else None, tp, cp)

    @property
    def boosters(self) -> int:
        """The old booster count (ensemble, demonstration, TP, CP)."""
        ensemble = not isinstance(self.template, str)
        return int(ensemble) + sum(x is not None for x in (self.demonstration, self.tp, self.cp))

    def label(self) -> str:
        """See :func:`~sentence_transformers_tp.tuning.cells.describe`."""
        return describe(self.setting())

    def module_kwargs(self, output_layer: int) -> dict[str, Any]:
        """Constructor arguments of the candidate at ``output_layer`` (a preset ``combination``)."""
        return self.setting().replace(output_layer=output_layer).combination()
