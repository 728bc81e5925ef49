"""Unsupervised STS evaluation with the protocol of the TP paper (SentEval as used by PromptEOL/TP).

For every pair the score is the cosine similarity of the two sentence embeddings; a task's score is the Spearman
rank correlation (average ranks for ties) between these cosines and the gold scores, multiplied by 100:

* STS12-STS16 use SentEval's **"all" setting**: one Spearman over all rows of the task (all sub-datasets
  concatenated), *not* the mean of the per-subset correlations. Per-subset correlations are reported as extra
  information.
* STS-B and SICK-R are scored on the requested split (the paper reports ``test``; the STS-B ``dev`` split is used for
  hyper-parameter selection).
* The suite average is the plain mean over the tasks that were evaluated.

Every distinct sentence is encoded exactly once per :func:`evaluate_sts` call (deduplicated across both columns,
rows and tasks), so the model sees each text once; with a model whose embedding of a text depends on the rest of
its batch (left padding without position ids) the numbers can differ slightly from a pair-by-pair encoding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from sentence_transformers_tp.data import (
    STS_DISPLAY_NAMES,
    STS_TASKS,
    STSData,
    check_subset,
    list_sts_splits,
    load_sts,
    normalize_sts_task,
    resolve_sts_split,
)

from ..truncation import report_truncation


class Encoder(Protocol):
    """What the evaluators need from a model: sentence-transformers' ``encode``."""

    def encode(self, sentences: list[str], **kwargs: Any) -> Any:
        """Encode sentences into a ``(len(sentences), dim)`` array."""


def rankdata(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rank values from 1 to n, giving tied values the average of the ranks they span.

    Args:
        values: One-dimensional values.

    Returns:
        Float ranks, same length as ``values``.
    """
    a = np.asarray(values, dtype=np.float64).ravel()
    n = a.size
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    ranks = np.empty(n, dtype=np.float64)
    start = 0
    while start < n:
        end = start + 1
        while end < n and sorted_a[end] == sorted_a[start]:
            end += 1
        ranks[order[start:end]] = (start + 1 + end) / 2.0
        start = end
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks), as ``scipy.stats.spearmanr``.

    Args:
        x: First variable.
        y: Second variable, same length.

    Returns:
        The correlation in [-1, 1]; ``nan`` when fewer than two values or when either variable is constant.

    Raises:
        ValueError: If the lengths differ.
    """
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return float("nan")
    rx = rankdata(x)
    ry = rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(np.dot(rx, rx)) * float(np.dot(ry, ry)))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(np.dot(rx, ry) / denom, -1.0, 1.0))


def cosine_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two embedding matrices (0 for a zero vector).

    Args:
        a: ``(n, d)`` embeddings.
        b: ``(n, d)`` embeddings.

    Returns:
        ``(n,)`` cosine similarities, float64.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cosine_scores needs equal shapes, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)


