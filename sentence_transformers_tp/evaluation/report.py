"""Result serialisation and markdown tables.

Every evaluation result serialises (``to_dict()`` / :func:`result_to_dict`) to one JSON object::

    {
      "kind": "sts" | "transfer" | "mteb",         # which evaluator produced it
      "metric": "spearman" | "accuracy" | "main_score",
      "model": "org/name" | null,                   # free text; model.model_card_data.model_name by default
      "config": {...},                              # the model's setting: records.describe() (template, demos,
                                                    #   TP band, CP, output layer, task settings, ...) or free-form
      "settings": {...},                            # how the evaluation ran (limit, folds, text variant, ...)
      "tasks": {
        "<task>": {                                 # display name: STS12..STS16, STS-B, SICK-R, MR, ..., MRPC
          "split": "test",                          # split as on disk ("dev", "trial", ...) or "10-fold CV"
          "spearman": 76.53 | null,                 # STS: Spearman x 100 ("all" setting), null if undefined
          "n_pairs": 3108,                          # STS: pairs scored (null for results converted from MTEB)
          "subsets": {"<subset>": {"spearman": 71.2, "n_pairs": 750}},   # STS12-16 per-subset info, else {}
          ...                                       # transfer tasks: "accuracy", "dev_accuracy", "n_train",
                                                    #   "n_test", "n_classes", "C", "kfold", "inner_kfold";
                                                    # all evaluators may add "path", "n_encoded", "seconds"
        }
      },
      "avg": 75.1 | null                            # plain mean of the task scores present
    }

Scores are percentages (x 100). ``NaN`` never appears: undefined correlations are ``null``. A task's table value is
its ``"spearman"``, else ``"accuracy"``, else ``"score"`` entry (see :func:`task_score`).

:func:`to_markdown` renders one result, :func:`compare` several ``(label, result)`` pairs as one table with one row
per model configuration and one column per task plus ``Avg`` (each row's own mean over its tasks).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sentence_transformers_tp.data import STS_DISPLAY_NAMES, TRANSFER_DISPLAY_NAMES
from sentence_transformers_tp.records import SETTING_KEYS
from sentence_transformers_tp.records import label as setting_label

from .variants import ROLE_VANILLA_USUAL_LAYER

SCORE_KEYS: tuple[str, ...] = ("spearman", "accuracy", "score")
"""Keys looked up, in order, for a task's main score."""

KNOWN_COLUMNS: tuple[str, ...] = (*STS_DISPLAY_NAMES.values(), *TRANSFER_DISPLAY_NAMES.values())
"""Column order of tables: the STS suite, then the transfer tasks, then anything else in order of appearance."""

_MTEB_NAMES: dict[str, str] = {
    "STS12": "STS12",
    "STS13": "STS13",
    "STS14": "STS14",
    "STS15": "STS15",
    "STS16": "STS16",
    "STSBenchmark": "STS-B",
    "SICK-R": "SICK-R",
}


