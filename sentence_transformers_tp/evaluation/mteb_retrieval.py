"""An MTEB 2.x retrieval task over a local BEIR-layout folder (no network, no HF datasets download).

:func:`local_retrieval_task` builds an ``AbsTaskRetrieval`` whose ``load_data`` reads the folder with
:func:`~sentence_transformers_tp.evaluation.retrieval.load_beir` and applies the same query / corpus subset as
:func:`~sentence_transformers_tp.evaluation.retrieval.evaluate_retrieval`, so MTEB's ``ndcg_at_10`` main score equals
that function's nDCG@10 (as a fraction, not x 100)::

    import mteb
    from sentence_transformers_tp.evaluation.mteb_retrieval import local_retrieval_task

    task = local_retrieval_task("/work/shared/data/retrieval/scifact", split="train")   # MTEB name LocalSciFact
    result = mteb.evaluate(model, [task], cache=None)

The task is named ``Local<dataset>`` (``LocalSciFact``): it is not MTEB's own task (MTEB's SciFact scores the 300
test claims of the Hub dataset) and its results are filed apart from it. The instance's ``metadata.dataset`` records
the folder and a revision made of the split, a hash of the qrels file and the subset settings.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from sentence_transformers_tp.data import check_subset

from .retrieval import display_name, load_beir, resolve_beir_split


@cache
def local_retrieval_task_class() -> type:
    """Return the ``AbsTaskRetrieval`` subclass of local BEIR folders (built on first use; imports mteb).

    Returns:
        The class ``LocalRetrievalTask``; instantiate it with ``(folder, split=..., ...)``.
    """
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    class LocalRetrievalTask(AbsTaskRetrieval):
        """Retrieval on a local BEIR folder (see the module docstring).

        Args:
            folder: BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
            split: Qrels split (``None``: ``"test"`` if present, else the folder's only split).
            name: MTEB task name (default: ``"Local"`` + the dataset name, e.g. ``LocalSciFact``).
            limit: Use only the first ``limit`` queries.
            sample: Use ``sample`` queries drawn at random instead (seeded by ``sample_seed``).
            sample_seed: Seed of the query draw.
            corpus_sample: Keep only the relevant documents of the queries plus ``corpus_sample`` random others.
            corpus_seed: Seed of the document draw (default: ``sample_seed``).
            **kwargs: Passed to ``AbsTask.__init__`` (e.g. ``seed``).
        """

        metadata = TaskMetadata(
            name="LocalRetrieval",
            description="Retrieval on a local BEIR-layout folder (sentence_transformers_tp evaluation).",
            reference=None,
            dataset={"path": "local/beir", "revision": "local"},
            type="Retrieval",
            category="t2t",
            modalities=["text"],
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            main_score="ndcg_at_10",
            date=None,
            domains=None,
            task_subtypes=None,
            license=None,
            annotations_creators=None,
            dialect=None,
            sample_creation=None,
            bibtex_citation=None,
        )

        def __init__(
            self,
            folder: str | Path,
            split: str | None = None,
            *,
            name: str | None = None,
            limit: int | None = None,
            sample: int | None = None,
            sample_seed: int = 0,
            corpus_sample: int | None = None,
            corpus_seed: int | None = None,
            **kwargs: Any,
        ) -> None:
            check_subset(limit, sample)
            self.folder = Path(folder)
            self.split = resolve_beir_split(self.folder, split)
            self.limit = limit
            self.sample = sample
            self.sample_seed = sample_seed
            self.corpus_sample = corpus_sample
            self.corpus_seed = corpus_seed
            qrels_path = self.folder / "qrels" / f"{self.split}.tsv"
            digest = hashlib.sha1(qrels_path.read_bytes()).hexdigest()[:12]
            revision = f"local-{self.split}-{digest}" + (f"-first{limit}" if limit is not None else "")
            if sample is not None:
                revision += f"-sample{sample}-seed{sample_seed}"
            if corpus_sample is not None:
                revision += f"-corpus{corpus_sample}-seed{sample_seed if corpus_seed is None else corpus_seed}"
            self.metadata = type(self).metadata.model_copy(
                update={
                    "name": name or f"Local{display_name(self.folder)}",
                    "dataset": {"path": str(self.folder), "revision": revision},
                    "eval_splits": [self.split],
                }
            )
            super().__init__(**kwargs)

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            """Read the folder into ``self.dataset`` (``{"default": {split: RetrievalSplitData}}``).

            Args:
                num_proc: Unused (kept for the MTEB signature).
                **kwargs: Unused (MTEB passes e.g. ``timer``).
            """
            if self.data_loaded:
                return
            from datasets import Dataset
            from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

            data = load_beir(self.folder, self.split).subset(
                self.limit,
                self.sample,
                self.sample_seed,
                corpus_sample=self.corpus_sample,
                corpus_seed=self.corpus_seed,
            )
            self.dataset = {
                "default": {
                    self.split: RetrievalSplitData(
                        corpus=Dataset.from_dict({"id": data.doc_ids, "title": data.titles, "text": data.texts}),
                        queries=Dataset.from_dict({"id": list(data.queries), "text": list(data.queries.values())}),
                        relevant_docs={q: dict(docs) for q, docs in data.qrels.items()},
                        top_ranked=None,
                    )
                }
            }
            self.data_loaded = True

    LocalRetrievalTask.__module__ = __name__
    LocalRetrievalTask.__qualname__ = "LocalRetrievalTask"
    return LocalRetrievalTask


def local_retrieval_task(
    folder: str | Path,
    split: str | None = None,
    *,
    name: str | None = None,
    limit: int | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    corpus_sample: int | None = None,
    corpus_seed: int | None = None,
) -> Any:
    """Build the MTEB retrieval task of a local BEIR folder.

    Args:
        folder: BEIR folder.
        split: Qrels split (``None``: ``"test"`` if present, else the folder's only split).
        name: MTEB task name (default ``Local<dataset>``, e.g. ``LocalSciFact``).
        limit: Use only the first ``limit`` queries.
        sample: Use ``sample`` queries drawn at random instead (seeded by ``sample_seed``).
        sample_seed: Seed of the query draw.
        corpus_sample: Keep only the relevant documents of the queries plus ``corpus_sample`` random others.
        corpus_seed: Seed of the document draw (default: ``sample_seed``).

    Returns:
        An ``AbsTaskRetrieval`` instance for ``mteb.evaluate``.

    Raises:
        FileNotFoundError: If the folder or split is missing.
    """
    return local_retrieval_task_class()(
        folder,
        split,
        name=name,
        limit=limit,
        sample=sample,
        sample_seed=sample_seed,
        corpus_sample=corpus_sample,
        corpus_seed=corpus_seed,
    )


def __getattr__(name: str) -> Any:
    if name == "LocalRetrievalTask":
        return local_retrieval_task_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["local_retrieval_task", "local_retrieval_task_class"]
