"""SentEval-style transfer tasks: logistic regression on frozen sentence embeddings, accuracy x 100.

Protocol (SentEval's scikit-learn path, ``usepytorch=False``; seed 1111):

* **MR, CR, SUBJ, MPQA** (``all.tsv``): outer stratified ``kfold``-fold cross-validation (shuffled); inside each
  outer training fold, ``C`` is chosen from :data:`SENTEVAL_C_GRID` (2^-2 ... 2^3) by an inner stratified
  ``inner_kfold``-fold cross-validation, the classifier is refit on the whole outer training fold and scored on the
  outer test fold. Reported: mean test accuracy over the outer folds (``dev_accuracy`` = mean best inner accuracy).
* **SST2**: for each ``C`` fit on ``train`` and score on ``dev``; the best ``C`` (first one on ties) is scored on
  ``test``.
* **TREC** (6 coarse classes) and **MRPC**: ``C`` by inner cross-validation on ``train``, refit on ``train``,
  scored on ``test``.
* **MRPC pair features**: SentEval concatenates ``[|u - v|, u * v]`` (``pair_features="senteval"``, the default);
  ``pair_features="full"`` gives ``[u, v, |u - v|, u * v]`` (InferSent / SICK-E style).

Deviations from SentEval, on purpose: features are standardised (``StandardScaler`` fit on the training part only),
which makes the ``C`` grid meaningful across models of any hidden size; and the paper's own numbers come from
SentEval's PyTorch logistic regression (Adam, weight decay grid), so expect small differences.

The fold count is lowered to the size of the smallest class when a (``limit``-ed) training set is too small for
``kfold`` folds; the value used is reported. ``limit`` subsamples every file of a task deterministically
(stratified by label where possible) before anything is encoded. All distinct sentences of a task (all files, both
sides of MRPC) are encoded in one ``encode`` call.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sentence_transformers_tp.data import (
    TRANSFER_DISPLAY_NAMES,
    TRANSFER_TASKS,
    TransferData,
    list_transfer_tasks,
    load_transfer,
    normalize_transfer_task,
)

from .sts import Encoder, SuiteResult, card_model_name, encode_unique, nan_to_none

SENTEVAL_C_GRID: tuple[float, ...] = tuple(2.0**t for t in range(-2, 4))
"""Inverse regularisation strengths tried by SentEval's scikit-learn logistic regression."""

SENTEVAL_SEED = 1111
"""SentEval's default seed (fold shuffling and classifier)."""


