"""Moved to :mod:`sentence_transformers_tp.tuning.retrieval`; these names stay importable from here for one release
(``choose_winner`` here is the old form over cell dicts scored by ``ndcg_at_10``)."""

from __future__ import annotations

from sentence_transformers_tp.tuning.retrieval import (
    DEFAULT_DOCUMENT_TEMPLATES,
    DEFAULT_QUERY_TEMPLATES,
    HEADLINE,
    RetrievalTuning,
    Side,
    task_settings_entry,
    tune_retrieval,
    write_task_settings,
)
from sentence_transformers_tp.tuning.retrieval import choose_winner_cell as choose_winner

__all__ = ["DEFAULT_DOCUMENT_TEMPLATES", "DEFAULT_QUERY_TEMPLATES", "HEADLINE", "RetrievalTuning", "Side"]
__all__ += ["choose_winner", "task_settings_entry", "tune_retrieval", "write_task_settings"]
