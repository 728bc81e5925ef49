"""Evaluation of sentence embeddings with the TP paper's protocol.

* :func:`evaluate_sts`: STS12-16 ("all" setting), STS-B, SICK-R; cosine vs gold, Spearman x 100.
* :func:`evaluate_transfer`: SentEval transfer tasks (MR, CR, SUBJ, MPQA, SST2, TREC, MRPC), logistic regression.
* :func:`local_sts_tasks`: the same STS suite as offline MTEB 2.x tasks for ``mteb.evaluate``.
* :func:`evaluate_retrieval`: retrieval on a BEIR-layout folder (nDCG@10, MRR@10, Recall@10/100), queries through
  ``encode_query`` and documents through ``encode_document``; :func:`local_retrieval_task` is the same as an offline
  MTEB retrieval task.
* :func:`to_model_meta`: the ``mteb.ModelMeta`` of a TP model (leaderboard metadata, with a loader).
* :func:`add_evaluation_results`: ``st-tp evaluate --json`` rows as the model card's ``model-index`` and Evaluation
  section (:mod:`sentence_transformers_tp.evaluation.model_index`).
* :func:`plan_variants` / :func:`iter_variants`: the model as configured plus the same template without TP (same
  and usual output layer), sharing one loaded backbone.
* :func:`compare` / :func:`to_markdown` / :func:`result_to_dict`: tables and JSON (schema in
  :mod:`sentence_transformers_tp.evaluation.report`).

The data layout is described in :mod:`sentence_transformers_tp.data`. Only numpy is imported eagerly;
scikit-learn, mteb and datasets are imported when the corresponding function runs.
"""

from __future__ import annotations

from sentence_transformers_tp.data import (
    STS_DISPLAY_NAMES,
    STS_SCORE_RANGES,
    STS_TASKS,
    TRANSFER_DISPLAY_NAMES,
    TRANSFER_TASKS,
    STSData,
    TransferData,
    list_sts_splits,
    list_transfer_tasks,
    load_sts,
    load_transfer,
    read_sts_tsv,
    read_transfer_tsv,
)

from .model_index import add_evaluation_results
from .model_meta import evaluate_to_results_folder, to_model_meta
from .mteb_retrieval import local_retrieval_task
from .mteb_tasks import LOCAL_TASK_NAMES, local_sts_task_class, local_sts_tasks
from .report import compare, load_result, mteb_result_to_dict, result_to_dict, save_result, to_markdown
from .retrieval import (
    BEIRData,
    RetrievalResult,
    RetrievalTaskResult,
    evaluate_retrieval,
    load_beir,
    retrieval_table,
)
from .sts import STSResult, STSTaskResult, cosine_scores, encode_unique, evaluate_sts, score_sts, spearman
from .transfer import (
    SENTEVAL_C_GRID,
    TransferResult,
    TransferTaskResult,
    evaluate_transfer,
    evaluate_transfer_task,
    pair_features,
)
from .variants import Variant, apply_variant, iter_variants, plan_variants

__all__ = [
    "LOCAL_TASK_NAMES",
    "SENTEVAL_C_GRID",
    "STS_DISPLAY_NAMES",
    "STS_SCORE_RANGES",
    "STS_TASKS",
    "TRANSFER_DISPLAY_NAMES",
    "TRANSFER_TASKS",
    "BEIRData",
    "RetrievalResult",
    "RetrievalTaskResult",
    "STSData",
    "STSResult",
    "STSTaskResult",
    "TransferData",
    "TransferResult",
    "TransferTaskResult",
    "Variant",
    "add_evaluation_results",
    "apply_variant",
    "compare",
    "cosine_scores",
    "encode_unique",
    "evaluate_retrieval",
    "evaluate_sts",
    "evaluate_to_results_folder",
    "evaluate_transfer",
    "evaluate_transfer_task",
    "iter_variants",
    "list_sts_splits",
    "list_transfer_tasks",
    "load_beir",
    "load_result",
    "load_sts",
    "load_transfer",
    "local_retrieval_task",
    "local_sts_task_class",
    "local_sts_tasks",
    "mteb_result_to_dict",
    "pair_features",
    "plan_variants",
    "read_sts_tsv",
    "read_transfer_tsv",
    "result_to_dict",
    "retrieval_table",
    "save_result",
    "score_sts",
    "spearman",
    "to_markdown",
    "to_model_meta",
]