@dataclass
class TransferTaskResult:
    """Score of one transfer task.

    Attributes:
        task: Canonical task key (``"mr"``, ``"sst2"``, ...).
        split: What the accuracy is measured on: ``"test"`` or ``"<k>-fold CV"``.
        accuracy: Test accuracy x 100 (mean over outer folds for the cross-validated tasks).
        dev_accuracy: Accuracy x 100 of the selected ``C`` on the validation data used to select it.
        n_train: Training examples (per outer fold for the cross-validated tasks: the whole set minus one fold).
        n_test: Examples the accuracy is computed on (the whole set for the cross-validated tasks).
        n_classes: Number of classes.
        c: Selected ``C`` (one per outer fold for the cross-validated tasks).
        kfold: Folds used for the outer cross-validation (``None`` for train/test tasks).
        inner_kfold: Folds used to select ``C`` (``None`` for SST2, which uses its dev split).
        n_encoded: Distinct sentences encoded.
        seconds: Wall time (encoding + classifiers).
    """

    task: str
    split: str
    accuracy: float
    dev_accuracy: float
    n_train: int
    n_test: int
    n_classes: int
    c: list[float]
    kfold: int | None = None
    inner_kfold: int | None = None
    n_encoded: int = 0
    seconds: float = 0.0

    @property
    def name(self) -> str:
        """Display name (``"MR"``, ``"SST2"``, ...)."""
        return TRANSFER_DISPLAY_NAMES.get(self.task, self.task)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-serialisable entry of this task.

        Returns:
            ``{"split", "accuracy", "dev_accuracy", "n_train", "n_test", "n_classes", "C", "kfold", "inner_kfold",
            "n_encoded", "seconds"}``.
        """
        return {
            "split": self.split,
            "accuracy": nan_to_none(self.accuracy),
            "dev_accuracy": nan_to_none(self.dev_accuracy),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_classes": self.n_classes,
            "C": list(self.c),
            "kfold": self.kfold,
            "inner_kfold": self.inner_kfold,
            "n_encoded": self.n_encoded,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class TransferResult(SuiteResult):
    """Scores of a transfer-task run (``tasks``: :class:`TransferTaskResult` by task key; metric ``accuracy``)."""

    kind: ClassVar[str] = "transfer"
    metric: ClassVar[str] = "accuracy"


def pair_features(u: np.ndarray, v: np.ndarray, mode: str = "senteval") -> np.ndarray:
    """Combine the embeddings of sentence pairs into classifier features.

    Args:
        u: ``(n, d)`` embeddings of the first sentences.
        v: ``(n, d)`` embeddings of the second sentences.
        mode: ``"senteval"`` for ``[|u - v|, u * v]`` (SentEval's MRPC) or ``"full"`` for ``[u, v, |u - v|, u * v]``.

    Returns:
        ``(n, 2d)`` or ``(n, 4d)`` features.

    Raises:
        ValueError: On an unknown mode.
    """
    if mode == "senteval":
        return np.concatenate([np.abs(u - v), u * v], axis=1)
    if mode == "full":
        return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)
    raise ValueError(f"pair_features mode must be 'senteval' or 'full', got {mode!r}")


def subsample_indices(labels: Sequence[str], limit: int | None, seed: int = SENTEVAL_SEED) -> list[int]:
    """Pick ``limit`` example positions deterministically, stratified by label when possible.

    Args:
        labels: Label of each example.
        limit: Number of examples to keep; ``None`` (or ``>= len(labels)``) keeps all.
        seed: Random seed.

    Returns:
        Sorted positions.
    """
    n = len(labels)
    if limit is None or limit >= n:
        return list(range(n))
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    from sklearn.model_selection import train_test_split

    positions = np.arange(n)
    try:
        kept, _ = train_test_split(positions, train_size=limit, stratify=np.asarray(labels), random_state=seed)
    except ValueError:
        kept = np.random.default_rng(seed).choice(n, size=limit, replace=False)
    return sorted(int(i) for i in kept)


def _classifier(c: float, seed: int, max_iter: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))


def _n_folds(y: np.ndarray, wanted: int, what: str) -> int:
    smallest = min(Counter(y.tolist()).values())
    folds = min(wanted, smallest)
    if folds < 2:
        raise ValueError(f"{what}: a class has {smallest} example(s); cross-validation needs at least 2 per class")
    return folds


def _select_and_fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    c_grid: Sequence[float],
    inner_kfold: int,
    seed: int,
    max_iter: int,
    n_jobs: int | None,
    what: str,
) -> tuple[Any, float, float, int]:
    """Pick C by inner stratified CV on (x, y), refit on all of it; returns (model, C, cv accuracy, folds)."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    folds = _n_folds(y, inner_kfold, what)
    search = GridSearchCV(
        _classifier(c_grid[0], seed, max_iter),
        {"logisticregression__C": list(c_grid)},
        scoring="accuracy",
        cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
        n_jobs=n_jobs,
        refit=True,
    )
    search.fit(x, y)
    return (
        search.best_estimator_,
        float(search.best_params_["logisticregression__C"]),
        float(search.best_score_),
        folds,
    )


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict(x) == y))


def _features(data: TransferData, emb: dict[str, np.ndarray], pair_mode: str) -> np.ndarray:
    u = np.stack([emb[t] for t in data.sentence1]).astype(np.float64)
    if data.sentence2 is None:
        return u
    v = np.stack([emb[t] for t in data.sentence2]).astype(np.float64)
    return pair_features(u, v, pair_mode)


