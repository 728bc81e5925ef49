"""The ``model-index`` of a Token Prepending model card: ``st-tp evaluate --json`` results as hub metadata.

:func:`add_evaluation_results` attaches result rows to the card of a TP model: the card's ``model-index`` (in the
form sentence-transformers writes for its evaluators: metric values as fractions, e.g. ``spearman_cosine: 0.7653``)
and its Evaluation section (one table per result kind)::

    from sentence_transformers_tp.evaluation import add_evaluation_results

    model = SentenceTransformer("my-tp-model", trust_remote_code=True)
    add_evaluation_results(model, "results.json")  # rows of `st-tp evaluate --model my-tp-model --json results.json`
    model.push_to_hub("org/my-tp-model")

Only rows measured with the model's own setting are accepted (a row of another setting, e.g. a
``--compare-vanilla`` row, is skipped; a row whose setting differs from the model's is an error). The card itself
is :class:`~sentence_transformers_tp.model_card.TokenPrependingModelCardData`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub.repocard_data import EvalResult

from sentence_transformers_tp.data import STS_DISPLAY_NAMES, TRANSFER_DISPLAY_NAMES
from sentence_transformers_tp.records import ROLE_MODEL, describe, label

from .download import SOURCES
from .report import compare, validate_result_dict
from .retrieval import retrieval_table

#: ``(task type, task name)`` of the model-index per result kind (sentence-transformers' evaluator descriptions).
TASK_TYPES: dict[str, tuple[str, str]] = {
    "sts": ("semantic-similarity", "Semantic Similarity"),
    "transfer": ("text-classification", "Classification"),
    "retrieval": ("information-retrieval", "Information Retrieval"),
}

#: Model-index metrics of each result kind: ``(entry key, metric type, metric name)``; values are entry / 100.
METRICS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "sts": (("spearman", "spearman_cosine", "Spearman Cosine"),),
    "transfer": (("accuracy", "accuracy", "Accuracy"),),
    "retrieval": (
        ("ndcg_at_10", "cosine_ndcg@10", "Cosine Ndcg@10"),
        ("mrr_at_10", "cosine_mrr@10", "Cosine Mrr@10"),
        ("recall_at_10", "cosine_recall@10", "Cosine Recall@10"),
        ("recall_at_100", "cosine_recall@100", "Cosine Recall@100"),
    ),
    "mteb": (("spearman", "main_score", "Main Score"), ("score", "main_score", "Main Score")),
}

#: Result-settings keys that mark a run on part of the data.
SUBSET_SETTINGS: tuple[str, ...] = ("limit", "sample", "corpus_sample")


def _task_key(name: str) -> str:
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    key = key[len("local") :] if key.startswith("local") else key
    return {"stsbenchmark": "stsb", "sick": "sickr", "sickrelatedness": "sickr"}.get(key, key)


def _dataset_of(task: str) -> tuple[str, str]:
    """``(dataset type, dataset name)`` of a result task: the hub dataset ``st-tp data`` reads it from."""
    key = _task_key(task)
    display = {**STS_DISPLAY_NAMES, **TRANSFER_DISPLAY_NAMES, "scifact": "SciFact"}
    for source_key, name in display.items():
        if name == task:
            key = source_key
    if key in SOURCES:
        parts = next(iter(SOURCES[key].files.values()))
        return parts[0].dataset, display.get(key, task)
    return task, task


def _subset_args(row: Mapping[str, Any]) -> dict[str, Any]:
    settings = row.get("settings") or {}
    return {key: settings[key] for key in SUBSET_SETTINGS if settings.get(key) is not None}


def eval_results_of(row: Mapping[str, Any]) -> list[EvalResult]:
    """The model-index entries of one ``st-tp evaluate`` result dict.

    Args:
        row: A result dict (see :mod:`sentence_transformers_tp.evaluation.report`).

    Returns:
        One ``huggingface_hub.EvalResult`` per task and metric (values as fractions; a run on part of the data
        records its ``limit`` / ``sample`` / ``corpus_sample`` as ``dataset_args``).
    """
    kind = str(row.get("kind"))
    results = []
    for task, entry in row["tasks"].items():
        dataset_type, dataset_name = _dataset_of(task)
        if kind == "mteb":
            task_kind = "sts" if "spearman" in entry else "retrieval"
        else:
            task_kind = kind
        task_type, task_name = TASK_TYPES.get(task_kind, (task_kind, task_kind.title()))
        for key, metric_type, metric_name in METRICS.get(kind, ()):
            value = entry.get(key)
            if value is None:
                continue
            results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=str(entry.get("split")),
                    dataset_args=_subset_args(row) or None,
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=round(float(value) / 100.0, 6),
                )
            )
    return results


def evaluation_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The card's Evaluation section body: one table per result kind, each row labelled with its setting.

    Args:
        rows: The card's ``evaluation_results``.

    Returns:
        Markdown.
    """
    titles = {"sts": "STS (Spearman x 100)", "transfer": "Transfer (accuracy)", "mteb": "Via MTEB (main score x 100)"}
    blocks = []
    for kind in ("sts", "transfer", "retrieval", "mteb"):
        chosen = [row for row in rows if row.get("kind") == kind]
        if not chosen:
            continue
        if kind == "retrieval":
            table = retrieval_table([(row.get("label") or label(row["config"]), row) for row in chosen])
            title = "Retrieval (x 100)"
        else:
            table = compare(
                [(row.get("label") or label(row["config"]), row) for row in chosen], label_header="Setting"
            )
            title = titles[kind]
        notes = [
            f"{', '.join(f'{k}={v}' for k, v in _subset_args(row).items())} ({row.get('label') or kind})"
            for row in chosen
            if _subset_args(row)
        ]
        note = f"\n\nMeasured on part of the data: {'; '.join(notes)}." if notes else ""
        blocks.append(f"### {title}\n\n{table.rstrip()}{note}")
    return "\n\n".join(blocks)


