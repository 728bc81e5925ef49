"""Fetch the evaluation data from the Hugging Face Hub into the layout the evaluators read (``st-tp data``).

:func:`download_data` loads each task's public dataset with ``datasets.load_dataset`` and writes it in the layout
of :mod:`sentence_transformers_tp.data` (STS and SentEval transfer tasks) and
:mod:`sentence_transformers_tp.evaluation.retrieval` (BEIR folders)::

    <root>/sts/<task>/<split>.tsv                    STS12-16 (test), STS-B (train, dev, test), SICK-R (test)
    <root>/classification/<task>/<split>.tsv         MR, CR, SUBJ, MPQA (all), SST2, TREC, MRPC (train, test, ...)
    <root>/retrieval/scifact/{corpus,queries}.jsonl  SciFact (BEIR/MTEB), qrels/{train,test}.tsv

The STS and SciFact data are MTEB's own copies (``mteb/sts12-sts`` ... ``mteb/scifact``, at the revisions MTEB
2.x pins), so direct and MTEB scores use the same pairs. The sources are listed in :data:`SOURCES`; the licenses
are the original datasets' (research use; cite the originals when reporting).

The conversion is separate from the download: :func:`write_task` takes a ``load(dataset, config, split, revision)``
function that returns plain row dicts, :func:`hub_rows` is the one that reads the Hub (class labels become their
names). Offline (``HF_HUB_OFFLINE=1``) :func:`download_data` fails at once with a one-line message
(:data:`OFFLINE_MESSAGE`) instead of waiting for the network.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentence_transformers_tp.data import STS_TASKS, TRANSFER_TASKS, normalize_sts_task, normalize_transfer_task

DEFAULT_DATA_DIR = "~/st-tp-data"
"""Where ``st-tp data`` writes by default (the README's examples use it)."""

RETRIEVAL_TASKS: tuple[str, ...] = ("scifact",)
"""BEIR datasets :func:`download_data` can fetch."""

OFFLINE_MESSAGE = (
    "the evaluation data comes from the Hugging Face Hub, which is unreachable here ({reason}): run "
    "'st-tp data --out DIR' on a machine with internet access and copy DIR here (then pass --data-dir DIR), or "
    "build the layout by hand (README, 'Evaluation data')"
)
"""The one-line message of an offline or failed download (``{reason}`` names the cause)."""

Loader = Callable[[str, "str | None", str, "str | None"], list[dict[str, Any]]]
"""``load(dataset, config, split, revision) -> rows``: how :func:`write_task` reads a dataset split."""


@dataclass(frozen=True)
class Part:
    """One split of a Hub dataset.

    Attributes:
        dataset: The dataset id.
        split: The split name on the Hub.
        config: The dataset config (subset), if any.
        revision: The dataset revision (None: the default branch).
    """

    dataset: str
    split: str
    config: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class Source:
    """Where one task's files come from.

    Attributes:
        task: The task key (``"stsb"``, ``"mr"``, ``"scifact"``).
        kind: ``"sts"``, ``"classification"`` or ``"retrieval"``.
        files: Output split name -> the Hub splits concatenated into it (for retrieval: ``corpus``, ``queries`` and
            one entry per qrels split).
    """

    task: str
    kind: str
    files: Mapping[str, tuple[Part, ...]]

    @property
    def datasets(self) -> list[str]:
        """The Hub dataset ids this task reads."""
        return sorted({part.dataset for parts in self.files.values() for part in parts})


def _mteb(dataset: str, revision: str, **files: tuple[str, ...]) -> dict[str, tuple[Part, ...]]:
    return {name: tuple(Part(dataset, split, revision=revision) for split in splits) for name, splits in files.items()}


SOURCES: dict[str, Source] = {
    "sts12": Source(
        "sts12", "sts", _mteb("mteb/sts12-sts", "a0d554a64d88156834ff5ae9920b964011b16384", test=("test",))
    ),
    "sts13": Source(
        "sts13", "sts", _mteb("mteb/sts13-sts", "7e90230a92c190f1bf69ae9002b8cea547a64cca", test=("test",))
    ),
    "sts14": Source(
        "sts14", "sts", _mteb("mteb/sts14-sts", "6031580fec1f6af667f0bd2da0a551cf4f0b2375", test=("test",))
    ),
    "sts15": Source(
        "sts15", "sts", _mteb("mteb/sts15-sts", "ae752c7c21bf194d8b67fd573edf7ae58183cbe3", test=("test",))
    ),
    "sts16": Source(
        "sts16", "sts", _mteb("mteb/sts16-sts", "4d8694f8f0e0100860b497b999b3dbed754a0513", test=("test",))
    ),
    "stsb": Source(
        "stsb",
        "sts",
        _mteb(
            "mteb/stsbenchmark-sts",
            "b0fddb56ed78048fa8b90373c8a3cfc37b684831",
            train=("train",),
            dev=("validation",),
            test=("test",),
        ),
    ),
    "sickr": Source(
        "sickr", "sts", _mteb("mteb/sickr-sts", "20a6d6f312dd54037fe07a32d58e5e168867909d", test=("test",))
    ),
    "mr": Source("mr", "classification", {"all": (Part("jxm/mr", "train"), Part("jxm/mr", "test"))}),
    "cr": Source(
        "cr", "classification", {"all": (Part("SetFit/SentEval-CR", "train"), Part("SetFit/SentEval-CR", "test"))}
    ),
    "subj": Source("subj", "classification", {"all": (Part("SetFit/subj", "train"), Part("SetFit/subj", "test"))}),
    "mpqa": Source("mpqa", "classification", {"all": (Part("jxm/mpqa", "train"), Part("jxm/mpqa", "test"))}),
    "sst2": Source(
        "sst2",
        "classification",
        {
            "train": (Part("stanfordnlp/sst2", "train"),),
            "dev": (Part("stanfordnlp/sst2", "validation"),),
            "test": (Part("SetFit/sst2", "test"),),  # stanfordnlp/sst2's test labels are hidden (-1)
        },
    ),
    "trec": Source(
        "trec", "classification", {"train": (Part("CogComp/trec", "train"),), "test": (Part("CogComp/trec", "test"),)}
    ),
    "mrpc": Source(
        "mrpc",
        "classification",
        {
            "train": (Part("nyu-mll/glue", "train", "mrpc"), Part("nyu-mll/glue", "validation", "mrpc")),
            "test": (Part("nyu-mll/glue", "test", "mrpc"),),
        },
    ),
    "scifact": Source(
        "scifact",
        "retrieval",
        {
            "corpus": (Part("mteb/scifact", "corpus", "corpus", "d56462d0e63a25450459c4f213e49ffdb866f7f9"),),
            "queries": (Part("mteb/scifact", "queries", "queries", "d56462d0e63a25450459c4f213e49ffdb866f7f9"),),
            "train": (Part("mteb/scifact", "train", "default", "d56462d0e63a25450459c4f213e49ffdb866f7f9"),),
            "test": (Part("mteb/scifact", "test", "default", "d56462d0e63a25450459c4f213e49ffdb866f7f9"),),
        },
    ),
}
"""The Hub source of every task :func:`download_data` fetches (MR, CR, SUBJ and MPQA: train + test as ``all``;
MRPC train: GLUE train + validation, as SentEval's 4076 pairs)."""

TEXT_COLUMNS: tuple[str, ...] = ("sentence", "text")
"""Columns tried, in order, for the sentence of a classification row."""


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``HF_DATASETS_OFFLINE``) asks for no network access."""
    return any(
        os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def resolve_tasks(tasks: Sequence[str] | None) -> list[str]:
    """Task keys of :data:`SOURCES` for user-facing names (``"STS-B"``, ``"MR"``, ``"SciFact"``), default all.

    Args:
        tasks: Names, or group names ``sts`` / ``transfer`` / ``retrieval``; None for every task.

    Returns:
        Task keys in suite order (STS, transfer, retrieval), without duplicates.

    Raises:
        ValueError: For an unknown name.
    """
    if tasks is None:
        return list(SOURCES)
    groups = {"sts": list(STS_TASKS), "transfer": list(TRANSFER_TASKS), "retrieval": list(RETRIEVAL_TASKS)}
    chosen: list[str] = []
    for name in tasks:
        key = name.strip().lower()
        if key in groups:
            chosen.extend(groups[key])
            continue
        if key in RETRIEVAL_TASKS:
            chosen.append(key)
            continue
        for normalize in (normalize_sts_task, normalize_transfer_task):
            try:
                chosen.append(normalize(name))
                break
            except ValueError:
                pass
        else:
            raise ValueError(
                f"unknown task {name!r}; tasks: {', '.join(SOURCES)} (or the groups sts, transfer, retrieval)"
            )
    return [task for task in SOURCES if task in chosen]


def task_paths(root: str | Path, task: str) -> list[Path]:
    """The files :func:`write_task` writes for a task (all present means the task is there).

    Args:
        root: The data root.
        task: A key of :data:`SOURCES`.

    Returns:
        The paths.
    """
    source = SOURCES[task]
    base = Path(root).expanduser()
    if source.kind == "retrieval":
        folder = base / "retrieval" / task
        splits = [name for name in source.files if name not in ("corpus", "queries")]
        return [folder / "corpus.jsonl", folder / "queries.jsonl", *(folder / "qrels" / f"{s}.tsv" for s in splits)]
    return [base / source.kind / task / f"{name}.tsv" for name in source.files]


def _clean_text(value: Any) -> str:
    """One line of text: tabs and line breaks become spaces (the TSV files have no quoting)."""
    return " ".join(str(value).replace("\t", " ").splitlines()).strip()


def _write_tsv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write a header + rows TSV (no quoting) atomically; return the number of rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = 0
    with partial.open("w", encoding="utf-8", newline="") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(_clean_text(value) for value in row) + "\n")
            count += 1
    partial.replace(path)
    return count


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = 0
    with partial.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(dict(row), ensure_ascii=False) + "\n")
            count += 1
    partial.replace(path)
    return count


def _column(row: Mapping[str, Any], names: Sequence[str], where: str) -> Any:
    for name in names:
        if name in row:
            return row[name]
    raise ValueError(f"{where}: rows have none of the columns {', '.join(names)} (columns: {', '.join(row)})")


def sts_rows(rows: Iterable[Mapping[str, Any]], where: str = "STS data") -> list[list[Any]]:
    """``sentence1, sentence2, score`` rows of an STS split (rows without a score are dropped).

    Args:
        rows: Dicts with ``sentence1``, ``sentence2`` and ``score`` (MTEB's STS datasets).
        where: Name of the data for error messages.

    Returns:
        The rows to write.
    """
    out = []
    for row in rows:
        score = _column(row, ("score",), where)
        if score is None or score == "":
            continue
        out.append([row["sentence1"], row["sentence2"], f"{float(score):g}"])
    return out


def classification_rows(rows: Iterable[Mapping[str, Any]], task: str) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of a transfer-task split in our layout.

    Args:
        rows: Dicts with ``sentence`` or ``text`` and ``label`` (TREC: ``coarse_label`` and ``fine_label``; MRPC:
            ``sentence1``, ``sentence2`` and ``label``), labels as names or numbers.
        task: The task key (``"trec"`` and ``"mrpc"`` have their own columns).

    Returns:
        ``(header, rows)``.

    Raises:
        ValueError: For a row without label (e.g. a hidden test label ``-1``) or a missing column.
    """
    header = ["sentence1", "sentence2", "label"] if task == "mrpc" else ["sentence", "label"]
    if task == "trec":
        header.append("fine_label")
    out = []
    for line, row in enumerate(rows, start=1):
        label = _column(row, ("coarse_label", "label") if task == "trec" else ("label",), task)
        if label is None or str(label) in ("", "-1"):
            raise ValueError(f"{task}: row {line} has no label ({label!r}); the split's labels are not public")
        if task == "mrpc":
            out.append([row["sentence1"], row["sentence2"], label])
            continue
        item = [_column(row, TEXT_COLUMNS, task), label]
        if task == "trec":
            item.append(_column(row, ("fine_label",), task))
        out.append(item)
    return header, out


def write_task(root: str | Path, task: str, load: Loader) -> list[Path]:
    """Read one task's source splits with ``load`` and write its files under ``root``.

    Args:
        root: The data root (created).
        task: A key of :data:`SOURCES`.
        load: ``load(dataset, config, split, revision) -> rows`` (e.g. :func:`hub_rows`).

    Returns:
        The written paths.
    """
    source = SOURCES[task]
    root = Path(root).expanduser()

    def read(parts: Sequence[Part]) -> list[dict[str, Any]]:
        return [row for part in parts for row in load(part.dataset, part.config, part.split, part.revision)]

    written: list[Path] = []
    if source.kind == "retrieval":
        folder = root / "retrieval" / task
        corpus = (
            {"_id": str(r["_id"]), "title": r.get("title") or "", "text": r.get("text") or ""}
            for r in read(source.files["corpus"])
        )
        _write_jsonl(folder / "corpus.jsonl", corpus)
        queries = ({"_id": str(r["_id"]), "text": r.get("text") or ""} for r in read(source.files["queries"]))
        _write_jsonl(folder / "queries.jsonl", queries)
        written += [folder / "corpus.jsonl", folder / "queries.jsonl"]
        for split, parts in source.files.items():
            if split in ("corpus", "queries"):
                continue
            qrels = ([r["query-id"], r["corpus-id"], int(float(r["score"]))] for r in read(parts))
            _write_tsv(folder / "qrels" / f"{split}.tsv", ["query-id", "corpus-id", "score"], qrels)
            written.append(folder / "qrels" / f"{split}.tsv")
        return written
    for split, parts in source.files.items():
        path = root / source.kind / task / f"{split}.tsv"
        if source.kind == "sts":
            _write_tsv(path, ["sentence1", "sentence2", "score"], sts_rows(read(parts), f"{task}/{split}"))
        else:
            header, rows = classification_rows(read(parts), task)
            _write_tsv(path, header, rows)
        written.append(path)
    return written


def dataset_rows(dataset: Any) -> list[dict[str, Any]]:
    """The rows of a ``datasets.Dataset`` as dicts, class-label columns as their names.

    Args:
        dataset: A ``datasets.Dataset``.

    Returns:
        The rows.
    """
    from datasets import ClassLabel

    names = {column: feature for column, feature in dataset.features.items() if isinstance(feature, ClassLabel)}
    rows = []
    for row in dataset:
        row = dict(row)
        for column, feature in names.items():
            if isinstance(row.get(column), int) and row[column] >= 0:
                row[column] = feature.int2str(row[column])
        rows.append(row)
    return rows


def hub_rows(dataset: str, config: str | None, split: str, revision: str | None) -> list[dict[str, Any]]:
    """Load one split from the Hub with ``datasets.load_dataset`` (the default :data:`Loader`).

    Args:
        dataset: Dataset id.
        config: Dataset config, if any.
        split: Split name.
        revision: Dataset revision, if pinned.

    Returns:
        The rows (see :func:`dataset_rows`).

    Raises:
        OSError: The one-line :data:`OFFLINE_MESSAGE` when the Hub cannot be reached or the dataset not read.
    """
    import datasets

    try:
        loaded = datasets.load_dataset(dataset, config, split=split, revision=revision)
    except Exception as error:  # network, hub and format errors all mean: this dataset could not be fetched
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise OSError(OFFLINE_MESSAGE.format(reason=f"{dataset} {split}: {first}")) from error
    return dataset_rows(loaded)


def download_data(
    root: str | Path = DEFAULT_DATA_DIR,
    tasks: Sequence[str] | None = None,
    *,
    force: bool = False,
    load: Loader | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[Path]]:
    """Fetch tasks into ``root`` in the evaluators' layout (tasks already there are skipped unless ``force``).

    Args:
        root: The data root (``~`` is expanded; created).
        tasks: Task names or groups (see :func:`resolve_tasks`); None for all.
        force: Fetch tasks whose files exist again.
        load: The split reader (default :func:`hub_rows`, which needs the Hub).
        progress: Called with a line per task (e.g. ``print``).

    Returns:
        Task key -> written paths (empty for skipped tasks).

    Raises:
        OSError: Offline (``HF_HUB_OFFLINE=1``) or when the Hub cannot be reached: the one-line
            :data:`OFFLINE_MESSAGE`.
        ValueError: For an unknown task.
    """
    keys = resolve_tasks(tasks)
    base = Path(root).expanduser()
    missing = [task for task in keys if force or not all(p.is_file() for p in task_paths(base, task))]
    if load is None:
        if missing and is_offline():
            raise OSError(OFFLINE_MESSAGE.format(reason="HF_HUB_OFFLINE=1"))
        load = hub_rows
    written: dict[str, list[Path]] = {}
    for task in keys:
        if task not in missing:
            written[task] = []
            if progress:
                progress(f"{task}: already in {base} (--force fetches it again)")
            continue
        if progress:
            progress(f"{task}: fetching {', '.join(SOURCES[task].datasets)}")
        written[task] = write_task(base, task, load)
    return written


__all__ = [
    "DEFAULT_DATA_DIR",
    "OFFLINE_MESSAGE",
    "RETRIEVAL_TASKS",
    "SOURCES",
    "Part",
    "Source",
    "classification_rows",
    "dataset_rows",
    "download_data",
    "hub_rows",
    "is_offline",
    "resolve_tasks",
    "sts_rows",
    "task_paths",
    "write_task",
]
