"""The data directory readers, at their evaluation-side name: everything lives in :mod:`sentence_transformers_tp.data`.

Kept so that ``from sentence_transformers_tp.evaluation.data import load_sts`` keeps working; the readers moved below
the model layer so that the model (centering sentences) reads the layout without importing the evaluation package.
"""

from __future__ import annotations

from sentence_transformers_tp.data import *  # noqa: F403
from sentence_transformers_tp.data import __all__  # noqa: F401