def encode_unique(
    model: Encoder,
    texts: Iterable[str],
    *,
    batch_size: int = 32,
    show_progress_bar: bool = False,
    cache: dict[str, np.ndarray] | None = None,
    encode_kwargs: Mapping[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """Encode each distinct text once (in one ``model.encode`` call) and return a text -> embedding mapping.

    Args:
        model: Object with a sentence-transformers style ``encode``.
        texts: Texts, possibly with duplicates.
        batch_size: Passed to ``encode``.
        show_progress_bar: Passed to ``encode``.
        cache: Mapping updated in place and returned; texts already in it are not encoded again.
        encode_kwargs: Extra keyword arguments for ``encode`` (e.g. ``prompt_name``).

    Returns:
        The (updated) mapping and the number of texts that were newly encoded.
    """
    cache = {} if cache is None else cache
    new = list(dict.fromkeys(t for t in texts if t not in cache))
    if new:
        with report_truncation():
            emb = model.encode(
                new,
                batch_size=batch_size,
                show_progress_bar=show_progress_bar,
                convert_to_numpy=True,
                **dict(encode_kwargs or {}),
            )
        emb = np.asarray(emb)
        if emb.ndim != 2 or emb.shape[0] != len(new):
            raise ValueError(f"model.encode returned shape {emb.shape} for {len(new)} texts")
        for text, row in zip(new, emb):
            cache[text] = row
    return cache, len(new)


def nan_to_none(value: float | None) -> float | None:
    """A score for JSON: ``nan``, infinities and None as None (JSON has no ``NaN``)."""
    return None if value is None or not math.isfinite(value) else value


@dataclass
class STSTaskResult:
    """Score of one STS task.

    Attributes:
        task: Canonical task key (``"sts12"``, ``"stsb"``, ...).
        split: Split evaluated (as on disk, e.g. ``"test"``, ``"dev"``, ``"trial"``).
        spearman: Spearman x 100 over all pairs of the task ("all" setting); ``nan`` if undefined.
        n_pairs: Number of pairs scored.
        subsets: Per-subset ``{"spearman": ..., "n_pairs": ...}`` (STS12-16; empty when the file has no subsets).
        path: File the pairs came from.
        n_encoded: Sentences newly encoded for this task (after deduplication).
        seconds: Wall time spent on the task, encoding included.
    """

    task: str
    split: str
    spearman: float
    n_pairs: int
    subsets: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    path: str | None = None
    n_encoded: int = 0
    seconds: float = 0.0

    @property
    def name(self) -> str:
        """Display name (``"STS12"``, ``"STS-B"``, ``"SICK-R"``)."""
        return STS_DISPLAY_NAMES.get(self.task, self.task)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-serialisable entry of this task (``nan`` becomes ``None``).

        Returns:
            ``{"split", "spearman", "n_pairs", "subsets", "path", "n_encoded", "seconds"}``.
        """
        return {
            "split": self.split,
            "spearman": nan_to_none(self.spearman),
            "n_pairs": self.n_pairs,
            "subsets": {k: dict(v) for k, v in self.subsets.items()},
            "path": self.path,
            "n_encoded": self.n_encoded,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class SuiteResult:
    """Scores of a suite run (the common part of :class:`STSResult` and the transfer tasks' result).

    Attributes:
        tasks: Results keyed by canonical task key, in suite order; each has a ``name`` and a score attribute named
            by the class's ``metric``.
        model: Model name (free text) or ``None``.
        config: Free-form configuration recorded with the result (template, TP layers, ...).
        settings: How the evaluation was run (``limit``, folds, ``batch_size``, ...).
    """

    #: ``"kind"`` of the JSON result.
    kind: ClassVar[str] = ""
    #: Name of the per-task score attribute, also the JSON ``"metric"``.
    metric: ClassVar[str] = ""

    tasks: dict[str, Any]
    model: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def avg(self) -> float:
        """Plain mean of the task scores (``nan`` if there is none or one is undefined)."""
        values = [getattr(r, self.metric) for r in self.tasks.values()]
        return float(np.mean(values)) if values else float("nan")

    def scores(self) -> dict[str, float]:
        """Return display name -> score x 100, plus ``"Avg"``.

        Returns:
            Mapping in suite order.
        """
        out = {r.name: getattr(r, self.metric) for r in self.tasks.values()}
        out["Avg"] = self.avg
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-serialisable result (schema documented in :mod:`sentence_transformers_tp.evaluation.report`).

        Returns:
            ``{"kind", "metric", "model", "config", "settings", "tasks": {display name: entry}, "avg"}``.
        """
        return {
            "kind": self.kind,
            "metric": self.metric,
            "model": self.model,
            "config": dict(self.config),
            "settings": dict(self.settings),
            "tasks": {r.name: r.to_dict() for r in self.tasks.values()},
            "avg": nan_to_none(self.avg),
        }


@dataclass
class STSResult(SuiteResult):
    """Scores of an STS suite run (``tasks``: :class:`STSTaskResult` by task key; metric ``spearman``)."""

    kind: ClassVar[str] = "sts"
    metric: ClassVar[str] = "spearman"


def score_sts(
    model: Encoder,
    data: STSData,
    *,
    task: str = "sts",
    split: str = "test",
    batch_size: int = 32,
    show_progress_bar: bool = False,
    cache: dict[str, np.ndarray] | None = None,
    encode_kwargs: Mapping[str, Any] | None = None,
) -> STSTaskResult:
    """Score one set of STS pairs: cosine of the embeddings vs gold, Spearman x 100 overall and per subset.

    Args:
        model: Object with a sentence-transformers style ``encode``.
        data: The pairs.
        task: Task key recorded in the result.
        split: Split name recorded in the result.
        batch_size: Passed to ``encode``.
        show_progress_bar: Passed to ``encode``.
        cache: Text -> embedding mapping shared across calls (updated in place).
        encode_kwargs: Extra keyword arguments for ``encode``.

    Returns:
        The task result.
    """
    start = time.perf_counter()
    cache, n_new = encode_unique(
        model,
        [*data.sentence1, *data.sentence2],
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        cache=cache,
        encode_kwargs=encode_kwargs,
    )
    if len(data):
        a = np.stack([cache[t] for t in data.sentence1])
        b = np.stack([cache[t] for t in data.sentence2])
        sims = cosine_scores(a, b)
    else:
        sims = np.zeros(0)
    gold = np.asarray(data.scores, dtype=np.float64)
    subsets: dict[str, dict[str, float | int | None]] = {}
    if data.subsets is not None:
        labels = np.asarray(data.subsets, dtype=object)
        for name in dict.fromkeys(data.subsets):
            mask = labels == name
            subsets[name] = {
                "spearman": nan_to_none(100.0 * spearman(sims[mask], gold[mask])),
                "n_pairs": int(mask.sum()),
            }
    return STSTaskResult(
        task=task,
        split=split,
        spearman=100.0 * spearman(sims, gold),
        n_pairs=len(data),
        subsets=subsets,
        path=str(data.path) if data.path is not None else None,
        n_encoded=n_new,
        seconds=time.perf_counter() - start,
    )


def card_model_name(model: Any) -> str | None:
    """The ``model_name`` of a model's card (``model.model_card_data.model_name``), if it has a non-empty one."""
    card = getattr(model, "model_card_data", None)
    name = getattr(card, "model_name", None)
    return name if isinstance(name, str) and name else None


def evaluate_sts(
    model: Encoder,
    data_dir: str | Path,
    *,
    tasks: Sequence[str] | None = None,
    split: str | Mapping[str, str] = "test",
    limit: int | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    senteval_text: bool = False,
    batch_size: int = 32,
    show_progress_bar: bool = False,
    encode_kwargs: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> STSResult:
    """Evaluate a model on the STS tasks found in (or requested from) a data directory.

    Args:
        model: Object with a sentence-transformers style ``encode`` (a ``SentenceTransformer``).
        data_dir: Data root in the layout of :mod:`sentence_transformers_tp.data` (or its ``sts`` folder).
        tasks: Tasks to evaluate (aliases accepted). ``None`` evaluates every task of the suite that has the
            requested split, silently skipping the others.
        split: Split for all tasks (``"test"``: the paper's protocol) or a mapping task -> split; tasks missing
            from the mapping use ``"test"``. ``"dev"`` also finds SICK's ``trial`` file.
        limit: Score only the first ``limit`` pairs of each task (fast runs); ``None`` for all. Files may be
            ordered by genre (STS-B dev is), so ``sample`` gives a more representative quick estimate.
        sample: Score ``sample`` pairs of each task drawn at random (seeded, kept in file order) instead.
        sample_seed: Seed of the ``sample`` draw.
        senteval_text: Use the ``.senteval.tsv`` text variant (tokenized, lower-cased) where present.
        batch_size: Passed to ``encode``.
        show_progress_bar: Passed to ``encode``.
        encode_kwargs: Extra keyword arguments for ``encode``.
        model_name: Name recorded in the result; defaults to ``model.model_card_data.model_name`` if set.
        config: Free-form configuration recorded in the result.

    Returns:
        Per-task scores and their average.

    Raises:
        FileNotFoundError: If a requested task lacks the split, or (``tasks=None``) no task has it.
    """
    check_subset(limit, sample)

    def split_for(task: str) -> str:
        if isinstance(split, str):
            return split
        by_key = {normalize_sts_task(k): v for k, v in split.items()}
        return by_key.get(task, "test")

    if tasks is None:
        present = {t for t, _ in list_sts_splits(data_dir)}
        selected = [t for t in STS_TASKS if t in present and resolve_sts_split(data_dir, t, split_for(t))]
        if not selected:
            held = ", ".join(f"{t}/{s}" for t, s in list_sts_splits(data_dir)) or "nothing"
            raise FileNotFoundError(f"No STS task in {data_dir} has split {split!r} (it holds: {held})")
    else:
        keys = {normalize_sts_task(t) for t in tasks}
        selected = [t for t in STS_TASKS if t in keys]

    cache: dict[str, np.ndarray] = {}
    results: dict[str, STSTaskResult] = {}
    for task in selected:
        requested = split_for(task)
        data = load_sts(data_dir, task, requested, senteval_text=senteval_text).subset(limit, sample, sample_seed)
        resolved = resolve_sts_split(data_dir, task, requested) or requested
        results[task] = score_sts(
            model,
            data,
            task=task,
            split=resolved,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            cache=cache,
            encode_kwargs=encode_kwargs,
        )
    return STSResult(
        tasks=results,
        model=model_name or card_model_name(model),
        config=dict(config or {}),
        settings={
            "limit": limit,
            **({"sample": sample, "sample_seed": sample_seed} if sample is not None else {}),
            "senteval_text": senteval_text,
            "batch_size": batch_size,
        },
    )


__all__ = [
    "Encoder",
    "STSResult",
    "STSTaskResult",
    "cosine_scores",
    "encode_unique",
    "evaluate_sts",
    "rankdata",
    "score_sts",
    "spearman",
]
