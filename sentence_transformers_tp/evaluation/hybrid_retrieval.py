"""Hybrid retrieval on a BEIR-layout folder: each channel alone and the fused hybrid, from one set of encodings.

:func:`evaluate_hybrid_retrieval` indexes the corpus once with a
:class:`~sentence_transformers_tp.hybrid.retriever.HybridRetriever` (dense, optional sparse, BM25), computes every
channel's run of the queries once, and scores from those runs a row per channel (``"<name> dense"``,
``"<name> sparse"``, ``"<name> bm25"``) and the hybrid row (``"<name> hybrid rsf dense 0.30 + bm25 0.70"``). The
fusion setting comes from, in order: the ``fusion`` / ``weights`` arguments, the backbone preset's tuned ``hybrid``
block (:func:`~sentence_transformers_tp.hybrid.preset.preset_fusion`), or
:func:`~sentence_transformers_tp.hybrid.selection.choose_fusion` on the evaluated queries (half chosen on, half
held out; the result records the held-out score, and such a row is tuned on the data it reports).

:func:`evaluate_hybrid_mteb` runs the same fusion through MTEB's own ``HybridSearch`` with MTEB's bm25s model, on
the local MTEB task of the folder: its nDCG@10 equals the hybrid row's.

Rankings are scored as pytrec_eval does (equal scores ordered by document id, descending); metrics as in
:mod:`sentence_transformers_tp.evaluation.retrieval`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentence_transformers_tp.evaluation.retrieval import (
    DEFAULT_K_VALUES,
    RetrievalResult,
    RetrievalTaskResult,
    load_beir,
    ranking_metrics,
)
from sentence_transformers_tp.evaluation.sts import card_model_name
from sentence_transformers_tp.hybrid.fusion import RRF_K, Run
from sentence_transformers_tp.hybrid.preset import preset_fusion
from sentence_transformers_tp.hybrid.retriever import CHANNELS, HybridRetriever
from sentence_transformers_tp.hybrid.selection import FusionSetting, choose_fusion


@dataclass
class HybridRetrievalResult:
    """The rows of :func:`evaluate_hybrid_retrieval`.

    Attributes:
        rows: ``(label, result)`` per channel alone and for the hybrid (last).
        setting: The fusion setting of the hybrid row.
        setting_source: ``"given"``, ``"preset"`` or ``"tuned"`` (chosen on half of these queries).
        choice: The :class:`~sentence_transformers_tp.hybrid.selection.FusionChoice` when tuned here, else None.
    """

    rows: list[tuple[str, RetrievalResult]]
    setting: FusionSetting
    setting_source: str
    choice: Any = None

    @property
    def hybrid(self) -> RetrievalResult:
        """The hybrid row's result."""
        return self.rows[-1][1]


def _rankings(run: Run, query_ids: Sequence[str], doc_ids: Sequence[str], k: int) -> dict[str, list[str]]:
    """Document ids per query, best first, equal scores by id descending (pytrec_eval's order)."""
    indices, scores = run
    out: dict[str, list[str]] = {}
    for qid, row, row_scores in zip(query_ids, indices, scores):
        pairs = [(float(s), doc_ids[int(i)]) for i, s in zip(row, row_scores) if i >= 0]
        pairs.sort(reverse=True)
        out[qid] = [doc for _, doc in pairs[:k]]
    return out


def _setting_from_block(block: Mapping[str, Any]) -> FusionSetting:
    channels = tuple(c for c in CHANNELS if c in block["channels"])
    return FusionSetting(channels, str(block.get("fusion", "rsf")), {c: float(block["weights"][c]) for c in channels})


