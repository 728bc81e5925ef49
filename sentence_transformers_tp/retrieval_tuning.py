"""Tuning the retrieval settings of a backbone (query side and document side) on a BEIR-layout train split.

The search runs on one loaded backbone and goes through the module's public
:meth:`~sentence_transformers_tp.module.TokenPrependingTransformer.embed` (via
:func:`~sentence_transformers_tp.tuning.encode_all_layers`, with the prefix cache), so one pass per side setting
scores every output layer:

1. **queries and documents**: a seeded sample of ``sample`` queries and a corpus of their relevant documents plus
   ``corpus_sample`` random others (:meth:`~sentence_transformers_tp.evaluation.retrieval.BEIRData.subset`); the
   sampled queries are split at random into a tuning half and a held-out half;
2. **document passes**: every document template with TP off and with each band of ``tp_bands`` (and the module's
   own setting, e.g. a preset's tuned STS combination, when ``include_default``), each one all-layer pass over the
   corpus sample, truncated to ``max_seq_length`` tokens;
3. **query passes**: the same for the query templates (short texts: cheap);
4. **grid**: nDCG@10 of the tuning queries for every (query setting, document setting, output layer) cell, with
   the same output layer on both sides (no pass);
5. **winner**: the best cell; ties (within ``min_gain`` points) go to the simpler setting (fewer changes from
   vanilla PromptEOL: another template, TP, demonstrations count one each per side), and it is never below vanilla
   PromptEOL (TP off on both sides) at its best layer, which is always a cell;
6. **held-out check**: nDCG@10, MRR@10 and Recall@100 of the winner and of vanilla PromptEOL (each at its layer
   chosen on the tuning half) on the held-out half;
7. **document length**: per-query nDCG@10 of every document template with TP off vs on (the winner's query
   setting and layer), grouped by the token length of each query's relevant documents (terciles), on all sampled
   queries: the measurement behind the choice of TP for documents.

Passes: ``len(document_templates) * (1 + len(tp_bands)) (+ 1)`` over the documents and the same count over the
queries. The winner becomes the ``query`` / ``document`` entries of a preset's ``task_settings``
(:func:`write_task_settings`), which ``TokenPrependingTransformer(backbone)`` applies to ``encode_query`` /
``encode_document`` (and to MTEB's query / document prompts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentence_transformers_tp.demonstrations import parse_demonstrations, to_config
from sentence_transformers_tp.evaluation.retrieval import BEIRData, load_beir, rank_documents, ranking_metrics
from sentence_transformers_tp.interventions import ForwardSettings
from sentence_transformers_tp.templates import resolve_templates, template_names, with_demonstrations
from sentence_transformers_tp.tuning import encode_all_layers

logger = logging.getLogger(__name__)

__all__ = ["RetrievalTuning", "Side", "choose_winner", "task_settings_entry", "tune_retrieval", "write_task_settings"]

DEFAULT_QUERY_TEMPLATES = ("prompteol", "retrieval_query")
DEFAULT_DOCUMENT_TEMPLATES = ("prompteol", "retrieval_document")
HEADLINE = ("ndcg_at_10", "mrr_at_10", "recall_at_100")


@dataclass(frozen=True)
class Side:
    """The settings of one side (queries or documents); the output layer is scored for all layers at once.

    Args:
        template: A built-in template name, a user template, or a tuple of them (an ensemble).
        tp: ``(tp_start, tp_exit)``, or None for TP off.
        demonstrations: ``((sentence, word), ...)`` put in front of the template.
    """

    template: str | tuple[str, ...]
    tp: tuple[int, int] | None = None
    demonstrations: tuple[tuple[str, str], ...] = ()

    def templates(self) -> tuple[str, ...]:
        """The resolved template strings, with the demonstrations in front."""
        resolved = resolve_templates(self.template)
        if not self.demonstrations:
            return resolved
        demos = parse_demonstrations([list(pair) for pair in self.demonstrations])
        return tuple(with_demonstrations(template, demos) for template in resolved)

    def settings(self) -> ForwardSettings:
        """The forward settings (no Contrastive Prompting)."""
        start, end = self.tp if self.tp is not None else (1, 1)
        return ForwardSettings(tp_start=start, tp_exit=end)

    @property
    def changes(self) -> int:
        """How far the side is from vanilla PromptEOL: another template, TP and demonstrations count one each."""
        names = template_names(self.template)
        return int(names != ("prompteol",)) + int(self.tp is not None) + int(bool(self.demonstrations))

    def label(self) -> str:
        """A short readable name."""
        names = template_names(self.template)
        text = "+".join(names) if names is not None else "user template"
        if self.demonstrations:
            text += " + demo " + ", ".join(repr(word) for _, word in self.demonstrations)
        return text + (f" + TP {self.tp[0]}-{self.tp[1] - 1}" if self.tp is not None else "")

    def key(self) -> str:
        """A stable key (for checkpoints)."""
        return json.dumps([self.template, self.tp, self.demonstrations])

    def entry(self, output_layer: int, max_seq_length: int | None = None) -> dict[str, Any]:
        """The ``task_settings`` entry of the module for this side at one output layer."""
        template = self.template if isinstance(self.template, str) else list(self.template)
        start, end = self.tp if self.tp is not None else (1, 1)
        entry: dict[str, Any] = {
            "template": template,
            "demonstrations": to_config([list(pair) for pair in self.demonstrations]),
            "tp_start": start,
            "tp_exit": end,
            "output_layer": output_layer,
        }
        if max_seq_length is not None:
            entry["max_seq_length"] = max_seq_length
        return entry


@dataclass
class RetrievalTuning:
    """The result of :func:`tune_retrieval`.

    Attributes:
        backbone: Backbone name.
        num_layers: Decoder layers.
        settings: The data and search settings.
        query_sides: Query settings searched, in pass order.
        document_sides: Document settings searched, in pass order.
        grid: nDCG@10 x 100 of the tuning queries, ``grid[query_index][document_index][layer]``.
        seconds: Wall seconds of each pass (``{"query:<label>": s, "document:<label>": s}``).
        winner: ``{"query": index, "document": index, "layer": k, "ndcg_at_10": ...}``.
        vanilla: The same for vanilla PromptEOL (TP off on both sides) at its best layer.
        default: The same for the module's own setting on both sides, when searched.
        held_out: Metrics x 100 on the held-out queries: ``{"winner": {...}, "vanilla": {...}, ...}``.
        lengths: Document length buckets: ``{"edges": [...], "rows": [{"template", "tp", "ndcg_at_10": [...]}]}``.
    """

    backbone: str
    num_layers: int
    settings: dict[str, Any]
    query_sides: list[Side] = field(default_factory=list)
    document_sides: list[Side] = field(default_factory=list)
    grid: list[list[list[float]]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    winner: dict[str, Any] = field(default_factory=dict)
    vanilla: dict[str, Any] = field(default_factory=dict)
    default: dict[str, Any] | None = None
    held_out: dict[str, dict[str, float]] = field(default_factory=dict)
    lengths: dict[str, Any] = field(default_factory=dict)

    @property
    def output_layer(self) -> int:
        """The winner's output layer (``-1`` for the final normed output)."""
        layer = self.winner["layer"]
        return -1 if layer == self.num_layers else layer

    def task_settings(self) -> dict[str, dict[str, Any]]:
        """The winner as the module's ``task_settings`` (``query`` and ``document`` entries)."""
        return {
            "query": self.query_sides[self.winner["query"]].entry(self.output_layer),
            "document": self.document_sides[self.winner["document"]].entry(
                self.output_layer, self.settings.get("max_seq_length")
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (what ``st-tp tune-retrieval --json`` writes)."""

        def cell(item: dict[str, Any] | None) -> dict[str, Any] | None:
            if not item:
                return None
            return {
                **item,
                "query_label": self.query_sides[item["query"]].label(),
                "document_label": self.document_sides[item["document"]].label(),
            }

        return {
            "backbone": self.backbone,
            "num_layers": self.num_layers,
            "settings": self.settings,
            "query_sides": [side.label() for side in self.query_sides],
            "document_sides": [side.label() for side in self.document_sides],
            "grid": self.grid,
            "seconds": self.seconds,
            "winner": cell(self.winner),
            "vanilla": cell(self.vanilla),
            "default": cell(self.default),
            "held_out": self.held_out,
            "lengths": self.lengths,
            "output_layer": self.output_layer,
            "task_settings": self.task_settings(),
        }

    def to_markdown(self) -> str:
        """The report: the best layer of every cell, the winner, the held-out check and the length buckets."""
        s = self.settings
        lines = [
            f"## Retrieval tuning: {self.backbone} on {s['data']} ({s['split']})",
            "",
            f"{s['tuning_queries']} tuning queries and {s['held_out_queries']} held-out queries (seed {s['seed']}) "
            f"over {s['documents']} documents (their relevant documents + {s['corpus_sample']} random others of "
            f"{s['corpus_size']}); documents truncated to {s['max_seq_length']} tokens. nDCG@10 x 100, best layer "
            "per cell (tuning queries):",
            "",
            "| query \\ document | " + " | ".join(side.label() for side in self.document_sides) + " |",
            "|---|" + "---|" * len(self.document_sides),
        ]
        for qi, side in enumerate(self.query_sides):
            cells = []
            for di in range(len(self.document_sides)):
                scores = np.asarray(self.grid[qi][di], dtype=float)
                best = int(np.nanargmax(scores))
                cells.append(f"{scores[best]:.2f} (L{best})")
            lines.append(f"| {side.label()} | " + " | ".join(cells) + " |")
        lines += ["", "| setting | query | document | layer | tuning nDCG@10 | held-out nDCG@10 | MRR@10 | R@100 |"]
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, item in (
            ("winner", self.winner),
            ("vanilla PromptEOL", self.vanilla),
            ("module default", self.default),
        ):
            if not item:
                continue
            held = self.held_out.get(name.split()[0], {})
            lines.append(
                f"| {name} | {self.query_sides[item['query']].label()} | {self.document_sides[item['document']].label()}"
                f" | {item['layer']} | {item['ndcg_at_10']:.2f} | {held.get('ndcg_at_10', float('nan')):.2f} | "
                f"{held.get('mrr_at_10', float('nan')):.2f} | {held.get('recall_at_100', float('nan')):.2f} |"
            )
        if self.lengths.get("rows"):
            edges = self.lengths["edges"]
            buckets = [f"<= {edges[0]}", *(f"{a + 1}-{b}" for a, b in zip(edges, edges[1:])), f"> {edges[-1]}"]
            lines += [
                "",
                f"nDCG@10 x 100 by the token length of the relevant documents (all {s['sampled_queries']} sampled "
                f"queries, query side: {self.query_sides[self.winner['query']].label()}, layer {self.winner['layer']}):",
                "",
                "| document setting | "
                + " | ".join(f"{b} tokens (n={n})" for b, n in zip(buckets, self.lengths["counts"]))
                + " |",
                "|---|" + "---|" * len(buckets),
            ]
            for row in self.lengths["rows"]:
                lines.append(f"| {row['label']} | " + " | ".join(f"{v:.2f}" for v in row["ndcg_at_10"]) + " |")
        lines += ["", "Pass times (all layers captured, wall seconds):", ""]
        lines += [f"- {name}: {sec:.1f} s" for name, sec in self.seconds.items()]
        return "\n".join(lines)


def task_settings_entry(summary: dict[str, Any], command: str | None = None) -> dict[str, dict[str, Any]]:
    """A preset ``task_settings`` block from a :meth:`RetrievalTuning.to_dict` summary: the winner's ``query`` and
    ``document`` entries, each with its score next to vanilla PromptEOL's and the command.

    Args:
        summary: :meth:`RetrievalTuning.to_dict` output.
        command: The command that produced it.

    Returns:
        ``{"query": {...}, "document": {...}}``.
    """
    s = summary["settings"]
    held = summary.get("held_out", {})
    score = {
        "task": s["data"],
        "split": s["split"],
        "tuning_queries": s["tuning_queries"],
        "held_out_queries": s["held_out_queries"],
        "documents": s["documents"],
        "ndcg_at_10": round(summary["winner"]["ndcg_at_10"], 2),
        "vanilla_prompteol_ndcg_at_10": round(summary["vanilla"]["ndcg_at_10"], 2),
        "vanilla_prompteol_layer": summary["vanilla"]["layer"],
        "held_out_ndcg_at_10": _rounded(held.get("winner", {}).get("ndcg_at_10")),
        "held_out_vanilla_ndcg_at_10": _rounded(held.get("vanilla", {}).get("ndcg_at_10")),
    }
    out = {}
    for task, entry in summary["task_settings"].items():
        out[task] = {**entry, "status": "tuned", "score": dict(score)}  # a copy each: no YAML anchors
        if command:
            out[task]["command"] = command
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def write_task_settings(summary: dict[str, Any], preset_path: str | os.PathLike, command: str | None = None) -> Path:
    """Store a retrieval tuning winner as the ``query`` / ``document`` task settings of an existing preset file
    (other task settings and every other key are kept).

    Args:
        summary: :meth:`RetrievalTuning.to_dict` output.
        preset_path: The preset YAML.
        command: The command that produced the summary.

    Returns:
        The path written.
    """
    from sentence_transformers_tp.presets import load_preset_file, update_preset

    kept = load_preset_file(preset_path).task_settings or {}
    return update_preset(preset_path, "task_settings", {**kept, **task_settings_entry(summary, command)})


def choose_winner(
    cells: Sequence[dict[str, Any]],
    vanilla: dict[str, Any],
    changes: Callable[[dict[str, Any]], int],
    min_gain: float,
) -> dict[str, Any]:
    """The cell with the fewest ``changes`` among those within ``min_gain`` points of the best ``ndcg_at_10``
    (the higher score among equals); ``vanilla`` unless the best beats it by more than ``min_gain``.

    Args:
        cells: Scored cells (dicts with ``ndcg_at_10``).
        vanilla: The vanilla cell (the answer unless a cell beats it).
        changes: How many changes from vanilla a cell makes.
        min_gain: Points a cell with more changes must gain.

    Returns:
        The chosen cell.
    """
    if not cells:
        return vanilla
    best = max(cells, key=lambda c: c["ndcg_at_10"])
    if best["ndcg_at_10"] - vanilla["ndcg_at_10"] <= min_gain:
        return vanilla
    near = [c for c in cells if best["ndcg_at_10"] - c["ndcg_at_10"] <= min_gain]
    return min(near, key=lambda c: (changes(c), -c["ndcg_at_10"]))


def _module_side(module: Any) -> Side:
    """The module's own setting (template, demonstrations, TP band) as a side."""
    template = module.template if isinstance(module.template, str) else tuple(module.template)
    demos = tuple(tuple(pair) for pair in (module.demonstrations or []))
    tp = (module.tp_start, module.tp_exit) if module.tp_enabled else None
    return Side(template, tp, demos)


def _split_queries(data: BEIRData, held_out: float, seed: int) -> tuple[list[str], list[str]]:
    ids = list(data.queries)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_held = int(round(len(ids) * held_out))
    held = sorted(order[:n_held].tolist())
    tune = sorted(order[n_held:].tolist())
    return [ids[i] for i in tune], [ids[i] for i in held]


def _normalized(states: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(states, axis=-1, keepdims=True)
    return states / np.where(norms > 0, norms, 1.0)


def tune_retrieval(
    model: Any,
    folder: str | os.PathLike,
    split: str = "train",
    *,
    sample: int | None = 200,
    seed: int = 0,
    corpus_sample: int | None = 800,
    held_out: float = 0.5,
    query_templates: Sequence[str | Sequence[str]] = DEFAULT_QUERY_TEMPLATES,
    document_templates: Sequence[str | Sequence[str]] = DEFAULT_DOCUMENT_TEMPLATES,
    tp_bands: Sequence[tuple[int, int]] | None = None,
    include_default: bool = True,
    max_seq_length: int | None = 512,
    min_gain: float = 0.5,
    batch_size: int = 16,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> RetrievalTuning:
    """Search query and document templates, TP bands and the output layer for retrieval, by nDCG@10.

    Args:
        model: A :class:`~sentence_transformers_tp.module.TokenPrependingTransformer` (or a ``SentenceTransformer``
            whose first module is one); its backbone is reused for every setting.
        folder: A BEIR-layout folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        split: The qrels split to tune on (a train split: never the split you report).
        sample: Queries drawn at random (seeded); None for all.
        seed: Seed of the query draw, the corpus draw and the tuning / held-out split.
        corpus_sample: Random documents added to the relevant documents of the sampled queries; None for the full
            corpus.
        held_out: Fraction of the sampled queries kept out of the choice and used to check it.
        query_templates: Query templates to search.
        document_templates: Document templates to search.
        tp_bands: ``(tp_start, tp_exit)`` bands tried on both sides (default ``(1, 4)``, clipped to the model).
        include_default: Also search the module's own setting (template, demonstrations, TP) on both sides.
        max_seq_length: Token budget of a document prompt (documents are truncated; the template is kept); also
            written into the document task settings. None keeps the module's.
        min_gain: nDCG@10 points a setting with more changes from vanilla must gain over a simpler one.
        batch_size: Texts per forward.
        checkpoint_dir: Folder for the all-layer states of finished passes (``.npy``); a rerun reuses them.
        progress: Called with one line per pass (e.g. ``print``).

    Returns:
        The result; :meth:`RetrievalTuning.task_settings` is the module's ``task_settings`` of the winner.

    Raises:
        ValueError: If ``prompteol`` is missing from either template list, or an argument is out of range.

    Memory: the all-layer states of every pass stay in memory until the grid is scored (float32, ``documents x
    (num_layers + 1) x hidden`` per document setting: 0.3 GB for SmolLM2's five settings over 803 documents), so
    search a corpus sample rather than a large corpus.
    """
    from sentence_transformers_tp.tuning import _as_module

    if not 0 <= held_out < 1:
        raise ValueError(f"held_out must be in [0, 1), got {held_out}.")
    if max_seq_length is not None and max_seq_length < 1:
        raise ValueError(f"max_seq_length must be positive, got {max_seq_length}.")
    module = _as_module(model, None, {})
    num_layers = module.num_layers
    say = progress or (lambda line: logger.info(line))
    bands = [(s, e) for s, e in (tp_bands if tp_bands is not None else [(1, 4)]) if e > s and e <= num_layers]

    data = load_beir(folder, split).subset(sample=sample, seed=seed, corpus_sample=corpus_sample)
    tune_ids, held_ids = _split_queries(data, held_out, seed)
    if not tune_ids:
        raise ValueError("No tuning queries: sample more queries or lower held_out.")
    documents = data.documents()
    query_ids = list(data.queries)
    query_texts = [data.queries[q] for q in query_ids]
    position = {q: i for i, q in enumerate(query_ids)}
    tune_rows = np.array([position[q] for q in tune_ids])
    held_rows = np.array([position[q] for q in held_ids], dtype=int)

    def sides(templates: Sequence[str | Sequence[str]]) -> list[Side]:
        out = [Side(t if isinstance(t, str) else tuple(t), band) for t in templates for band in [None, *bands]]
        own = _module_side(module)
        if include_default and own not in out:
            out.append(own)
        return out

    query_sides, document_sides = sides(query_templates), sides(document_templates)
    if Side("prompteol") not in query_sides or Side("prompteol") not in document_sides:
        raise ValueError(
            "query_templates and document_templates must both include 'prompteol' (the vanilla baseline)."
        )
    result = RetrievalTuning(
        backbone=str(module.backbone_name),
        num_layers=num_layers,
        settings={
            "data": data.name,
            "folder": str(folder),
            "split": split,
            "seed": seed,
            "sampled_queries": len(query_ids),
            "tuning_queries": len(tune_ids),
            "held_out_queries": len(held_ids),
            "documents": len(documents),
            "corpus_sample": corpus_sample,
            "corpus_size": data.corpus_size,
            "max_seq_length": max_seq_length,
            "tp_bands": [list(b) for b in bands],
            "min_gain": min_gain,
        },
        query_sides=query_sides,
        document_sides=document_sides,
    )
    signature = hashlib.sha1(
        json.dumps([str(module.backbone_name), data.name, split, query_ids, data.doc_ids, max_seq_length]).encode()
    ).hexdigest()[:12]
    folder_path = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder_path is not None:
        folder_path.mkdir(parents=True, exist_ok=True)

    def run(kind: str, side: Side, texts: list[str]) -> np.ndarray:
        name = f"{kind}:{side.label()}"
        digest = hashlib.sha1(f"{signature}|{kind}|{side.key()}".encode()).hexdigest()[:16]
        path = folder_path / f"{kind}-{digest}.npy" if folder_path is not None else None
        if path is not None and path.is_file():
            say(f"{name}: reusing {path}")
            result.seconds[name] = float(json.loads(path.with_suffix(".json").read_text())["seconds"])
            return np.load(path)
        start = time.perf_counter()
        saved_length = module.max_seq_length
        if kind == "document" and max_seq_length is not None:
            module.max_seq_length = max_seq_length
        try:
            states = encode_all_layers(
                module,
                texts,
                settings=side.settings(),
                templates=side.templates(),
                batch_size=batch_size,
                show_progress_bar=True,
            )
        finally:
            module.max_seq_length = saved_length
        seconds = time.perf_counter() - start
        states = _normalized(states).astype(np.float32)
        result.seconds[name] = seconds
        if path is not None:
            np.save(path, states)
            path.with_suffix(".json").write_text(json.dumps({"seconds": seconds}))
        say(f"{name}: {len(texts)} texts in {seconds:.1f} s")
        return states

    doc_states = [run("document", side, documents) for side in document_sides]
    query_states = [run("query", side, query_texts) for side in query_sides]

    def metrics(qi: int, di: int, layer: int, rows: np.ndarray, ids: Sequence[str]) -> dict[str, float]:
        rankings = rank_documents(query_states[qi][rows, layer], doc_states[di][:, layer], data.doc_ids, top_k=100)
        means, _ = ranking_metrics(dict(zip(ids, rankings)), {q: data.qrels[q] for q in ids}, k_values=(10, 100))
        return {key: 100 * means[key] for key in HEADLINE}

    def ndcg_per_layer(qi: int, di: int) -> list[float]:
        out = []
        for layer in range(num_layers + 1):
            rankings = rank_documents(query_states[qi][tune_rows, layer], doc_states[di][:, layer], data.doc_ids, 10)
            means, _ = ranking_metrics(
                dict(zip(tune_ids, rankings)), {q: data.qrels[q] for q in tune_ids}, k_values=(10,)
            )
            out.append(100 * means["ndcg_at_10"])
        return out

    result.grid = [[ndcg_per_layer(qi, di) for di in range(len(document_sides))] for qi in range(len(query_sides))]

    def best_cell(qi: int, di: int) -> dict[str, Any]:
        scores = result.grid[qi][di]
        layer = int(np.nanargmax(scores))
        return {"query": qi, "document": di, "layer": layer, "ndcg_at_10": float(scores[layer])}

    vanilla_side = Side("prompteol")
    vanilla = best_cell(query_sides.index(vanilla_side), document_sides.index(vanilla_side))
    cells = [best_cell(qi, di) for qi in range(len(query_sides)) for di in range(len(document_sides))]

    def changes(cell: dict[str, Any]) -> int:
        return query_sides[cell["query"]].changes + document_sides[cell["document"]].changes

    winner = choose_winner(cells, vanilla, changes, min_gain)
    result.winner, result.vanilla = winner, vanilla
    own = _module_side(module)
    if include_default:
        result.default = best_cell(query_sides.index(own), document_sides.index(own))
    say(
        f"winner: {query_sides[winner['query']].label()} / {document_sides[winner['document']].label()} at layer "
        f"{winner['layer']}: {winner['ndcg_at_10']:.2f} (vanilla PromptEOL {vanilla['ndcg_at_10']:.2f} at layer "
        f"{vanilla['layer']})"
    )

    # Held-out queries: the winner and the baselines at the layers chosen on the tuning queries.
    if len(held_ids):
        for name, cell in (("winner", winner), ("vanilla", vanilla), ("module", result.default)):
            if cell:
                result.held_out[name] = metrics(cell["query"], cell["document"], cell["layer"], held_rows, held_ids)

    # Document length buckets: TP off vs on per document template, on all sampled queries.
    result.lengths = _length_buckets(
        module, data, query_ids, query_states, doc_states, query_sides, document_sides, winner
    )
    return result


def _length_buckets(
    module: Any,
    data: BEIRData,
    query_ids: list[str],
    query_states: list[np.ndarray],
    doc_states: list[np.ndarray],
    query_sides: list[Side],
    document_sides: list[Side],
    winner: dict[str, Any],
) -> dict[str, Any]:
    """Per-query nDCG@10 of each document setting, averaged within terciles of relevant-document token length."""
    tokenizer = module.tokenizer
    lengths = {
        d: len(tokenizer(text, add_special_tokens=False)["input_ids"])
        for d, text in zip(data.doc_ids, data.documents())
    }
    query_length = {}
    for q in query_ids:
        relevant = [lengths[d] for d, rel in data.qrels[q].items() if rel > 0 and d in lengths]
        if relevant:
            query_length[q] = float(np.mean(relevant))
    if len(query_length) < 3:
        return {}
    values = np.array(list(query_length.values()))
    edges = [int(round(v)) for v in np.quantile(values, [1 / 3, 2 / 3])]
    bucket = {q: int(np.searchsorted(edges, length, side="left")) for q, length in query_length.items()}
    counts = [sum(1 for b in bucket.values() if b == i) for i in range(len(edges) + 1)]
    qi, layer = winner["query"], winner["layer"]
    rows = []
    for di, side in enumerate(document_sides):
        rankings = rank_documents(query_states[qi][:, layer], doc_states[di][:, layer], data.doc_ids, top_k=10)
        _, per_query = ranking_metrics(dict(zip(query_ids, rankings)), data.qrels, k_values=(10,))
        means = []
        for i in range(len(edges) + 1):
            scores = [per_query[q]["ndcg_at_10"] for q in per_query if bucket.get(q) == i]
            means.append(100 * float(np.mean(scores)) if scores else float("nan"))
        rows.append({"label": side.label(), "template": side.template, "tp": side.tp, "ndcg_at_10": means})
    return {"edges": edges, "counts": counts, "rows": rows, "layer": layer, "query": query_sides[qi].label()}
