"""Moved to :mod:`sentence_transformers_tp.tuning.joint`; these names stay importable from here for one release."""

from __future__ import annotations

from sentence_transformers_tp.tuning.cells import Candidate, Scored
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