def evaluate_transfer_task(
    model: Encoder,
    splits: Mapping[str, TransferData],
    *,
    task: str,
    limit: int | None = None,
    kfold: int = 10,
    inner_kfold: int | None = None,
    c_grid: Sequence[float] = SENTEVAL_C_GRID,
    seed: int = SENTEVAL_SEED,
    pair_mode: str = "senteval",
    max_iter: int = 1000,
    n_jobs: int | None = None,
    blas_threads: int | None = 1,
    batch_size: int = 32,
    show_progress_bar: bool = False,
    encode_kwargs: Mapping[str, Any] | None = None,
) -> TransferTaskResult:
    """Evaluate one transfer task given its loaded files.

    Args:
        model: Object with a sentence-transformers style ``encode``.
        splits: ``{"all": ...}`` (cross-validated task) or ``{"train", "test"}`` (+ ``"dev"`` for SST2-style model
            selection on a dev split).
        task: Task key recorded in the result.
        limit: Subsample every split to at most this many examples (stratified, deterministic).
        kfold: Outer folds for ``all``-only tasks.
        inner_kfold: Folds for choosing ``C``; defaults to ``kfold`` (as SentEval).
        c_grid: Candidate ``C`` values.
        seed: Seed for subsampling, fold shuffling and the classifier.
        pair_mode: Pair feature combination (see :func:`pair_features`).
        max_iter: Maximum iterations of the logistic regression solver.
        n_jobs: Parallel jobs for the ``C`` search (scikit-learn ``n_jobs``).
        blas_threads: BLAS threads while the classifiers are fitted (``None`` leaves the BLAS setting alone).
            The default 1 is deliberate: scikit-learn's L-BFGS solver spends its time in small BLAS calls and ran
            up to 20x slower with threaded OpenBLAS in our measurements; use ``n_jobs`` for parallelism instead.
        batch_size: Passed to ``encode``.
        show_progress_bar: Passed to ``encode``.
        encode_kwargs: Extra keyword arguments for ``encode``.

    Returns:
        The task result.
    """
    start = time.perf_counter()
    inner = kfold if inner_kfold is None else inner_kfold
    c_grid = tuple(float(c) for c in c_grid)
    if not c_grid:
        raise ValueError("c_grid must not be empty")
    data = {name: d.select(subsample_indices(d.labels, limit, seed)) for name, d in splits.items()}
    texts = [t for d in data.values() for t in (*d.sentence1, *(d.sentence2 or ()))]
    emb, n_new = encode_unique(
        model, texts, batch_size=batch_size, show_progress_bar=show_progress_bar, encode_kwargs=encode_kwargs
    )
    feats = {name: _features(d, emb, pair_mode) for name, d in data.items()}
    labels = {name: np.asarray(d.labels) for name, d in data.items()}
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads, user_api="blas"):
        result = _fit_and_score(
            feats,
            labels,
            task=task,
            kfold=kfold,
            inner_kfold=inner,
            c_grid=c_grid,
            seed=seed,
            max_iter=max_iter,
            n_jobs=n_jobs,
        )
    result.n_encoded = n_new
    result.seconds = time.perf_counter() - start
    return result


def _fit_and_score(
    feats: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    *,
    task: str,
    kfold: int,
    inner_kfold: int,
    c_grid: Sequence[float],
    seed: int,
    max_iter: int,
    n_jobs: int | None,
) -> TransferTaskResult:
    """Run the SentEval protocol on precomputed features (see the module docstring)."""
    n_classes = len(set().union(*(set(y.tolist()) for y in labels.values())))
    if "all" in feats:
        from sklearn.model_selection import StratifiedKFold

        x, y = feats["all"], labels["all"]
        outer = _n_folds(y, kfold, f"{task}/all")
        test_acc: list[float] = []
        dev_acc: list[float] = []
        chosen: list[float] = []
        inner_cv = inner_kfold
        n_train = 0
        splitter = StratifiedKFold(n_splits=outer, shuffle=True, random_state=seed)
        for fold, (tr, te) in enumerate(splitter.split(x, y)):
            clf, c, cv_acc, inner_cv = _select_and_fit(
                x[tr],
                y[tr],
                c_grid=c_grid,
                inner_kfold=inner_kfold,
                seed=seed,
                max_iter=max_iter,
                n_jobs=n_jobs,
                what=f"{task} fold {fold}",
            )
            test_acc.append(_accuracy(clf, x[te], y[te]))
            dev_acc.append(cv_acc)
            chosen.append(c)
            n_train = max(n_train, len(tr))
        return TransferTaskResult(
            task=task,
            split=f"{outer}-fold CV",
            accuracy=100.0 * float(np.mean(test_acc)),
            dev_accuracy=100.0 * float(np.mean(dev_acc)),
            n_train=n_train,
            n_test=len(y),
            n_classes=n_classes,
            c=chosen,
            kfold=outer,
            inner_kfold=inner_cv,
        )

    missing = [name for name in ("train", "test") if name not in feats]
    if missing:
        raise ValueError(f"{task}: needs 'all' or 'train'+'test' splits, missing {', '.join(missing)}")
    x_tr, y_tr = feats["train"], labels["train"]
    inner_used: int | None = None
    if "dev" in feats:
        dev = -1.0
        for candidate in c_grid:
            fitted = _classifier(candidate, seed, max_iter).fit(x_tr, y_tr)
            acc = _accuracy(fitted, feats["dev"], labels["dev"])
            if acc > dev:
                dev, c, clf = acc, candidate, fitted
    else:
        clf, c, dev, inner_used = _select_and_fit(
            x_tr,
            y_tr,
            c_grid=c_grid,
            inner_kfold=inner_kfold,
            seed=seed,
            max_iter=max_iter,
            n_jobs=n_jobs,
            what=f"{task}/train",
        )
    return TransferTaskResult(
        task=task,
        split="test",
        accuracy=100.0 * _accuracy(clf, feats["test"], labels["test"]),
        dev_accuracy=100.0 * dev,
        n_train=len(y_tr),
        n_test=len(labels["test"]),
        n_classes=n_classes,
        c=[c],
        kfold=None,
        inner_kfold=inner_used,
    )


