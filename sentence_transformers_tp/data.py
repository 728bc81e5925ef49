"""Readers for the data directory layout (STS suite and SentEval transfer tasks).

This file imports nothing from the package, so every layer can read the layout: the model (centering sentences), the
tuners and the evaluation (re-exported as :mod:`sentence_transformers_tp.data`).

The data directory holds tab-separated UTF-8 files with one header row and **no quoting** (sentences contain
``"``), read with ``csv.reader(f, delimiter="\\t", quoting=csv.QUOTE_NONE)``::

    <data_dir>/sts/<task>/<split>.tsv            sentence1  sentence2  score  [subset | genre source | ...]
    <data_dir>/sts/<task>/<split>.senteval.tsv   same rows, text as SentEval feeds it (tokenized, lower-cased)
    <data_dir>/classification/<task>/all.tsv     sentence  label                 (mr, cr, subj, mpqa)
    <data_dir>/classification/sst2/{train,dev,test}.tsv
    <data_dir>/classification/trec/{train,test}.tsv   sentence  label  fine_label (coarse ``label`` is used)
    <data_dir>/classification/mrpc/{train,test}.tsv   sentence1  sentence2  label

STS tasks are ``sts12`` ... ``sts16`` (column ``subset`` names the SemEval sub-dataset), ``stsb`` (STS Benchmark)
and ``sickr`` (SICK relatedness, whose development split is called ``trial``). ``data_dir`` may be the root
above or directly the ``sts``/``classification`` folder.

Rows whose score field is empty are skipped and counted (SentEval drops the unscored STS16 pairs the same way);
any other malformed content raises ``ValueError`` naming the file and line.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STS_TASKS: tuple[str, ...] = ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr")
"""Canonical keys of the paper's STS suite, in the paper's column order."""

STS_DISPLAY_NAMES: dict[str, str] = {
    "sts12": "STS12",
    "sts13": "STS13",
    "sts14": "STS14",
    "sts15": "STS15",
    "sts16": "STS16",
    "stsb": "STS-B",
    "sickr": "SICK-R",
}
"""Column names used in results and tables (as in the paper's tables)."""

STS_SCORE_RANGES: dict[str, tuple[float, float]] = {
    "sts12": (0.0, 5.0),
    "sts13": (0.0, 5.0),
    "sts14": (0.0, 5.0),
    "sts15": (0.0, 5.0),
    "sts16": (0.0, 5.0),
    "stsb": (0.0, 5.0),
    "sickr": (1.0, 5.0),
}
"""Gold score range of each STS task."""

TRANSFER_TASKS: tuple[str, ...] = ("mr", "cr", "subj", "mpqa", "sst2", "trec", "mrpc")
"""Canonical keys of the SentEval transfer tasks, in the paper's column order."""

TRANSFER_DISPLAY_NAMES: dict[str, str] = {
    "mr": "MR",
    "cr": "CR",
    "subj": "SUBJ",
    "mpqa": "MPQA",
    "sst2": "SST2",
    "trec": "TREC",
    "mrpc": "MRPC",
}
"""Column names used in results and tables for the transfer tasks."""

TRANSFER_SPLITS: dict[str, tuple[str, ...]] = {
    "mr": ("all",),
    "cr": ("all",),
    "subj": ("all",),
    "mpqa": ("all",),
    "sst2": ("train", "dev", "test"),
    "trec": ("train", "test"),
    "mrpc": ("train", "test"),
}
"""Files (split names) each transfer task needs."""

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {"dev": ("dev", "trial"), "trial": ("trial", "dev")}
"""Splits tried, in order, when a split name is requested (SICK calls its development split ``trial``)."""

SENTEVAL_SUFFIX = ".senteval.tsv"

_STS_ALIASES: dict[str, str] = {
    "stsbenchmark": "stsb",
    "stsbenchmarkdev": "stsb",
    "stsbenchmarksts": "stsb",
    "sick": "sickr",
    "sickrelatedness": "sickr",
}


def _alias_key(name: str) -> str:
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return key[len("local") :] if key.startswith("local") else key


def normalize_sts_task(name: str) -> str:
    """Map a user-facing STS task name to its canonical key.

    Accepts the canonical keys, the display names (``"STS-B"``, ``"SICK-R"``), SentEval names
    (``"STSBenchmark"``, ``"SICKRelatedness"``) and the local MTEB task names (``"LocalSTS12"``), case-insensitively.

    Args:
        name: Task name.

    Returns:
        One of :data:`STS_TASKS`.

    Raises:
        ValueError: If the name is not an STS task of the suite.
    """
    key = _alias_key(name)
    key = _STS_ALIASES.get(key, key)
    if key not in STS_TASKS:
        raise ValueError(f"Unknown STS task {name!r}; expected one of {', '.join(STS_TASKS)}")
    return key


def normalize_transfer_task(name: str) -> str:
    """Map a user-facing transfer task name (``"MR"``, ``"sst2"``, ...) to its canonical key.

    Args:
        name: Task name, case-insensitive.

    Returns:
        One of :data:`TRANSFER_TASKS`.

    Raises:
        ValueError: If the name is not a SentEval transfer task of the suite.
    """
    key = _alias_key(name)
    if key not in TRANSFER_TASKS:
        raise ValueError(f"Unknown transfer task {name!r}; expected one of {', '.join(TRANSFER_TASKS)}")
    return key


def _sub_root(data_dir: str | Path, name: str) -> Path:
    root = Path(data_dir)
    if (root / name).is_dir():
        return root / name
    return root


def sts_root(data_dir: str | Path) -> Path:
    """Return the folder holding the STS task folders (``<data_dir>/sts`` if it exists, else ``data_dir``).

    Args:
        data_dir: Data root or the ``sts`` folder itself.

    Returns:
        The folder whose sub-folders are ``stsb``, ``sickr``, ``sts12`` ...
    """
    return _sub_root(data_dir, "sts")


def classification_root(data_dir: str | Path) -> Path:
    """Return the folder holding the transfer task folders (``<data_dir>/classification`` if it exists).

    Args:
        data_dir: Data root or the ``classification`` folder itself.

    Returns:
        The folder whose sub-folders are ``mr``, ``cr``, ``sst2`` ...
    """
    return _sub_root(data_dir, "classification")


def list_sts_splits(data_dir: str | Path) -> list[tuple[str, str]]:
    """Discover which (task, split) pairs a data directory holds.

    A split counts when ``<split>.tsv`` or ``<split>.senteval.tsv`` exists in the task folder. Unknown task folders
    are ignored.

    Args:
        data_dir: Data root or its ``sts`` folder.

    Returns:
        ``(task, split)`` pairs, tasks in :data:`STS_TASKS` order and splits sorted by name.
    """
    root = sts_root(data_dir)
    found: list[tuple[str, str]] = []
    for task in STS_TASKS:
        folder = root / task
        if not folder.is_dir():
            continue
        splits: set[str] = set()
        for path in folder.glob("*.tsv"):
            name = path.name
            splits.add(name[: -len(SENTEVAL_SUFFIX)] if name.endswith(SENTEVAL_SUFFIX) else path.stem)
        found.extend((task, split) for split in sorted(splits))
    return found


def resolve_sts_split(data_dir: str | Path, task: str, split: str) -> str | None:
    """Find the split file name a task uses for a requested split (``dev`` also finds SICK's ``trial``).

    Args:
        data_dir: Data root or its ``sts`` folder.
        task: STS task name (any alias accepted by :func:`normalize_sts_task`).
        split: Requested split name.

    Returns:
        The split name present on disk, or ``None`` if the task has no such split.
    """
    task = normalize_sts_task(task)
    available = {s for t, s in list_sts_splits(data_dir) if t == task}
    for candidate in SPLIT_ALIASES.get(split, (split,)):
        if candidate in available:
            return candidate
    return None


def sts_split_path(data_dir: str | Path, task: str, split: str, senteval_text: bool = False) -> Path:
    """Return the path of an STS split file.

    Args:
        data_dir: Data root or its ``sts`` folder.
        task: STS task name.
        split: Split name as on disk (see :func:`resolve_sts_split`).
        senteval_text: Prefer the ``.senteval.tsv`` text variant; falls back to the plain file with a warning when
            the variant is missing.

    Returns:
        Path of the file to read.

    Raises:
        FileNotFoundError: If neither file exists.
    """
    folder = sts_root(data_dir) / normalize_sts_task(task)
    plain = folder / f"{split}.tsv"
    if senteval_text:
        variant = folder / f"{split}{SENTEVAL_SUFFIX}"
        if variant.is_file():
            return variant
        if plain.is_file():
            warnings.warn(f"{variant} not found; using the plain text of {plain}", stacklevel=2)
            return plain
        raise FileNotFoundError(f"STS split file not found: {variant} (nor {plain})")
    if not plain.is_file():
        raise FileNotFoundError(f"STS split file not found: {plain}")
    return plain


def check_subset(limit: int | None, sample: int | None) -> None:
    """Check a ``limit`` / ``sample`` pair of settings: each non-negative, at most one of them given.

    Args:
        limit: Number of first pairs to keep, or None.
        sample: Number of random pairs to keep, or None.

    Raises:
        ValueError: If both are given or either is negative.
    """
    for name, value in (("limit", limit), ("sample", sample)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
    if limit is not None and sample is not None:
        raise ValueError(f"Give limit (first N pairs) or sample (N random pairs), not both: {limit=}, {sample=}")


@dataclass(frozen=True)
class STSData:
    """Sentence pairs of one STS split, column-wise.

    Attributes:
        sentence1: First sentence of each pair.
        sentence2: Second sentence of each pair.
        scores: Gold similarity score of each pair.
        subsets: Sub-dataset name of each pair (``subset`` column) or ``None`` when the file has no such column.
        path: File the pairs were read from.
        n_skipped: Rows skipped because their score field was empty.
    """

    sentence1: list[str]
    sentence2: list[str]
    scores: list[float]
    subsets: list[str] | None = None
    path: Path | None = None
    n_skipped: int = 0

    def __len__(self) -> int:
        return len(self.scores)

    def head(self, n: int | None) -> STSData:
        """Return the first ``n`` pairs (all pairs when ``n`` is ``None``).

        Files are often ordered by genre (the first 400 pairs of STS-B dev are all captions), so the first pairs
        are not a representative subset; :meth:`sample` is.

        Args:
            n: Number of pairs to keep.

        Returns:
            A new :class:`STSData`.
        """
        if n is not None and n < 0:
            raise ValueError(f"limit must be non-negative, got {n}")
        if n is None or n >= len(self):
            return self
        return self.select(range(n))

    def sample(self, n: int | None, seed: int = 0) -> STSData:
        """Return ``n`` pairs drawn at random without replacement (all pairs when ``n`` is ``None``), in file order.

        The same ``n`` and ``seed`` always give the same pairs.

        Args:
            n: Number of pairs to keep.
            seed: Seed of the random draw.

        Returns:
            A new :class:`STSData`.
        """
        if n is not None and n < 0:
            raise ValueError(f"sample must be non-negative, got {n}")
        if n is None or n >= len(self):
            return self
        import numpy as np

        return self.select(sorted(np.random.default_rng(seed).choice(len(self), size=n, replace=False).tolist()))

    def select(self, indices: Sequence[int]) -> STSData:
        """Return the pairs at ``indices``, in that order.

        Args:
            indices: Pair positions.

        Returns:
            A new :class:`STSData`.
        """
        return STSData(
            sentence1=[self.sentence1[i] for i in indices],
            sentence2=[self.sentence2[i] for i in indices],
            scores=[self.scores[i] for i in indices],
            subsets=None if self.subsets is None else [self.subsets[i] for i in indices],
            path=self.path,
            n_skipped=self.n_skipped,
        )

    def subset(self, limit: int | None = None, sample: int | None = None, seed: int = 0) -> STSData:
        """The first ``limit`` pairs, or a seeded random ``sample`` of pairs, or all pairs (neither given).

        Args:
            limit: Keep the first ``limit`` pairs.
            sample: Keep ``sample`` pairs drawn at random (see :meth:`sample`).
            seed: Seed of the random draw.

        Returns:
            A new :class:`STSData` (or this one).

        Raises:
            ValueError: If both ``limit`` and ``sample`` are given, or either is negative.
        """
        check_subset(limit, sample)
        return self.sample(sample, seed) if sample is not None else self.head(limit)


def _read_table(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read a header + rows TSV file; returns the header and ``(line number, fields)`` of each non-blank row."""
    if not path.is_file():
        raise FileNotFoundError(f"Data file not found: {path}")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file (expected a header row with {', '.join(required)})")
        header = [name.strip() for name in header]
        missing = [name for name in required if name not in header]
        if missing:
            raise ValueError(f"{path}:1: header {header} lacks column(s) {', '.join(missing)}")
        rows: list[tuple[int, list[str]]] = []
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) != len(header):
                raise ValueError(
                    f"{path}:{reader.line_num}: expected {len(header)} tab-separated fields "
                    f"({', '.join(header)}), got {len(fields)}"
                )
            rows.append((reader.line_num, fields))
    return header, rows


def read_sts_tsv(path: str | Path) -> STSData:
    """Read one STS split file.

    Args:
        path: TSV file with columns ``sentence1``, ``sentence2``, ``score`` and optionally ``subset`` (others are
            ignored).

    Returns:
        The pairs, with rows whose score is empty skipped (counted in ``n_skipped``).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: On a missing header column, a row with the wrong number of fields or a non-numeric score
            (the message names the file and line).
    """
    path = Path(path)
    header, rows = _read_table(path, ("sentence1", "sentence2", "score"))
    i1, i2, isc = header.index("sentence1"), header.index("sentence2"), header.index("score")
    isub = header.index("subset") if "subset" in header else None
    sentence1: list[str] = []
    sentence2: list[str] = []
    scores: list[float] = []
    subsets: list[str] = []
    skipped = 0
    for line, fields in rows:
        raw = fields[isc].strip()
        if not raw:
            skipped += 1
            continue
        try:
            score = float(raw)
        except ValueError:
            raise ValueError(f"{path}:{line}: score {raw!r} is not a number") from None
        if not math.isfinite(score):
            raise ValueError(f"{path}:{line}: score {raw!r} is not a finite number")
        sentence1.append(fields[i1])
        sentence2.append(fields[i2])
        scores.append(score)
        if isub is not None:
            subsets.append(fields[isub])
    return STSData(
        sentence1=sentence1,
        sentence2=sentence2,
        scores=scores,
        subsets=subsets if isub is not None else None,
        path=path,
        n_skipped=skipped,
    )


def load_sts(data_dir: str | Path, task: str, split: str, senteval_text: bool = False) -> STSData:
    """Load one STS split from a data directory.

    Args:
        data_dir: Data root or its ``sts`` folder.
        task: STS task name (any alias of :func:`normalize_sts_task`).
        split: Split name; ``dev`` and ``trial`` are interchangeable (see :data:`SPLIT_ALIASES`).
        senteval_text: Read the ``.senteval.tsv`` text variant when present.

    Returns:
        The pairs of that split.

    Raises:
        FileNotFoundError: If the task has no such split in ``data_dir``.
    """
    key = normalize_sts_task(task)
    resolved = resolve_sts_split(data_dir, key, split)
    if resolved is None:
        available = [s for t, s in list_sts_splits(data_dir) if t == key]
        raise FileNotFoundError(
            f"STS split file not found: {sts_root(data_dir) / key / f'{split}.tsv'} "
            f"(splits available for {key}: {', '.join(available) or 'none'})"
        )
    return read_sts_tsv(sts_split_path(data_dir, key, resolved, senteval_text=senteval_text))


def load_sts_split(data_dir: str | Path, task: str, split: str) -> tuple[STSData, str, str]:
    """An STS split of a data directory with its split aliases (``dev`` finds SICK-R's ``trial``).

    Args:
        data_dir: Data root (or its ``sts`` folder).
        task: STS task (any alias).
        split: Split name.

    Returns:
        The pairs, the canonical task key and the split name on disk.

    Raises:
        FileNotFoundError: If the task has no such split.
    """
    task = normalize_sts_task(task)
    resolved = resolve_sts_split(data_dir, task, split)
    if resolved is None:
        raise FileNotFoundError(f"{data_dir} has no {split!r} split for task {task!r}.")
    return load_sts(data_dir, task, resolved), task, resolved


@dataclass(frozen=True)
class TransferData:
    """Labelled sentences (or sentence pairs) of one transfer-task split.

    Attributes:
        sentence1: The sentence of each example (first sentence for pair tasks).
        labels: Label of each example, as the string found in the file.
        sentence2: Second sentence of each example for pair tasks (MRPC), else ``None``.
        path: File the examples were read from.
    """

    sentence1: list[str]
    labels: list[str]
    sentence2: list[str] | None = None
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_pair(self) -> bool:
        """Whether the examples are sentence pairs."""
        return self.sentence2 is not None

    def select(self, indices: Sequence[int]) -> TransferData:
        """Return the examples at ``indices`` (in that order).

        Args:
            indices: Row positions to keep.

        Returns:
            A new :class:`TransferData`.
        """
        return TransferData(
            sentence1=[self.sentence1[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            sentence2=None if self.sentence2 is None else [self.sentence2[i] for i in indices],
            path=self.path,
        )


def read_transfer_tsv(path: str | Path) -> TransferData:
    """Read one transfer-task file (``sentence label ...`` or ``sentence1 sentence2 label ...``).

    Args:
        path: TSV file. Pair files are recognised by their ``sentence1``/``sentence2`` columns.

    Returns:
        The examples; labels are kept as strings (``"0"``/``"1"``, TREC's coarse classes ``"NUM"`` ...).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: On a missing column, a row with the wrong number of fields or an empty label.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file not found: {path}")
    with path.open(encoding="utf-8", newline="") as f:
        first = f.readline().rstrip("\r\n").split("\t")
    pair = "sentence1" in first and "sentence2" in first
    required = ("sentence1", "sentence2", "label") if pair else ("sentence", "label")
    header, rows = _read_table(path, required)
    ilab = header.index("label")
    i1 = header.index("sentence1" if pair else "sentence")
    i2 = header.index("sentence2") if pair else None
    sentence1: list[str] = []
    sentence2: list[str] = []
    labels: list[str] = []
    for line, fields in rows:
        label = fields[ilab].strip()
        if not label:
            raise ValueError(f"{path}:{line}: empty label")
        sentence1.append(fields[i1])
        if i2 is not None:
            sentence2.append(fields[i2])
        labels.append(label)
    return TransferData(sentence1=sentence1, labels=labels, sentence2=sentence2 if pair else None, path=path)


def list_transfer_tasks(data_dir: str | Path) -> list[str]:
    """Discover which transfer tasks a data directory holds completely (all files of :data:`TRANSFER_SPLITS`).

    Args:
        data_dir: Data root or its ``classification`` folder.

    Returns:
        Task keys in :data:`TRANSFER_TASKS` order.
    """
    root = classification_root(data_dir)
    return [
        task
        for task in TRANSFER_TASKS
        if all((root / task / f"{split}.tsv").is_file() for split in TRANSFER_SPLITS[task])
    ]


def load_transfer(data_dir: str | Path, task: str) -> dict[str, TransferData]:
    """Load all files of one transfer task.

    Args:
        data_dir: Data root or its ``classification`` folder.
        task: Transfer task name (``"MR"``, ``"sst2"``, ...).

    Returns:
        Mapping split name -> examples, e.g. ``{"all": ...}`` for MR or ``{"train": ..., "dev": ..., "test": ...}``
        for SST2.

    Raises:
        FileNotFoundError: If a needed file is missing.
    """
    key = normalize_transfer_task(task)
    folder = classification_root(data_dir) / key
    return {split: read_transfer_tsv(folder / f"{split}.tsv") for split in TRANSFER_SPLITS[key]}


__all__ = [
    "SENTEVAL_SUFFIX",
    "SPLIT_ALIASES",
    "STS_DISPLAY_NAMES",
    "STS_SCORE_RANGES",
    "STS_TASKS",
    "TRANSFER_DISPLAY_NAMES",
    "TRANSFER_SPLITS",
    "TRANSFER_TASKS",
    "STSData",
    "TransferData",
    "check_subset",
    "classification_root",
    "list_sts_splits",
    "list_transfer_tasks",
    "load_sts",
    "load_sts_split",
    "load_transfer",
    "normalize_sts_task",
    "normalize_transfer_task",
    "read_sts_tsv",
    "read_transfer_tsv",
    "resolve_sts_split",
    "sts_root",
    "sts_split_path",
]
