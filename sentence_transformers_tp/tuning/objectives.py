"""What a pass is scored on: :meth:`Objective.score_layer` turns one layer's embeddings into pair cosines or rankings
and those into Spearman x 100 or nDCG@10 x 100, what ``evaluate_sts`` / ``evaluate_retrieval`` report for a model
built at that layer (raw similarity scores, then the metric, as mteb)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from sentence_transformers_tp.data import STSData
from sentence_transformers_tp.evaluation.retrieval import BEIRData, rank_documents, ranking_metrics
from sentence_transformers_tp.evaluation.sts import cosine_scores, spearman
from sentence_transformers_tp.settings import span_mean

__all__ = ["NDCGObjective", "Objective", "SpanObjective", "SpearmanObjective", "score_layers"]


class Objective:
    """Scores ``(n, num_layers + 1, hidden)`` states at every layer; :attr:`texts` are what a pass embeds and
    :attr:`signature` is a key of the data (checkpoints are keyed by it)."""

    texts: list[str]
    signature: str

    def __call__(self, *states: np.ndarray) -> list[float]:
        """One score per layer (``nan`` where undefined); several arrays for objectives over several passes."""
        return [self.score_layer(*(s[:, layer] for s in states)) for layer in range(states[0].shape[1])]

    def score_layer(self, *embeddings: np.ndarray) -> float:
        """The score of the embeddings of one layer (the hook subclasses override)."""
        raise NotImplementedError


class SpearmanObjective(Objective):
    """Spearman x 100 of the pair cosines of STS ``data`` vs its gold scores (each sentence embedded once)."""

    def __init__(self, data: STSData) -> None:
        self.texts = list(dict.fromkeys([*data.sentence1, *data.sentence2]))
        row = {text: i for i, text in enumerate(self.texts)}
        self.index1 = np.array([row[t] for t in data.sentence1], dtype=int)
        self.index2 = np.array([row[t] for t in data.sentence2], dtype=int)
        self.gold = np.asarray(data.scores, dtype=np.float64)
        pairs = json.dumps([data.sentence1, data.sentence2, list(data.scores)]).encode("utf-8")
        self.signature = f"sts:{len(data)}:{hashlib.sha1(pairs).hexdigest()[:12]}"

    def score_layer(self, embeddings: np.ndarray) -> float:
        """Spearman x 100 of ``cosine(a, b)`` over the pairs."""
        return 100.0 * spearman(cosine_scores(embeddings[self.index1], embeddings[self.index2]), self.gold)


class NDCGObjective(Objective):
    """nDCG@10 x 100 (or another ranking metric) of some queries over a corpus.

    Args:
        data: The queries, corpus and qrels.
        query_ids: The queries scored (rows of the query states are ``data.queries`` order).
        metric: The :func:`~sentence_transformers_tp.evaluation.retrieval.ranking_metrics` key of :meth:`score_layer`.
    """

    def __init__(self, data: BEIRData, query_ids: Sequence[str], metric: str = "ndcg_at_10") -> None:
        position = {q: i for i, q in enumerate(data.queries)}
        self.data, self.query_ids, self.metric = data, list(query_ids), metric
        self.rows = np.array([position[q] for q in self.query_ids], dtype=int)

    def metrics(
        self, queries: np.ndarray, documents: np.ndarray, k_values: Sequence[int] = (10,)
    ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """``(means, per_query)`` metrics x 100 at ``k_values`` of one layer's embeddings of all ``data.queries`` and
        of the corpus (raw cosine rankings, then the metric)."""
        rankings = rank_documents(queries[self.rows], documents, self.data.doc_ids, top_k=max(k_values))
        qrels = {q: self.data.qrels[q] for q in self.query_ids}
        means, per_query = ranking_metrics(dict(zip(self.query_ids, rankings)), qrels, k_values=k_values)
        scale = lambda values: {key: 100.0 * value for key, value in values.items()}
        return scale(means), {q: scale(values) for q, values in per_query.items()}

    def score_layer(self, queries: np.ndarray, documents: np.ndarray) -> float:
        """The metric of one layer."""
        return self.metrics(queries, documents)[0][self.metric]


class SpanObjective(Objective):
    """An objective on the mean of ``span`` consecutive layers ending at each layer (:func:`span_mean`): what a
    Setting with ``layer_span=span`` scores at each output layer, from the same all-layer states (nan where the span
    would start below layer 1).

    Args:
        objective: The objective scored on the span means.
        span: Consecutive layers averaged (>= 2).
    """

    def __init__(self, objective: Objective, span: int) -> None:
        self.objective, self.span = objective, span
        self.texts, self.signature = objective.texts, f"{objective.signature}:span{span}"

    def __call__(self, *states: np.ndarray) -> list[float]:
        """One score per layer of the span means (nan below ``span``)."""
        means = [span_mean(s, self.span) for s in states]
        scores = [self.objective.score_layer(*(m[:, k] for m in means)) for k in range(self.span, means[0].shape[1])]
        return [float("nan")] * self.span + scores


def score_layers(states: np.ndarray, index1: np.ndarray, index2: np.ndarray, gold: Sequence[float]) -> list[float]:
    """Deprecated (kept for one release; use :class:`SpearmanObjective`): Spearman x 100 of all-layer pair states."""
    gold = np.asarray(gold, dtype=np.float64)
    return [
        100.0 * spearman(cosine_scores(states[index1, k], states[index2, k]), gold) for k in range(states.shape[1])
    ]
