"""Tuning: all-layer passes per :class:`~sentence_transformers_tp.settings.Setting` with one checkpoint store
(:mod:`~.passes`), scored by :mod:`~.objectives`, chosen by the one winner rule (:mod:`~.cells`) into one result base
(:mod:`~.result`). The searches are plans of Settings: :func:`tune` (``st-tp tune``), :func:`tune_joint`
(``st-tp tune-boosters``) and :func:`tune_retrieval` (``st-tp tune-retrieval``)."""

from __future__ import annotations

from sentence_transformers_tp.tuning.cells import Scored, best_layer, choose_winner, describe
from sentence_transformers_tp.tuning.joint import JointResult, combination_entry, tune_joint, write_combination
from sentence_transformers_tp.tuning.layers import (
    DEFAULT_MAX_TP_EXIT,
    TP_OFF,
    Choice,
    GridKey,
    TuningResult,
    default_tp_exits,
    parse_int_list,
    tune,
)
from sentence_transformers_tp.tuning.objectives import NDCGObjective, Objective, SpearmanObjective, score_layers
from sentence_transformers_tp.tuning.passes import PassStore, Search, as_module, encode_all_layers
from sentence_transformers_tp.tuning.result import Result
from sentence_transformers_tp.tuning.retrieval import (
    RetrievalTuning,
    task_settings_entry,
    tune_retrieval,
    write_task_settings,
)

__all__ = ["DEFAULT_MAX_TP_EXIT", "TP_OFF", "Choice", "GridKey", "JointResult", "NDCGObjective", "Objective"]
__all__ += ["PassStore", "Result", "RetrievalTuning", "Scored", "Search", "SpearmanObjective", "TuningResult"]
__all__ += ["as_module", "best_layer", "choose_winner", "combination_entry", "default_tp_exits", "describe"]
__all__ += ["encode_all_layers", "parse_int_list", "task_settings_entry", "tune", "tune_joint", "tune_retrieval"]
__all__ += ["score_layers", "write_combination", "write_task_settings"]
