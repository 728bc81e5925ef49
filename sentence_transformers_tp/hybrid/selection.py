"""Choosing the channels, the fusion rule and the weights of a hybrid retriever on cached channel runs.

:func:`choose_fusion` is a pure function: it takes each channel's run on tuning queries (computed once, e.g. with
:meth:`~sentence_transformers_tp.hybrid.retriever.HybridRetriever.channel_runs`), their qrels, and scores every
candidate setting by mean nDCG@10 on one half of the queries, keeping the other half as a held-out check:

* each channel alone (BM25 alone is always a candidate, so the choice is never below BM25 on the tuning queries:
  a dense weight of 0 is BM25);
* every pair of channels with ``rsf`` and ``rrf`` and the weight of the first channel of the pair (dense before
  sparse before BM25) on a grid (default 0.05 ... 0.95, step 0.05);
* with three channels, every weight triple on a grid of step 0.1, with both rules.

Ties keep the simpler setting (fewer channels, BM25 first, then ``rsf``, then the lower first weight).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sentence_transformers_tp.evaluation.retrieval import ranking_metrics
from sentence_transformers_tp.hybrid.fusion import CHANNELS, FUSIONS, RRF_K, Run, fuse

CHANNEL_ORDER: tuple[str, ...] = CHANNELS
"""Fusion order of the channels (a setting's weights are listed in this order)."""

PAIR_WEIGHTS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Default grid of the first channel's weight in a pair (the second gets ``1 - w``)."""

TRIPLE_STEP = 0.1
"""Grid step of the weights of three channels."""


@dataclass(frozen=True)
class FusionSetting:
    """One candidate: channels, fusion rule and weights.

    Attributes:
        channels: Channel names in fusion order.
        fusion: ``"rsf"`` or ``"rrf"`` (irrelevant for one channel).
        weights: ``{channel: weight}``.
    """

    channels: tuple[str, ...]
    fusion: str
    weights: dict[str, float] = field(hash=False)

    @property
    def label(self) -> str:
        """A short label, e.g. ``"rsf dense 0.30 + bm25 0.70"`` or ``"bm25"``."""
        if len(self.channels) == 1:
            return self.channels[0]
        return f"{self.fusion} " + " + ".join(f"{c} {self.weights[c]:.2f}" for c in self.channels)

    def to_dict(self) -> dict[str, Any]:
        """The preset block: ``{"channels": [...], "fusion": ..., "weights": {...}}``."""
        return {
            "channels": list(self.channels),
            "fusion": self.fusion,
            "weights": {c: round(float(self.weights[c]), 4) for c in self.channels},
        }


@dataclass
class FusionChoice:
    """The result of :func:`choose_fusion`.

    Attributes:
        setting: The chosen setting.
        tuning_ndcg_at_10: Its mean nDCG@10 x 100 on the tuning queries.
        held_out_ndcg_at_10: Its mean nDCG@10 x 100 on the held-out queries (None without held-out queries).
        baselines: Per channel alone, ``{"tuning": ..., "held_out": ...}`` nDCG@10 x 100.
        candidates: Every candidate's ``(label, tuning nDCG@10 x 100)``, best first.
        n_tuning: Tuning queries.
        n_held_out: Held-out queries.
    """

    setting: FusionSetting
    tuning_ndcg_at_10: float
    held_out_ndcg_at_10: float | None
    baselines: dict[str, dict[str, float | None]]
    candidates: list[tuple[str, float]]
    n_tuning: int
    n_held_out: int

    def to_preset(self) -> dict[str, Any]:
        """The ``hybrid`` block of a preset: the setting plus a ``score`` record."""
        score: dict[str, Any] = {
            "tuning_queries": self.n_tuning,
            "held_out_queries": self.n_held_out,
            "ndcg_at_10": round(self.tuning_ndcg_at_10, 2),
            "held_out_ndcg_at_10": None if self.held_out_ndcg_at_10 is None else round(self.held_out_ndcg_at_10, 2),
        }
        for name, values in self.baselines.items():
            score[f"{name}_ndcg_at_10"] = None if values["tuning"] is None else round(values["tuning"], 2)
            held = values["held_out"]
            score[f"held_out_{name}_ndcg_at_10"] = None if held is None else round(held, 2)
        return {**self.setting.to_dict(), "score": score}

    def to_markdown(self, top: int = 10) -> str:
        """A table of the best candidates and the chosen setting's held-out check."""
        lines = ["| setting | tuning nDCG@10 |", "|---|---:|"]
        lines += [f"| {label} | {score:.2f} |" for label, score in self.candidates[:top]]
        held = "–" if self.held_out_ndcg_at_10 is None else f"{self.held_out_ndcg_at_10:.2f}"
        lines.append("")
        lines.append(f"Chosen: {self.setting.label}: tuning {self.tuning_ndcg_at_10:.2f}, held-out {held}")
        for name, values in self.baselines.items():
            held_base = "–" if values["held_out"] is None else f"{values['held_out']:.2f}"
            lines.append(f"{name} alone: tuning {values['tuning']:.2f}, held-out {held_base}")
        return "\n".join(lines) + "\n"


def candidate_settings(
    channels: Sequence[str],
    *,
    fusions: Sequence[str] = FUSIONS,
    pair_weights: Sequence[float] = PAIR_WEIGHTS,
    triple_step: float = TRIPLE_STEP,
) -> list[FusionSetting]:
    """Every candidate setting over the given channels (see the module docstring), simplest first.

    Args:
        channels: Available channels.
        fusions: Fusion rules to try.
        pair_weights: Grid of the first channel's weight in a pair.
        triple_step: Grid step for three channels.

    Returns:
        The settings.
    """
    names = [c for c in CHANNEL_ORDER if c in channels]
    unknown = set(channels) - set(CHANNEL_ORDER)
    if unknown or not names:
        raise ValueError(f"channels must be among {CHANNEL_ORDER}, got {list(channels)}")
    for rule in fusions:
        if rule not in FUSIONS:
            raise ValueError(f"unknown fusion {rule!r}; choose among {', '.join(FUSIONS)}")
    singles = sorted(names, key=lambda c: c != "bm25")  # BM25 first: it wins ties
    settings = [FusionSetting((c,), "rsf", {c: 1.0}) for c in singles]
    for rule in fusions:
        for first, second in itertools.combinations(names, 2):
            for w in pair_weights:
                if not 0 < w < 1:
                    raise ValueError(f"pair weights must be in (0, 1), got {w}")
                settings.append(FusionSetting((first, second), rule, {first: float(w), second: round(1 - w, 6)}))
    if len(names) == 3:
        steps = int(round(1 / triple_step))
        for rule in fusions:
            for i in range(1, steps):
                for j in range(1, steps - i):
                    a, b = round(i * triple_step, 6), round(j * triple_step, 6)
                    weights = dict(zip(names, (a, b, round(1 - a - b, 6))))
                    settings.append(FusionSetting(tuple(names), rule, weights))
    return settings


def _ndcg(
    setting: FusionSetting,
    runs: Mapping[str, Run],
    rows: np.ndarray,
    query_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    doc_ids: Sequence[str],
    tie_key: np.ndarray,
    rrf_k: int,
) -> float:
    """Mean nDCG@10 x 100 of one setting over the given query rows."""
    if len(setting.channels) == 1:
        indices = runs[setting.channels[0]][0][rows, :10]
    else:
        indices, _ = fuse(
            [(runs[c][0][rows], runs[c][1][rows]) for c in setting.channels],
            [setting.weights[c] for c in setting.channels],
            method=setting.fusion,
            k=10,
            rrf_k=rrf_k,
            tie_key=tie_key,
        )
    rankings = {query_ids[r]: [doc_ids[i] for i in row if i >= 0] for r, row in zip(rows, indices)}
    means, _ = ranking_metrics(rankings, qrels, k_values=(10,))
    return 100.0 * means["ndcg_at_10"]


def choose_fusion(
    runs: Mapping[str, Run],
    query_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    doc_ids: Sequence[str],
    *,
    held_out_fraction: float = 0.5,
    seed: int = 0,
    held_out: Sequence[str] | None = None,
    fusions: Sequence[str] = FUSIONS,
    pair_weights: Sequence[float] = PAIR_WEIGHTS,
    triple_step: float = TRIPLE_STEP,
    rrf_k: int = RRF_K,
) -> FusionChoice:
    """Choose channels, fusion rule and weights by nDCG@10 on tuning queries, with a held-out check.

    Args:
        runs: ``{channel: (indices, scores)}``, one row per query of ``query_ids`` (positions into ``doc_ids``).
        query_ids: The queries of the runs' rows.
        qrels: ``{query id: {document id: relevance}}``.
        doc_ids: Document ids of the corpus the runs index.
        held_out_fraction: Share of the queries kept out of the choice (drawn at random, seeded); 0: none.
        seed: Seed of that draw.
        held_out: The held-out query ids themselves (e.g. a tuner's own split), instead of a random draw.
        fusions: Fusion rules to try.
        pair_weights: Grid of the first channel's weight in a pair.
        triple_step: Grid step for three channels.
        rrf_k: Rank constant of ``rrf``.

    Returns:
        The choice (never below BM25 alone on the tuning queries when a BM25 run is given).

    Raises:
        ValueError: On runs of the wrong shape, unknown channels or fewer than 2 queries with a held-out split.
    """
    query_ids = list(query_ids)
    n = len(query_ids)
    for name, (indices, scores) in runs.items():
        if np.asarray(indices).shape[0] != n or np.asarray(scores).shape[0] != n:
            raise ValueError(f"the {name} run has {np.asarray(indices).shape[0]} rows for {n} queries")
    if not 0 <= held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
    if held_out is not None:
        unknown = set(held_out) - set(query_ids)
        if unknown:
            raise ValueError(f"held-out query ids not among the queries: {sorted(unknown)[:5]}")
        held_set = set(held_out)
        held_rows = np.array([i for i, q in enumerate(query_ids) if q in held_set], dtype=np.int64)
        tune_rows = np.array([i for i, q in enumerate(query_ids) if q not in held_set], dtype=np.int64)
        n_held = len(held_rows)
        if len(tune_rows) < 1:
            raise ValueError("every query is held out: no query is left to choose on")
    else:
        n_held = int(round(n * held_out_fraction))
        if n - n_held < 1 or (held_out_fraction > 0 and n_held < 1):
            raise ValueError(f"{n} queries are too few for a held-out fraction of {held_out_fraction}")
        order = np.random.default_rng(seed).permutation(n)
        held_rows, tune_rows = np.sort(order[:n_held]), np.sort(order[n_held:])
    order_ids = sorted(range(len(doc_ids)), key=lambda i: doc_ids[i])
    tie_key = np.empty(len(doc_ids), dtype=np.int64)
    tie_key[np.asarray(order_ids, dtype=np.int64)] = np.arange(len(doc_ids))
    common = (query_ids, qrels, doc_ids, tie_key, rrf_k)

    scored: list[tuple[float, int, FusionSetting]] = []
    for position, setting in enumerate(
        candidate_settings(list(runs), fusions=fusions, pair_weights=pair_weights, triple_step=triple_step)
    ):
        scored.append((_ndcg(setting, runs, tune_rows, *common), position, setting))
    scored.sort(key=lambda item: (-item[0], item[1]))
    best_score, _, best = scored[0]

    def held(setting: FusionSetting) -> float | None:
        return _ndcg(setting, runs, held_rows, *common) if n_held else None

    baselines = {
        setting.channels[0]: {"tuning": score, "held_out": held(setting)}
        for score, _, setting in scored
        if len(setting.channels) == 1
    }
    return FusionChoice(
        setting=best,
        tuning_ndcg_at_10=best_score,
        held_out_ndcg_at_10=held(best),
        baselines={c: baselines[c] for c in CHANNEL_ORDER if c in baselines},
        candidates=[(setting.label, score) for score, _, setting in scored],
        n_tuning=len(tune_rows),
        n_held_out=n_held,
    )


__all__ = [
    "CHANNEL_ORDER",
    "PAIR_WEIGHTS",
    "TRIPLE_STEP",
    "FusionChoice",
    "FusionSetting",
    "candidate_settings",
    "choose_fusion",
]
