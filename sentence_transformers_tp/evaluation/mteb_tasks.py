"""MTEB 2.x tasks that read the paper's STS suite from a local directory (no network, no HF datasets download).

Each STS task of the suite gets an ``AbsTaskSTS`` subclass whose ``load_data`` reads
``<data_dir>/sts/<task>/<split>.tsv`` (see :mod:`sentence_transformers_tp.data`):

* ``LocalSTS12`` ... ``LocalSTS16`` (MTEB names ``LocalSTS12`` ... ``LocalSTS16``), gold scores 0-5;
* ``LocalSTSBenchmark`` (``LocalSTSBenchmark``), gold scores 0-5;
* ``LocalSICKR`` (MTEB name ``LocalSICK-R``), gold scores 1-5.

All rows of a split form one ``default`` subset, so MTEB's ``cosine_spearman`` main score is the paper's "all"
setting for STS12-16 and equals :func:`sentence_transformers_tp.evaluation.sts.evaluate_sts` (as a fraction, not
x 100). Usage::

    import mteb
    from sentence_transformers_tp.evaluation import local_sts_tasks

    model.model_card_data.model_name = "org/llama2-7b-prompteol-tp"  # results are filed under this name
    tasks = local_sts_tasks("/path/to/data", split="test")
    result = mteb.evaluate(model, tasks, cache=None)

``mteb`` and ``datasets`` are imported only when a task class is first needed, so importing this module is cheap;
the classes are built on first access (``from ...mteb_tasks import LocalSTS12`` works) and are ordinary
module-level classes afterwards.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from sentence_transformers_tp.data import (
    STS_SCORE_RANGES,
    STS_TASKS,
    check_subset,
    list_sts_splits,
    load_sts,
    normalize_sts_task,
    resolve_sts_split,
    sts_split_path,
)

LOCAL_TASK_NAMES: dict[str, str] = {
    "sts12": "LocalSTS12",
    "sts13": "LocalSTS13",
    "sts14": "LocalSTS14",
    "sts15": "LocalSTS15",
    "sts16": "LocalSTS16",
    "stsb": "LocalSTSBenchmark",
    "sickr": "LocalSICK-R",
}
"""MTEB task name of each local task (``metadata.name``; also the name results are stored under)."""

LOCAL_CLASS_NAMES: dict[str, str] = {key: name.replace("-", "") for key, name in LOCAL_TASK_NAMES.items()}
"""Python class name of each local task (``LocalSICKR`` for ``LocalSICK-R``)."""

_METADATA: dict[str, dict[str, Any]] = {
    "sts12": {
        "reference": "https://aclanthology.org/S12-1051/",
        "date": ("2005-01-01", "2012-12-31"),
        "domains": ["Encyclopaedic", "News", "Written"],
    },
    "sts13": {
        "reference": "https://aclanthology.org/S13-1004/",
        "date": ("2012-01-01", "2012-12-31"),
        "domains": ["Web", "News", "Non-fiction", "Written"],
    },
    "sts14": {
        "reference": "https://aclanthology.org/S14-2010/",
        "date": ("2012-01-01", "2014-08-31"),
        "domains": ["Blog", "Web", "News", "Written"],
    },
    "sts15": {
        "reference": "https://aclanthology.org/S15-2045/",
        "date": ("2008-01-01", "2014-07-28"),
        "domains": ["Blog", "News", "Web", "Written", "Spoken"],
    },
    "sts16": {
        "reference": "https://aclanthology.org/S16-1081/",
        "date": ("2015-10-01", "2015-12-31"),
        "domains": ["Blog", "Web", "Spoken"],
    },
    "stsb": {
        "reference": "https://aclanthology.org/S17-2001/",
        "date": ("2012-01-01", "2017-12-31"),
        "domains": ["Blog", "News", "Written"],
        "license": "cc-by-sa-4.0",
    },
    "sickr": {
        "reference": "https://aclanthology.org/L14-1314/",
        "date": ("2014-01-01", "2014-12-31"),
        "domains": ["Web", "Written"],
        "license": "cc-by-nc-sa-3.0",
    },
}


def _base_class() -> type:
    from mteb.abstasks.sts import AbsTaskSTS

    class LocalSTSTask(AbsTaskSTS):
        """An ``AbsTaskSTS`` whose data come from a local TSV split (see the module docstring).

        Args:
            data_dir: Data root in the layout of :mod:`sentence_transformers_tp.data`.
            split: Split to evaluate (``"test"`` is the paper's protocol; ``"dev"`` also finds SICK's ``trial``).
                Results are stored under the split name as found on disk.
            senteval_text: Read the ``.senteval.tsv`` text variant when present.
            limit: Use only the first ``limit`` pairs.
            sample: Use ``sample`` pairs drawn at random instead (seeded by ``sample_seed``, kept in file order).
            sample_seed: Seed of the ``sample`` draw.
            **kwargs: Passed to ``AbsTask.__init__`` (e.g. ``seed``).

        The instance's ``metadata.dataset`` records the file path and a revision made of the file name, a hash of
        its content and the limit or sample, so stored results say exactly what was evaluated. MTEB's result cache
        keys on the task name only: evaluate with ``cache=None`` (or ``overwrite_strategy="always"``) when switching
        data, limit, sample or text variant.
        """

        task_key: str = ""

        def __init__(
            self,
            data_dir: str | Path,
            split: str = "test",
            *,
            senteval_text: bool = False,
            limit: int | None = None,
            sample: int | None = None,
            sample_seed: int = 0,
            **kwargs: Any,
        ) -> None:
            check_subset(limit, sample)
            super().__init__(**kwargs)
            self.data_dir = Path(data_dir)
            self.split = resolve_sts_split(self.data_dir, self.task_key, split) or split
            self.senteval_text = senteval_text
            self.limit = limit
            self.sample = sample
            self.sample_seed = sample_seed
            self.filter_eval_splits([self.split])
            path = sts_split_path(self.data_dir, self.task_key, self.split, senteval_text=senteval_text)
            digest = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
            revision = f"local-{path.name.removesuffix('.tsv')}-{digest}" + (f"-first{limit}" if limit else "")
            if sample is not None:
                revision += f"-sample{sample}-seed{sample_seed}"
            self.metadata = self.metadata.model_copy(update={"dataset": {"path": str(path), "revision": revision}})

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            """Read the split into ``self.dataset`` (a ``DatasetDict`` with one split).

            Args:
                num_proc: Unused (kept for the MTEB signature).
                **kwargs: Unused (MTEB passes e.g. ``timer``).
            """
            if self.data_loaded:
                return
            from datasets import Dataset, DatasetDict

            data = load_sts(self.data_dir, self.task_key, self.split, senteval_text=self.senteval_text)
            data = data.subset(self.limit, self.sample, self.sample_seed)
            self.dataset = DatasetDict(
                {
                    self.split: Dataset.from_dict(
                        {"sentence1": data.sentence1, "sentence2": data.sentence2, "score": data.scores}
                    )
                }
            )
            self.data_loaded = True

    LocalSTSTask.__module__ = __name__
    LocalSTSTask.__qualname__ = "LocalSTSTask"
    return LocalSTSTask


@cache
def _task_classes() -> dict[str, type]:
    from mteb.abstasks.task_metadata import TaskMetadata

    base = _base_class()
    classes: dict[str, type] = {"LocalSTSTask": base}
    for key in STS_TASKS:
        info = _METADATA[key]
        low, high = STS_SCORE_RANGES[key]
        metadata = TaskMetadata(
            name=LOCAL_TASK_NAMES[key],
            description=(
                f"{LOCAL_TASK_NAMES[key][len('Local') :]} read from a local TSV directory "
                "(sentence_transformers_tp evaluation layout); one subset with all rows (SentEval 'all' setting)."
            ),
            reference=info["reference"],
            dataset={"path": f"local/{key}", "revision": "local"},
            type="STS",
            category="t2t",
            modalities=["text"],
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            main_score="cosine_spearman",
            date=info["date"],
            domains=info["domains"],
            task_subtypes=[],
            license=info.get("license", "not specified"),
            annotations_creators="human-annotated",
            dialect=[],
            sample_creation="created",
            bibtex_citation="",
        )
        name = LOCAL_CLASS_NAMES[key]
        cls = type(
            name,
            (base,),
            {
                "__module__": __name__,
                "__qualname__": name,
                "__doc__": f"Local ``{LOCAL_TASK_NAMES[key]}`` task (gold scores {low:g}-{high:g}).",
                "metadata": metadata,
                "task_key": key,
                "min_score": low,
                "max_score": high,
            },
        )
        classes[name] = cls
    globals().update(classes)
    return classes


def local_sts_task_class(task: str) -> type:
    """Return the MTEB task class of one STS task.

    Args:
        task: STS task name (``"sts12"``, ``"STS-B"``, ``"LocalSICK-R"``, ...).

    Returns:
        The ``AbsTaskSTS`` subclass; instantiate it with ``(data_dir, split=...)``.
    """
    return _task_classes()[LOCAL_CLASS_NAMES[normalize_sts_task(task)]]


def local_sts_tasks(
    data_dir: str | Path,
    tasks: list[str] | tuple[str, ...] | None = None,
    split: str = "test",
    *,
    senteval_text: bool = False,
    limit: int | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
) -> list[Any]:
    """Build MTEB tasks for the local STS suite.

    Args:
        data_dir: Data root in the layout of :mod:`sentence_transformers_tp.data`.
        tasks: Tasks to build (aliases accepted); ``None`` builds every task that has ``split`` in ``data_dir``.
        split: Split to evaluate (``"test"``: the paper's protocol; ``"dev"`` also finds SICK's ``trial``).
        senteval_text: Read the ``.senteval.tsv`` text variant when present.
        limit: Use only the first ``limit`` pairs of each task.
        sample: Use ``sample`` pairs of each task drawn at random instead (seeded, kept in file order).
        sample_seed: Seed of the ``sample`` draw.

    Returns:
        Task instances (``mteb.abstasks.AbsTask``), in suite order, ready for ``mteb.evaluate(model, tasks)``.

    Raises:
        FileNotFoundError: If a requested task lacks the split, or (``tasks=None``) no task has it.
    """
    if tasks is None:
        present = {t for t, _ in list_sts_splits(data_dir)}
        keys = [t for t in STS_TASKS if t in present and resolve_sts_split(data_dir, t, split)]
        if not keys:
            held = ", ".join(f"{t}/{s}" for t, s in list_sts_splits(data_dir)) or "nothing"
            raise FileNotFoundError(f"No STS task in {data_dir} has split {split!r} (it holds: {held})")
    else:
        wanted = {normalize_sts_task(t) for t in tasks}
        keys = [t for t in STS_TASKS if t in wanted]
        for key in keys:
            if resolve_sts_split(data_dir, key, split) is None:
                load_sts(data_dir, key, split)  # raises FileNotFoundError with the available splits
    return [
        local_sts_task_class(key)(
            data_dir, split=split, senteval_text=senteval_text, limit=limit, sample=sample, sample_seed=sample_seed
        )
        for key in keys
    ]


def __getattr__(name: str) -> Any:
    if name == "LocalSTSTask" or name in LOCAL_CLASS_NAMES.values():
        return _task_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LOCAL_CLASS_NAMES", "LOCAL_TASK_NAMES", "local_sts_task_class", "local_sts_tasks"]