def _clean(value: Any) -> Any:
    """Recursively replace float NaN/inf by None and tuples by lists (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return _clean(value.item())
    return value


def task_score(entry: Mapping[str, Any]) -> float | None:
    """Return the main score of one task entry (``spearman``, else ``accuracy``, else ``score``).

    Args:
        entry: A ``tasks[<task>]`` entry of a result dict.

    Returns:
        The score, or ``None`` when absent/undefined.
    """
    for key in SCORE_KEYS:
        if key in entry:
            value = entry[key]
            return None if value is None or not math.isfinite(float(value)) else float(value)
    return None


def _mean(values: Iterable[float | None]) -> float | None:
    items = list(values)
    if not items or any(v is None for v in items):
        return None
    return sum(items) / len(items)  # type: ignore[arg-type]


def mteb_result_to_dict(model_result: Any, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Convert an ``mteb.evaluate`` result (``ModelResult``) to the result schema.

    Local tasks (``LocalSTS12``, ``LocalSTSBenchmark``, ``LocalSICK-R``) and MTEB's own ``STS12`` ...
    ``STSBenchmark``/``SICK-R`` map to the suite's column names; other tasks keep their MTEB names. The ``test``
    split is reported when present (else the first split); a task's score is its main score x 100, averaged over
    HF subsets, which are also listed under ``"subsets"``.

    Args:
        model_result: The object returned by ``mteb.evaluate``.
        config: Free-form configuration to record.

    Returns:
        A result dict with ``"kind": "mteb"``.
    """
    tasks: dict[str, dict[str, Any]] = {}
    for task_result in model_result.task_results:
        name = str(task_result.task_name)
        bare = name[len("Local") :] if name.startswith("Local") else name
        column = _MTEB_NAMES.get(bare, name)
        splits = dict(task_result.scores)
        if not splits:
            continue
        split = "test" if "test" in splits else next(iter(splits))
        entries = splits[split]
        main_scores = [float(e["main_score"]) * 100.0 for e in entries]
        main_name = "spearman" if column in STS_DISPLAY_NAMES.values() else "score"
        subsets = (
            {str(e.get("hf_subset", i)): {main_name: 100.0 * float(e["main_score"])} for i, e in enumerate(entries)}
            if len(entries) > 1
            else {}
        )
        tasks[column] = {
            "split": split,
            main_name: _mean(main_scores),
            "n_pairs": None,
            "subsets": subsets,
            "mteb_task": name,
        }
    result = {
        "kind": "mteb",
        "metric": "main_score",
        "model": getattr(model_result, "model_name", None),
        "config": dict(config or {}),
        "settings": {"model_revision": getattr(model_result, "model_revision", None)},
        "tasks": tasks,
        "avg": _mean(task_score(e) for e in tasks.values()),
    }
    return _clean(result)