def evaluate_transfer(
    model: Encoder,
    data_dir: str | Path,
    *,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    kfold: int = 10,
    inner_kfold: int | None = None,
    c_grid: Sequence[float] = SENTEVAL_C_GRID,
    seed: int = SENTEVAL_SEED,
    mrpc_features: str = "senteval",
    max_iter: int = 1000,
    n_jobs: int | None = None,
    blas_threads: int | None = 1,
    batch_size: int = 32,
    show_progress_bar: bool = False,
    encode_kwargs: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> TransferResult:
    """Evaluate a model on the SentEval transfer tasks found in (or requested from) a data directory.

    Args:
        model: Object with a sentence-transformers style ``encode`` (a ``SentenceTransformer``).
        data_dir: Data root (or its ``classification`` folder) in the layout of
            :mod:`sentence_transformers_tp.data`.
        tasks: Tasks to run (``"MR"``, ``"sst2"``, ...); ``None`` runs every complete task found.
        limit: Subsample every file of a task to at most this many examples (fast runs).
        kfold: Outer folds for MR/CR/SUBJ/MPQA (SentEval: 10).
        inner_kfold: Folds for choosing ``C``; defaults to ``kfold`` (as SentEval). Lower it to save time.
        c_grid: Candidate ``C`` values (default: SentEval's 2^-2 ... 2^3).
        seed: Seed for subsampling, fold shuffling and the classifier (SentEval: 1111).
        mrpc_features: MRPC feature combination, ``"senteval"`` (``[|u-v|, u*v]``) or ``"full"``
            (``[u, v, |u-v|, u*v]``); see :func:`pair_features`.
        max_iter: Maximum iterations of the logistic regression solver.
        n_jobs: Parallel jobs for the ``C`` search.
        blas_threads: BLAS threads while fitting classifiers (see :func:`evaluate_transfer_task`).
        batch_size: Passed to ``encode``.
        show_progress_bar: Passed to ``encode``.
        encode_kwargs: Extra keyword arguments for ``encode``.
        model_name: Name recorded in the result; defaults to ``model.model_card_data.model_name`` if set.
        config: Free-form configuration recorded in the result.

    Returns:
        Per-task accuracies and their average.

    Raises:
        FileNotFoundError: If a requested task's files are missing, or (``tasks=None``) no task is found.
    """
    if tasks is None:
        selected = list_transfer_tasks(data_dir)
        if not selected:
            raise FileNotFoundError(f"No complete SentEval transfer task found in {data_dir}")
    else:
        keys = {normalize_transfer_task(t) for t in tasks}
        selected = [t for t in TRANSFER_TASKS if t in keys]
    results: dict[str, TransferTaskResult] = {}
    for task in selected:
        results[task] = evaluate_transfer_task(
            model,
            load_transfer(data_dir, task),
            task=task,
            limit=limit,
            kfold=kfold,
            inner_kfold=inner_kfold,
            c_grid=c_grid,
            seed=seed,
            pair_mode=mrpc_features,
            max_iter=max_iter,
            n_jobs=n_jobs,
            blas_threads=blas_threads,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            encode_kwargs=encode_kwargs,
        )
    settings = {
        "limit": limit,
        "kfold": kfold,
        "inner_kfold": kfold if inner_kfold is None else inner_kfold,
        "c_grid": [float(c) for c in c_grid],
        "seed": seed,
        "mrpc_features": mrpc_features,
        "standardize": True,
        "batch_size": batch_size,
    }
    return TransferResult(
        tasks=results, model=model_name or card_model_name(model), config=dict(config or {}), settings=settings
    )


__all__ = [
    "SENTEVAL_C_GRID",
    "SENTEVAL_SEED",
    "TransferResult",
    "TransferTaskResult",
    "evaluate_transfer",
    "evaluate_transfer_task",
    "pair_features",
    "subsample_indices",
]
