"""Embedding Ray Datasets with a Token Prepending model, for corpora beyond one machine.

:func:`embed_dataset` runs ``Dataset.map_batches`` with a fixed pool of actors of :class:`TokenPrependingEncoder`
(a callable class). Each actor loads the model once from a :class:`~sentence_transformers_tp.integrations.ModelSpec`
(a saved folder, a backbone + template, or a preset) that is sent to it by value, then embeds batch after batch of
the text column into a new column.

Example:
    .. code-block:: python

        import ray

        from sentence_transformers_tp.integrations.ray import embed_dataset

        ds = ray.data.read_parquet("s3://bucket/corpus/")  # a "text" column
        ds = embed_dataset(ds, "path/to/saved-tp-model", concurrency=8, num_gpus=1)
        ds.write_parquet("s3://bucket/embeddings/")

A saved model folder must be readable at the same path on every node (shared file system), or use a hub id /
backbone + template that every node can load.

Needs the ``ray`` extra: ``pip install "sentence-transformers-tp[ray]"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from sentence_transformers_tp.integrations import ModelSpec, missing_extra
from sentence_transformers_tp.truncation import report_truncation

try:
    import ray.data
except ImportError as error:  # pragma: no cover - depends on the environment
    raise missing_extra("ray", error) from error

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["TokenPrependingEncoder", "embed_dataset"]

Task = Literal["query", "document"]


class TokenPrependingEncoder:
    """A callable class for ``ray.data.Dataset.map_batches``: loads a TP model once, then embeds batches.

    Args:
        spec: The model to load (a :class:`~sentence_transformers_tp.integrations.ModelSpec`, a saved folder /
            backbone name, or a dict of ``ModelSpec`` fields).
        text_column: The column holding the texts. Defaults to ``"text"``.
        output_column: The column the embeddings are written to (a tensor column of float32 vectors). Defaults
            to ``"embedding"``.
        task: ``"document"`` (``encode_document``, the default), ``"query"`` (``encode_query``) or None (plain
            ``encode``).
        encode_batch_size: Batch size of ``encode`` inside each ``map_batches`` batch. Defaults to 32.
        normalize_embeddings: Return unit-length vectors. Defaults to False.
        encode_kwargs: Further keyword arguments of the encode method.
    """

    def __init__(
        self,
        spec: ModelSpec | str | dict[str, Any] | None = None,
        *,
        text_column: str = "text",
        output_column: str = "embedding",
        task: Task | None = "document",
        encode_batch_size: int = 32,
        normalize_embeddings: bool = False,
        encode_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if task not in ("query", "document", None):
            raise ValueError(f"task must be 'query', 'document' or None, got {task!r}.")
        self.spec = ModelSpec.coerce(spec)
        self.text_column = text_column
        self.output_column = output_column
        self.task = task
        self.encode_kwargs = {
            "batch_size": encode_batch_size,
            "normalize_embeddings": normalize_embeddings,
            "show_progress_bar": False,
            **(encode_kwargs or {}),
            "convert_to_numpy": True,
            "convert_to_tensor": False,
        }
        self.model: SentenceTransformer = self.spec.load()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed texts with the configured task.

        Args:
            texts: The texts.

        Returns:
            A float32 array of shape ``(len(texts), dimension)``.
        """
        if not texts:
            return np.zeros((0, self.model.get_embedding_dimension()), dtype=np.float32)
        encode = {"query": self.model.encode_query, "document": self.model.encode_document, None: self.model.encode}
        with report_truncation():
            return np.asarray(encode[self.task](texts, **self.encode_kwargs), dtype=np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add the embeddings of ``batch[text_column]`` as ``batch[output_column]``.

        Args:
            batch: A numpy batch (column name to array).

        Returns:
            The batch with the output column added (all input columns are kept).

        Raises:
            KeyError: If the batch has no text column.
        """
        if self.text_column not in batch:
            raise KeyError(f"The dataset has no column {self.text_column!r}; columns: {sorted(batch)}.")
        texts = list(batch[self.text_column].tolist())
        return {**batch, self.output_column: self.encode(texts)}


def embed_dataset(
    dataset: ray.data.Dataset,
    spec: ModelSpec | str | dict[str, Any] | None = None,
    *,
    template: str | list[str] | None = None,
    preset: str | None = None,
    text_column: str = "text",
    output_column: str = "embedding",
    task: Task | None = "document",
    batch_size: int = 256,
    encode_batch_size: int = 32,
    concurrency: int | tuple[int, int] = 1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    normalize_embeddings: bool = False,
    encode_kwargs: dict[str, Any] | None = None,
    **map_batches_kwargs: Any,
) -> ray.data.Dataset:
    """Embed the text column of a Ray Dataset with a pool of actors that each hold the TP model.

    The result is lazy, like every Ray Dataset transformation: write it out (``write_parquet``...) or consume it
    (``iter_batches``, ``take_all``...) to run it. Rows keep all their input columns, so keep an id column to join
    the embeddings back; Ray Data does not preserve row order unless
    ``ray.data.DataContext.get_current().execution_options.preserve_order = True``.

    Args:
        dataset: The dataset.
        spec: The model: a :class:`~sentence_transformers_tp.integrations.ModelSpec`, a saved TP folder or backbone
            name/path, or a dict of ``ModelSpec`` fields. It is sent by value to each actor, which loads the model
            itself, so paths must be valid on every node.
        template: For a backbone: template(s) (sets ``ModelSpec.template``).
        preset: For a backbone: preset name or YAML path (sets ``ModelSpec.preset``).
        text_column: The column holding the texts. Defaults to ``"text"``.
        output_column: The new column with the float32 embeddings. Defaults to ``"embedding"``.
        task: ``"document"`` (default), ``"query"`` or None (plain ``encode``).
        batch_size: Rows per ``map_batches`` batch (one actor call). Defaults to 256.
        encode_batch_size: Batch size of the model's forward passes inside a batch. Defaults to 32.
        concurrency: Number of actors (each loads one copy of the model), or ``(min, max)`` for an autoscaling
            pool. Defaults to 1.
        num_cpus: CPUs reserved per actor (Ray's default: 1).
        num_gpus: GPUs reserved per actor (e.g. 1 to put each model on its own GPU).
        normalize_embeddings: Return unit-length vectors. Defaults to False.
        encode_kwargs: Further keyword arguments of the encode method.
        **map_batches_kwargs: Further ``Dataset.map_batches`` arguments (``memory``, ``resources``...).

    Returns:
        The dataset with ``output_column`` added.
    """
    spec = ModelSpec.coerce(spec, template=template, preset=preset)
    if isinstance(concurrency, tuple):
        compute = ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    else:
        compute = ray.data.ActorPoolStrategy(size=concurrency)
    resources = {key: value for key, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)) if value is not None}
    return dataset.map_batches(
        TokenPrependingEncoder,
        fn_constructor_kwargs={
            "spec": spec,
            "text_column": text_column,
            "output_column": output_column,
            "task": task,
            "encode_batch_size": encode_batch_size,
            "normalize_embeddings": normalize_embeddings,
            "encode_kwargs": encode_kwargs,
        },
        batch_size=batch_size,
        compute=compute,
        batch_format="numpy",
        **resources,
        **map_batches_kwargs,
    )