def result_to_dict(
    result: Any, *, model: str | None = None, config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Normalise any supported result to a strict-JSON dict of the documented schema.

    Args:
        result: An :class:`~sentence_transformers_tp.evaluation.sts.STSResult`,
            :class:`~sentence_transformers_tp.evaluation.transfer.TransferResult`, an MTEB ``ModelResult`` or a
            dict already in the schema.
        model: Overrides the ``"model"`` field when given.
        config: Merged over the ``"config"`` field when given.

    Returns:
        A new dict (the input is not modified).

    Raises:
        TypeError: For an unsupported object.
        ValueError: If a dict does not follow the schema.
    """
    if hasattr(result, "to_dict") and callable(result.to_dict):
        data = result.to_dict()
    elif hasattr(result, "task_results"):
        data = mteb_result_to_dict(result)
    elif isinstance(result, Mapping):
        data = json.loads(json.dumps(_clean(result)))
    else:
        raise TypeError(f"Unsupported result type {type(result).__name__}")
    data = _clean(data)
    if model is not None:
        data["model"] = model
    if config:
        data["config"] = {**data.get("config", {}), **dict(config)}
    validate_result_dict(data)
    return data


def validate_result_dict(data: Mapping[str, Any]) -> None:
    """Check that a dict follows the result schema.

    Args:
        data: Candidate result dict.

    Raises:
        ValueError: Naming the first problem found.
    """
    for key in ("model", "config", "tasks", "avg"):
        if key not in data:
            raise ValueError(f"result dict lacks {key!r}")
    if not isinstance(data["config"], Mapping):
        raise ValueError("'config' must be an object")
    if not isinstance(data["tasks"], Mapping):
        raise ValueError("'tasks' must be an object")
    for name, entry in data["tasks"].items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"tasks[{name!r}] must be an object")
        if "split" not in entry:
            raise ValueError(f"tasks[{name!r}] lacks 'split'")
        if not any(k in entry for k in SCORE_KEYS):
            raise ValueError(f"tasks[{name!r}] has none of {', '.join(SCORE_KEYS)}")
        if "spearman" in entry and ("n_pairs" not in entry or "subsets" not in entry):
            raise ValueError(f"STS entry tasks[{name!r}] needs 'n_pairs' and 'subsets'")
    if data["avg"] is not None and not isinstance(data["avg"], (int, float)):
        raise ValueError("'avg' must be a number or null")


def save_result(result: Any, path: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Write a result as indented strict JSON.

    Args:
        result: Anything accepted by :func:`result_to_dict`.
        path: Output file (parent folders are created).
        **kwargs: ``model``/``config`` overrides for :func:`result_to_dict`.

    Returns:
        The dict that was written.
    """
    data = result_to_dict(result, **kwargs)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return data


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a result JSON file written by :func:`save_result` (validated).

    Args:
        path: JSON file.

    Returns:
        The result dict.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    validate_result_dict(data)
    return data


def _format(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _columns(dicts: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: list[str] = []
    for data in dicts:
        for name in data["tasks"]:
            if name not in seen:
                seen.append(name)
    known = [c for c in KNOWN_COLUMNS if c in seen]
    return known + [c for c in seen if c not in KNOWN_COLUMNS]


def compare(
    results: Sequence[tuple[str, Any]],
    *,
    tasks: Sequence[str] | None = None,
    digits: int = 2,
    label_header: str = "Model",
) -> str:
    """Render several results as one markdown table (rows = model configurations, columns = tasks + Avg).

    Args:
        results: ``(label, result)`` pairs; each result is anything accepted by :func:`result_to_dict`. An empty
            label falls back to the label of the result's ``"config"`` when it is a
            :func:`~sentence_transformers_tp.records.describe` dict, else to the result's ``"model"``.
        tasks: Columns to show (display names, in this order); default: every task present, in suite order.
        digits: Decimals shown.
        label_header: Header of the label column.

    Returns:
        The markdown table (``–`` marks a task a row lacks). ``Avg`` is each row's mean over the shown columns it
        has all of; it is ``–`` when the row lacks one of them (averages over different task sets would not be
        comparable).
    """
    dicts = [result_to_dict(r) for _, r in results]
    columns = list(tasks) if tasks is not None else _columns(dicts)
    header = f"| {label_header} | " + " | ".join([*columns, "Avg"]) + " |"
    rule = "|---|" + "---:|" * (len(columns) + 1)
    lines = [header, rule]
    for (label, _), data in zip(results, dicts):
        values = [task_score(data["tasks"][c]) if c in data["tasks"] else None for c in columns]
        avg = _mean(values)
        name = label or config_label(data["config"]) or data.get("model") or "model"
        cells = [_format(v, digits) for v in [*values, avg]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def config_label(config: Mapping[str, Any]) -> str | None:
    """The :func:`~sentence_transformers_tp.records.label` of a result's ``config``, if it describes a setting.

    Args:
        config: A result's ``"config"``.

    Returns:
        The label, or ``None`` for a free-form config.
    """
    needed = {"template", "tp_start", "tp_exit", "tp_enabled", "output_layer"}
    if not needed <= set(config) or not set(config) <= {
        *SETTING_KEYS,
        "backbone",
        "tp_enabled",
        "num_layers",
        "roles",
    }:
        return None
    usual = ROLE_VANILLA_USUAL_LAYER in (config.get("roles") or []) and not config["tp_enabled"]
    notes = ["usual layer"] if usual else []
    return setting_label(config, notes)


def to_markdown(result: Any, label: str | None = None, *, digits: int = 2) -> str:
    """Render one result as a one-row markdown table.

    Args:
        result: Anything accepted by :func:`result_to_dict`.
        label: Row label (default: the result's ``"model"``).
        digits: Decimals shown.

    Returns:
        The markdown table.
    """
    return compare([(label or "", result)], digits=digits)


__all__ = [
    "KNOWN_COLUMNS",
    "SCORE_KEYS",
    "compare",
    "config_label",
    "load_result",
    "mteb_result_to_dict",
    "result_to_dict",
    "save_result",
    "task_score",
    "to_markdown",
    "validate_result_dict",
]