def _load_rows(results: Any) -> tuple[str, list[dict[str, Any]]]:
    """``(source name, rows)`` of a results file, one result dict, or a list of them."""
    if isinstance(results, (str, Path)):
        path = Path(results)
        data = json.loads(path.read_text(encoding="utf-8"))
        return str(path), data if isinstance(data, list) else [data]
    if isinstance(results, Mapping):
        return "the results", [dict(results)]
    return "the results", [dict(row) for row in results]


def add_evaluation_results(model: Any, results: Any, *, allow_subsets: bool = False) -> list[dict[str, Any]]:
    """Attach ``st-tp evaluate --json`` results to the model card (its ``model-index`` and Evaluation section).

    Rows of other settings (the ``--compare-vanilla`` rows, whose ``config.roles`` lack ``"model"``) are skipped.
    Every kept row must have been measured with the model's own setting (:func:`~sentence_transformers_tp.records.
    describe`), so a card never shows another setting's scores.

    Args:
        model: The ``SentenceTransformer`` (TP module first) whose card gets the results.
        results: A JSON file written by ``st-tp evaluate --json``, one result dict, or a list of them.
        allow_subsets: Accept rows measured on part of the data (``--limit`` / ``--sample`` /
            ``--corpus-sample``; recorded as ``dataset_args``). By default they are refused: leaderboard-style
            metadata reports whole datasets.

    Returns:
        The rows attached.

    Raises:
        ValueError: For a row without a setting record, a row of another setting, a row on part of the data
            (unless ``allow_subsets``), or when no row is of the model's setting.
    """
    # sentence-transformers is imported only here: importing the evaluation package stays cheap.
    from sentence_transformers_tp.model_card import TokenPrependingModelCardData

    card = getattr(model, "model_card_data", None)
    if not isinstance(card, TokenPrependingModelCardData):
        raise ValueError("add_evaluation_results needs a sentence-transformers-tp model (TP module first)")
    source, rows = _load_rows(results)
    own = describe(model)
    attached = []
    for number, row in enumerate(rows, start=1):
        validate_result_dict(row)
        config = row.get("config") or {}
        if ROLE_MODEL not in config.get("roles", [ROLE_MODEL]):
            continue
        where = f"{source}, row {number} ({row.get('label') or row.get('kind')})"
        if "template" not in config or "tp_start" not in config:
            raise ValueError(f"{where} has no setting record in 'config'; use results of st-tp evaluate --json")
        differ = sorted(key for key in own if key in config and config[key] != own[key])
        missing = sorted(key for key in ("demonstrations", "cp_layer", "task_settings") if key not in config)
        if differ or missing:
            raise ValueError(
                f"{where} was measured with {label(config) if not missing else 'a setting without ' + ', '.join(missing)}"
                f", but the model is {label(own)} (differing: {', '.join(differ or missing)}); evaluate this model"
            )
        if _subset_args(row) and not allow_subsets:
            raise ValueError(
                f"{where} was measured on part of the data ({_subset_args(row)}); the card reports whole datasets "
                "(rerun without --limit / --sample / --corpus-sample, or pass allow_subsets=True)"
            )
        attached.append(json.loads(json.dumps(row)))
    if not attached:
        raise ValueError(f"{source} has no result of the model's own setting ({label(own)})")
    card.evaluation_results.extend(row for row in attached if row not in card.evaluation_results)
    card.evaluation_index = [result for row in card.evaluation_results for result in eval_results_of(row)]
    card.evaluation_section = evaluation_markdown(card.evaluation_results)
    # A loaded model re-saves the README it was loaded with (sentence-transformers keeps its text unless the model
    # was trained); the card must be generated again to carry the results.
    if getattr(model, "_model_card_text", None):
        model._model_card_text = None
    return attached


__all__ = [
    "METRICS",
    "SUBSET_SETTINGS",
    "TASK_TYPES",
    "add_evaluation_results",
    "eval_results_of",
    "evaluation_markdown",
]