def evaluate_hybrid_retrieval(
    model: Any,
    folder: str | Path,
    split: str | None = None,
    *,
    sparse_model: Any = None,
    bm25: bool | Mapping[str, Any] = True,
    fusion: str | None = None,
    weights: Mapping[str, float] | None = None,
    rrf_k: int = RRF_K,
    use_preset: bool = True,
    limit: int | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    corpus_sample: int | None = None,
    corpus_seed: int | None = None,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    channel_k: int = 1000,
    batch_size: int = 32,
    chunk_size: int = 256,
    index_path: str | Path | None = None,
    show_progress_bar: bool = False,
    encode_kwargs: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> HybridRetrievalResult:
    """Score each channel alone and the hybrid on one BEIR split, sharing one index and one set of runs.

    Args:
        model: The dense model (a ``SentenceTransformer``), or None for no dense channel.
        folder: The BEIR folder.
        split: The qrels split (``None``: ``"test"`` if present, else the only split).
        sparse_model: A ``SparseEncoder`` for the sparse channel, or None.
        bm25: Use the BM25 channel (or a dict of its settings).
        fusion: ``"rsf"`` / ``"rrf"``; with ``weights``, the hybrid setting to score.
        weights: ``{channel: weight}`` of the hybrid setting (with ``fusion``; default rsf).
        rrf_k: Rank constant of ``rrf``.
        use_preset: Use the backbone preset's tuned ``hybrid`` block when no setting is given.
        limit: Evaluate only the first ``limit`` queries.
        sample: Evaluate ``sample`` random queries instead (seeded by ``sample_seed``).
        sample_seed: Seed of the query draw (and of the tuning / held-out split when tuned here).
        corpus_sample: Search only the relevant documents plus ``corpus_sample`` random others.
        corpus_seed: Seed of the document draw (default ``sample_seed``).
        k_values: Metric cut-offs.
        channel_k: Documents per query and channel before fusion (1000: MTEB's ``HybridSearch`` depth under MTEB's
            default cut-offs).
        batch_size: Encode batch size.
        chunk_size: Documents per encode call.
        index_path: Folder to save the index to, or to load it from when it holds this corpus's index.
        show_progress_bar: Show progress bars.
        encode_kwargs: Further encode keyword arguments.
        model_name: Name in the row labels (default: the model card's name, else ``"model"``).
        config: Free-form configuration recorded in each result.

    Returns:
        The rows (channels alone, then the hybrid), the setting and where it came from.

    Raises:
        ValueError: For weights without a matching channel, or no channel at all.
    """
    data = load_beir(folder, split).subset(
        limit, sample, sample_seed, corpus_sample=corpus_sample, corpus_seed=corpus_seed
    )
    name = model_name or card_model_name(model) or card_model_name(sparse_model) or "model"
    start = time.perf_counter()
    retriever = HybridRetriever(
        model,
        sparse_model,
        bm25=bm25,
        channel_k=channel_k,
        rrf_k=rrf_k,
        batch_size=batch_size,
        chunk_size=chunk_size,
        show_progress_bar=show_progress_bar,
        encode_kwargs=encode_kwargs,
    )
    retriever.index(data.documents(), ids=data.doc_ids, path=index_path)
    index_seconds = time.perf_counter() - start
    query_ids = list(data.queries)
    start = time.perf_counter()
    runs = retriever.channel_runs([data.queries[q] for q in query_ids], max(channel_k, max(k_values)))
    search_seconds = time.perf_counter() - start

    choice = None
    if weights is not None:
        setting = FusionSetting(
            tuple(c for c in CHANNELS if c in weights), fusion or "rsf", {c: float(w) for c, w in weights.items()}
        )
        source = "given"
    elif fusion is not None:
        setting = FusionSetting(tuple(retriever.channels), fusion, dict(retriever.weights))
        source = "given"
    else:
        block = preset_fusion(model) if use_preset and model is not None else None
        if block is not None and set(block["channels"]) <= set(retriever.channels):
            setting, source = _setting_from_block(block), "preset"
        else:
            choice = choose_fusion(runs, query_ids, data.qrels, data.doc_ids, seed=sample_seed, rrf_k=rrf_k)
            setting, source = choice.setting, "tuned"
    unknown = set(setting.channels) - set(retriever.channels)
    if unknown:
        raise ValueError(f"the hybrid setting uses channel(s) {sorted(unknown)} that this run does not have")

    def row(label: str, run: Run, extra: Mapping[str, Any]) -> tuple[str, RetrievalResult]:
        means, per_query = ranking_metrics(
            _rankings(run, query_ids, data.doc_ids, max(k_values)), data.qrels, k_values
        )
        task = RetrievalTaskResult(
            task=data.name,
            split=data.split,
            metrics={key: 100.0 * value for key, value in means.items()},
            n_queries=len(query_ids),
            n_docs=len(data.doc_ids),
            corpus_size=data.corpus_size,
            path=str(data.folder),
            seconds=index_seconds + search_seconds,
            query_seconds=search_seconds,
            document_seconds=index_seconds,
            per_query=per_query,
        )
        settings: dict[str, Any] = {
            "limit": limit,
            "batch_size": batch_size,
            "k_values": list(k_values),
            "channel_k": channel_k,
            "full_corpus": task.full_corpus,
            **extra,
        }
        if sample is not None:
            settings.update({"sample": sample, "sample_seed": sample_seed})
        if corpus_sample is not None:
            settings.update({"corpus_sample": corpus_sample, "corpus_seed": data.corpus_seed})
        result = RetrievalResult(tasks={task.task: task}, model=label, config=dict(config or {}), settings=settings)
        return label, result

    rows = [row(f"{name} {channel}", runs[channel], {"channel": channel}) for channel in retriever.channels]
    fused = retriever.fuse_runs(
        runs, max(k_values), fusion=setting.fusion, weights={c: setting.weights[c] for c in setting.channels}
    )
    extra: dict[str, Any] = {"channel": "hybrid", "hybrid": setting.to_dict(), "hybrid_source": source}
    if choice is not None:
        extra["hybrid_tuning"] = choice.to_preset()["score"]
    rows.append(row(f"{name} hybrid {setting.label}", fused, extra))
    return HybridRetrievalResult(rows=rows, setting=setting, setting_source=source, choice=choice)


def _mteb_encoder(model: Any) -> Any:
    """The MTEB encoder of a channel model (TP models with their own ModelMeta)."""
    from sentence_transformers import SparseEncoder

    if isinstance(model, SparseEncoder):
        from mteb.models.sentence_transformer_wrapper import SparseEncoderWrapper

        return SparseEncoderWrapper(model)
    from sentence_transformers_tp.evaluation.model_meta import wrap_for_mteb
    from sentence_transformers_tp.module import TokenPrependingTransformer

    if any(isinstance(module, TokenPrependingTransformer) for module in model):
        return wrap_for_mteb(model)
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    return SentenceTransformerEncoderWrapper(model)


def mteb_hybrid_model(setting: FusionSetting, model: Any = None, sparse_model: Any = None, rrf_k: int = RRF_K) -> Any:
    """MTEB's own search model for a fusion setting: ``HybridSearch`` over MTEB's bm25s model and the encoders.

    Args:
        setting: The fusion setting.
        model: The dense model (needed when the setting uses ``dense``).
        sparse_model: The ``SparseEncoder`` (needed when the setting uses ``sparse``).
        rrf_k: Rank constant of ``rrf``.

    Returns:
        A ``mteb.models.hybrid_wrappers.HybridSearch`` (or the single channel's MTEB model).
    """
    import mteb

    models = []
    for channel in setting.channels:
        if channel == "bm25":
            models.append(mteb.get_model("mteb/baseline-bm25s"))
        else:
            source = model if channel == "dense" else sparse_model
            if source is None:
                raise ValueError(f"the setting uses the {channel} channel: pass its model")
            models.append(_mteb_encoder(source))
    if len(models) == 1:
        return models[0]
    from mteb.models.hybrid_wrappers import HybridSearch

    return HybridSearch(
        models, weights=[setting.weights[c] for c in setting.channels], fusion_strategy=setting.fusion, rrf_k=rrf_k
    )


def evaluate_hybrid_mteb(
    setting: FusionSetting,
    folder: str | Path,
    split: str | None = None,
    *,
    model: Any = None,
    sparse_model: Any = None,
    rrf_k: int = RRF_K,
    limit: int | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    corpus_sample: int | None = None,
    corpus_seed: int | None = None,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> Any:
    """Run a fusion setting through ``mteb.evaluate`` with MTEB's ``HybridSearch`` on the folder's local task.

    Args:
        setting: The fusion setting (e.g. ``evaluate_hybrid_retrieval(...).setting``).
        folder: The BEIR folder.
        split: The qrels split.
        model: The dense model.
        sparse_model: The ``SparseEncoder``.
        rrf_k: Rank constant of ``rrf``.
        limit: First ``limit`` queries.
        sample: ``sample`` random queries.
        sample_seed: Seed of the query draw.
        corpus_sample: Corpus subset (as :func:`evaluate_hybrid_retrieval`).
        corpus_seed: Seed of the document draw.
        batch_size: Encode batch size.
        show_progress_bar: Show MTEB's progress bars.

    Returns:
        MTEB's ``ModelResult`` (no result cache).
    """
    import mteb

    from sentence_transformers_tp.evaluation.mteb_retrieval import local_retrieval_task

    task = local_retrieval_task(
        folder,
        split,
        limit=limit,
        sample=sample,
        sample_seed=sample_seed,
        corpus_sample=corpus_sample,
        corpus_seed=corpus_seed,
    )
    return mteb.evaluate(
        mteb_hybrid_model(setting, model, sparse_model, rrf_k),
        [task],
        cache=None,
        show_progress_bar=show_progress_bar,
        encode_kwargs={"batch_size": batch_size},
    )


__all__ = [
    "HybridRetrievalResult",
    "evaluate_hybrid_mteb",
    "evaluate_hybrid_retrieval",
    "mteb_hybrid_model",
]
