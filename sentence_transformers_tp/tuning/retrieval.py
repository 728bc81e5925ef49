"""The retrieval search (``st-tp tune-retrieval``): query and document Settings (per side every template with TP off
and each band, and the module's own) and one output layer, by nDCG@10 of the tuning half of a seeded query sample of
a BEIR-layout train split; the winner (both sides' changes counted) is checked on the held-out half, then nDCG@10 per
document Setting by relevant-document length; then, optionally, corpus demonstrations on either side and both, under
the same rule, and the hybrid fusion (:func:`tune_fusion`)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp.demonstrations import draw_passages
from sentence_transformers_tp.evaluation.retrieval import BEIRData, load_beir
from sentence_transformers_tp.hybrid.corpus import corpus_hash
from sentence_transformers_tp.hybrid.encoders import normalize_rows
from sentence_transformers_tp.hybrid.preset import HYBRID_KEY, tuned_fusion_block
from sentence_transformers_tp.hybrid.retriever import HybridRetriever
from sentence_transformers_tp.hybrid.scoring import top_k_search
from sentence_transformers_tp.hybrid.selection import CHANNEL_ORDER, FusionChoice, choose_fusion
from sentence_transformers_tp.labeling import label_with_backbone
from sentence_transformers_tp.settings import CP_KEYS, LAYER_KEYS, Setting
from sentence_transformers_tp.tuning.cells import Scored, best_layer, choose_winner, describe
from sentence_transformers_tp.tuning.objectives import NDCGObjective
from sentence_transformers_tp.tuning.passes import Search, as_module, with_bands
from sentence_transformers_tp.tuning.result import Result, table, tuned_entry, write_preset_block

__all__ = ["RetrievalTuning", "hybrid_entry", "task_entry", "task_settings_entry", "tune_fusion", "tune_retrieval"]
__all__ += ["write_hybrid", "write_task_settings"]

DEFAULT_QUERY_TEMPLATES = ("prompteol", "retrieval_query")
DEFAULT_DOCUMENT_TEMPLATES = ("prompteol", "retrieval_document")
HEADLINE = ("ndcg_at_10", "mrr_at_10", "recall_at_100")


def task_entry(setting: Setting, output_layer: int) -> dict[str, Any]:
    """The ``task_settings`` entry of a Setting at one output layer (a preset's ``query`` / ``document`` keys)."""
    keys = ["template", "demonstrations", *LAYER_KEYS, *(CP_KEYS if setting.cp_enabled else [])]
    keys += ["max_seq_length"] if setting.max_seq_length is not None else []
    return setting.replace(output_layer=output_layer).to_config(keys)


@dataclass
class RetrievalTuning(Result):
    """The result of :func:`tune_retrieval`.

    Attributes:
        backbone: Backbone name.
        num_layers: Decoder layers.
        settings: The data and search settings.
        query_settings: Query Settings searched, in pass order.
        document_settings: Document Settings searched, in pass order.
        grid: nDCG@10 x 100 of the tuning queries, ``grid[query_index][document_index][layer]``.
        seconds: Wall seconds of each pass (``{"query:<label>": s, "document:<label>": s}``).
        winner: ``{"query": index, "document": index, "layer": k, "ndcg_at_10": ...}``.
        vanilla: The same for vanilla PromptEOL (TP off on both sides) at its best layer.
        default: The same for the module's own Setting on both sides, when searched.
        held_out: Metrics x 100 on the held-out queries: ``{"winner": {...}, "vanilla": {...}, ...}``.
        lengths: Document length buckets: ``{"edges": [...], "rows": [{"label", "ndcg_at_10": [...]}], ...}``.
        hybrid: The fusion stage (``hybrid=True``): channels, held-out ids, the chosen label and its nDCG@10, each
            channel alone, the top candidates, the preset ``block`` and the seconds; None when not run.
        corpus_demonstrations: The corpus demonstrations (``corpus_demonstrations=N``): the drawn document ``ids``,
            their ``passages`` and backbone ``labels`` (None: no word), the labelling ``seconds`` and the winner
            ``without`` them; None when not drawn.
    """

    backbone: str
    num_layers: int
    settings: dict[str, Any]
    query_settings: list[Setting] = field(default_factory=list)
    document_settings: list[Setting] = field(default_factory=list)
    grid: list[list[list[float]]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    winner: dict[str, Any] = field(default_factory=dict)
    vanilla: dict[str, Any] = field(default_factory=dict)
    default: dict[str, Any] | None = None
    held_out: dict[str, dict[str, float]] = field(default_factory=dict)
    lengths: dict[str, Any] = field(default_factory=dict)
    hybrid: dict[str, Any] | None = None
    corpus_demonstrations: dict[str, Any] | None = None

    @property
    def output_layer(self) -> int:
        """The winner's output layer (``-1`` for the final normed output)."""
        return self.preset_layer(self.winner["layer"])

    def task_settings(self) -> dict[str, dict[str, Any]]:
        """The winner as the module's ``task_settings`` (``query`` and ``document`` entries)."""
        query, document = self.query_settings[self.winner["query"]], self.document_settings[self.winner["document"]]
        return {"query": task_entry(query, self.output_layer), "document": task_entry(document, self.output_layer)}

    def label(self, cell: dict[str, Any], side: str) -> str:
        """The label of a cell's ``"query"`` or ``"document"`` Setting."""
        return describe((self.query_settings if side == "query" else self.document_settings)[cell[side]])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (what ``st-tp tune-retrieval --json`` writes)."""

        def cell(item: dict[str, Any] | None) -> dict[str, Any] | None:
            labels = {f"{side}_label": self.label(item, side) for side in ("query", "document")} if item else {}
            return {**item, **labels} if item else None

        corpus = self.corpus_demonstrations
        return {
            "backbone": self.backbone,
            "num_layers": self.num_layers,
            "settings": self.settings,
            "query_sides": [describe(s) for s in self.query_settings],
            "document_sides": [describe(s) for s in self.document_settings],
            "grid": self.grid,
            "seconds": self.seconds,
            "winner": cell(self.winner),
            "vanilla": cell(self.vanilla),
            "default": cell(self.default),
            "held_out": self.held_out,
            "lengths": self.lengths,
            "output_layer": self.output_layer,
            "task_settings": self.task_settings(),
            "hybrid": self.hybrid,
            **({"corpus_demonstrations": {**corpus, "without": cell(corpus.get("without"))}} if corpus else {}),
        }

    def preset_entry(self, command: str | None = None) -> dict[str, Any]:
        """The preset ``task_settings`` ``query`` / ``document`` blocks (see :func:`task_settings_entry`)."""
        return task_settings_entry(self.to_dict(), command)

    def to_markdown(self) -> str:
        """The best layer of every cell, the winner, the held-out check, the length buckets and the pass times."""
        s, labels = self.settings, [describe(setting) for setting in self.document_settings]
        data = f"{s['tuning_queries']} tuning queries and {s['held_out_queries']} held-out queries (seed {s['seed']}) "
        data += f"over {s['documents']} documents (their relevant documents + {s['corpus_sample']} random others of "
        data += f"{s['corpus_size']}); documents truncated to {s['max_seq_length']} tokens. nDCG@10 x 100, best layer "
        data += "per cell (tuning queries):"
        lines = [f"## Retrieval tuning: {self.backbone} on {s['data']} ({s['split']})", "", data, ""]
        cells = lambda row: [f"{scores[best_layer(scores)]:.2f} (L{best_layer(scores)})" for scores in row]
        rows = [[describe(q), *cells(row)] for q, row in zip(self.query_settings, self.grid)]
        lines += [*table(["query \\ document", *labels], rows), ""]
        named = {"winner": self.winner, "vanilla PromptEOL": self.vanilla, "module default": self.default}
        named["without corpus demonstrations"] = (self.corpus_demonstrations or {}).get("without")
        rows = [
            [name, self.label(item, "query"), self.label(item, "document"), item["layer"], f"{item['ndcg_at_10']:.2f}"]
            + [f"{self.held_out.get(name.split()[0], {}).get(key, float('nan')):.2f}" for key in HEADLINE]
            for name, item in named.items()
            if item
        ]
        header = ["setting", "query", "document", "layer", "tuning nDCG@10", "held-out nDCG@10", "MRR@10", "R@100"]
        lines += table(header, rows)
        if self.lengths.get("rows"):
            edges, counts = self.lengths["edges"], self.lengths["counts"]
            buckets = [f"<= {edges[0]}", *(f"{a + 1}-{b}" for a, b in zip(edges, edges[1:])), f"> {edges[-1]}"]
            note = f"nDCG@10 x 100 by the token length of the relevant documents (all {s['sampled_queries']} sampled "
            note += f"queries, query side: {self.label(self.winner, 'query')}, layer {self.winner['layer']}):"
            lines += ["", note, ""]
            header = ["document setting", *(f"{b} tokens (n={n})" for b, n in zip(buckets, counts))]
            rows = [[r["label"], *(f"{v:.2f}" for v in r["ndcg_at_10"])] for r in self.lengths["rows"]]
            lines += table(header, rows)
        if self.hybrid:
            h = self.hybrid
            note = (
                f"Hybrid fusion over {', '.join(h['channels'])} (dense: the winner at layer {self.winner['layer']}), "
            )
            note += f"chosen on the {h['block']['score']['tuning_queries']} tuning queries; nDCG@10 x 100:"
            lines += ["", note, ""]
            held = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
            rows = [[f"{name} alone", held(v["tuning"]), held(v["held_out"])] for name, v in h["baselines"].items()]
            rows.append([f"chosen: {h['label']}", held(h["tuning_ndcg_at_10"]), held(h["held_out_ndcg_at_10"])])
            lines += table(["channels", "tuning nDCG@10", "held-out nDCG@10"], rows)
        if self.corpus_demonstrations:
            c = self.corpus_demonstrations
            drawn = ", ".join(f"{d} ({c['labels'][d] or 'no word: dropped'})" for d in c["ids"])
            note = f"Corpus demonstrations: {len(c['ids'])} documents relevant to no {s['split']} query (seed "
            note += f"{s['seed']}; title, else first sentence, at most 40 words), labelled by the backbone in "
            lines += ["", note + f"{c['seconds']:.1f} s: {drawn}."]
        lines += ["", "Pass times (all layers captured, wall seconds):", ""]
        lines += [f"- {name}: {sec:.1f} s" for name, sec in self.seconds.items()]
        return "\n".join(lines) + "\n"


def task_settings_entry(summary: dict[str, Any], command: str | None = None) -> dict[str, dict[str, Any]]:
    """A preset ``task_settings`` block (``{"query": {...}, "document": {...}}``) from a
    :meth:`RetrievalTuning.to_dict` summary: the winner's entries, each with its score next to vanilla PromptEOL's."""
    s, held = summary["settings"], summary.get("held_out", {})
    rounded = lambda value: None if value is None else round(float(value), 2)
    score = {key: s[key] for key in ("split", "tuning_queries", "held_out_queries", "documents")}
    score = {"task": s["data"], **score, "ndcg_at_10": round(summary["winner"]["ndcg_at_10"], 2)}
    score["vanilla_prompteol_ndcg_at_10"] = round(summary["vanilla"]["ndcg_at_10"], 2)
    score["vanilla_prompteol_layer"] = summary["vanilla"]["layer"]
    score["held_out_ndcg_at_10"] = rounded(held.get("winner", {}).get("ndcg_at_10"))
    score["held_out_vanilla_ndcg_at_10"] = rounded(held.get("vanilla", {}).get("ndcg_at_10"))
    # a copy of the score each: no YAML anchors
    return {task: tuned_entry(entry, dict(score), command) for task, entry in summary["task_settings"].items()}


def write_task_settings(summary: dict[str, Any], preset_path: str | os.PathLike, command: str | None = None) -> Path:
    """Store a :meth:`RetrievalTuning.to_dict` winner as a preset file's ``query`` / ``document`` task settings."""
    return write_preset_block(preset_path, "task_settings", task_settings_entry(summary, command))


def hybrid_entry(summary: dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """The preset ``hybrid`` block of a :meth:`RetrievalTuning.to_dict` summary (its fusion stage), validated.

    Raises:
        ValueError: If the summary has no fusion stage (a search without ``hybrid=True``).
    """
    if not summary.get("hybrid"):
        raise ValueError("The search has no fusion stage: run it with hybrid=True (--hybrid).")
    record = {"task": summary["settings"]["data"], "split": summary["settings"]["split"]}
    return tuned_fusion_block(summary["hybrid"]["block"], record, command)


def write_hybrid(summary: dict[str, Any], preset_path: str | os.PathLike, command: str | None = None) -> Path:
    """Store a :meth:`RetrievalTuning.to_dict` fusion choice as a preset file's ``hybrid`` block (what
    :meth:`~sentence_transformers_tp.hybrid.retriever.HybridRetriever.from_model` uses)."""
    return write_preset_block(preset_path, HYBRID_KEY, hybrid_entry(summary, command))


def tune_fusion(
    module: Any,
    data: BEIRData,
    task_settings: dict[str, dict[str, Any]],
    dense: tuple[np.ndarray, np.ndarray],
    held_ids: Sequence[str],
    *,
    sparse: bool = False,
    batch_size: int = 16,
    index_dir: str | os.PathLike | None = None,
) -> tuple[FusionChoice, list[str]]:
    """Choose the hybrid fusion of a tuned dense side: every channel ranks every sampled query once, then
    :func:`~sentence_transformers_tp.hybrid.selection.choose_fusion` chooses on the queries not in ``held_ids``.

    Args:
        module: The tuned TP module.
        data: The sampled queries and corpus of the search.
        task_settings: The winner's ``query`` / ``document`` task settings (the sparse channel is encoded under them).
        dense: The winner's cached ``(query, document)`` embeddings at its layer, rows in ``data`` order.
        held_ids: The search's held-out query ids (the check, never part of the choice).
        sparse: Also search the module's own PromptReps sparse channel.
        batch_size: Texts per forward (sparse channel).
        index_dir: Folder for the BM25 / sparse index of the corpus (a rerun loads it); None: in memory.

    Returns:
        The choice and the channels searched.
    """
    ids, doc_ids = list(data.queries), list(data.doc_ids)
    # The sparse channel as HybridRetriever.from_model builds it (sparse_model=model); the dense run is the cached one.
    model = SentenceTransformer(modules=[module], device=str(next(module.parameters()).device)) if sparse else None
    retriever = HybridRetriever(model, model, bm25=True, batch_size=batch_size)
    texts, queries = list(data.documents()), [data.queries[q] for q in ids]
    tasks = {task: Setting.from_config(entry, module.setting) for task, entry in task_settings.items()}
    path = None
    if index_dir is not None:
        key = {"corpus": corpus_hash(doc_ids, texts), "backbone": str(module.backbone_name), "sparse": sparse}
        key["tasks"] = task_settings
        key = json.dumps(key, sort_keys=True, default=str)
        path = Path(index_dir) / f"hybrid-index-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    with module.using(tasks["query"], tasks):
        retriever.index(texts, doc_ids, path=path)
        runs = retriever.channel_runs(queries)
    depth = min(retriever.channel_k, len(doc_ids))
    query_dense, doc_dense = (normalize_rows(np.asarray(x, dtype=np.float32)) for x in dense)
    runs = {**runs, "dense": top_k_search(query_dense, doc_dense, depth, tie_key=retriever.tie_key)}
    runs = {name: runs[name] for name in CHANNEL_ORDER if name in runs}
    return choose_fusion(runs, ids, data.qrels, retriever.ids, held_out=list(held_ids)), list(runs)


def length_buckets(
    module: Any, data: BEIRData, queries: np.ndarray, documents: list[tuple[Setting, np.ndarray]], layer: int
) -> dict[str, Any]:
    """Per-query nDCG@10 of each document Setting, averaged within terciles of relevant-document token length."""
    tokens = lambda text: len(module.tokenizer(text, add_special_tokens=False)["input_ids"])
    lengths = {d: tokens(text) for d, text in zip(data.doc_ids, data.documents())}
    query_length = {}
    for q in data.queries:
        relevant = [lengths[d] for d, rel in data.qrels[q].items() if rel > 0 and d in lengths]
        if relevant:
            query_length[q] = float(np.mean(relevant))
    if len(query_length) < 3:
        return {}
    edges = [int(round(v)) for v in np.quantile(list(query_length.values()), [1 / 3, 2 / 3])]
    bucket = {q: int(np.searchsorted(edges, length, side="left")) for q, length in query_length.items()}
    counts = [sum(1 for b in bucket.values() if b == i) for i in range(len(edges) + 1)]
    objective, rows = NDCGObjective(data, list(data.queries)), []
    for setting, document_states in documents:
        per_query = objective.metrics(queries[:, layer], document_states[:, layer])[1]
        means = []
        for i in range(len(edges) + 1):
            scores = [per_query[q]["ndcg_at_10"] for q in per_query if bucket.get(q) == i]
            means.append(float(np.mean(scores)) if scores else float("nan"))
        tp = (setting.tp_start, setting.tp_exit) if setting.tp_enabled else None
        rows.append({"label": describe(setting), "template": setting.template, "tp": tp, "ndcg_at_10": means})
    return {"edges": edges, "counts": counts, "rows": rows, "layer": layer}


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
    progress: Callable[[str], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    hybrid: bool = False,
    sparse: bool = False,
    corpus_demonstrations: int = 0,
) -> RetrievalTuning:
    """Search query and document Settings and the output layer for retrieval by nDCG@10 (see the module).

    Args:
        model: A module or a ``SentenceTransformer`` starting with one (its backbone embeds every Setting).
        folder: A BEIR-layout folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        split: The qrels split to tune on (a train split: never the split you report).
        sample: Queries drawn at random (seeded); None for all.
        seed: Seed of the query draw, the corpus draw and the tuning / held-out split.
        corpus_sample: Random documents added to the relevant documents of the sampled queries; None for all.
        held_out: Fraction of the sampled queries kept out of the choice and used to check it.
        query_templates: Query templates to search.
        document_templates: Document templates to search.
        tp_bands: ``(tp_start, tp_exit)`` bands tried on both sides (default ``(1, 4)``, clipped to the model).
        include_default: Also search the module's own Setting on both sides.
        max_seq_length: Token budget of a document prompt (written into its task settings); None: the module's.
        min_gain: nDCG@10 points a Setting with more changes from vanilla must gain over a simpler one.
        batch_size: Texts per forward.
        checkpoint_dir: Folder of finished passes; a rerun reuses them.
        progress: Called with one line per pass (e.g. ``print``).
        hybrid: Then choose the hybrid retriever's fusion (:func:`tune_fusion`; :func:`write_hybrid` stores it).
        sparse: With ``hybrid``, also search the module's own PromptReps sparse channel.
        corpus_demonstrations: Documents drawn (seeded) from the corpus, never one relevant to a query of ``split``,
            shortened (:func:`~sentence_transformers_tp.demonstrations.draw_passages`) and labelled by
            :func:`~sentence_transformers_tp.labeling.label_with_backbone`: the best query and document Settings are
            searched again with them in front (one more pass per side); 0: none.

    Raises:
        ValueError: If ``prompteol`` is missing from a template list, an argument is out of range (including more
            ``corpus_demonstrations`` than documents relevant to no query), or ``sparse`` is set without ``hybrid``.
    """
    if not 0 <= held_out < 1:
        raise ValueError(f"held_out must be in [0, 1), got {held_out}.")
    if sparse and not hybrid:
        raise ValueError("sparse=True searches the sparse channel of the fusion stage: set hybrid=True too.")
    if max_seq_length is not None and max_seq_length < 1:
        raise ValueError(f"max_seq_length must be positive, got {max_seq_length}.")
    module = as_module(model)
    num_layers = module.num_layers
    bands = [(s, e) for s, e in (tp_bands if tp_bands is not None else [(1, 4)]) if s < e <= num_layers]
    own = module.setting.replace(output_layer=-1, max_seq_length=None)

    def plan(templates: Sequence[str | Sequence[str]]) -> list[Setting]:
        out = with_bands([Setting(template=t) for t in templates], bands)
        return out + [own] if include_default and own not in out else out

    queries, documents = plan(query_templates), plan(document_templates)
    if Setting() not in queries or Setting() not in documents:
        raise ValueError(
            "query_templates and document_templates must both include 'prompteol' (the vanilla baseline)."
        )
    documents = [s.replace(max_seq_length=max_seq_length) for s in documents]

    full = load_beir(folder, split)
    data = full.subset(sample=sample, seed=seed, corpus_sample=corpus_sample)
    ids = list(data.queries)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_held = int(round(len(ids) * held_out))
    held_ids, tune_ids = ([ids[i] for i in sorted(order[p].tolist())] for p in (slice(n_held), slice(n_held, None)))
    if not tune_ids:
        raise ValueError("No tuning queries: sample more queries or lower held_out.")
    settings = dict(data=data.name, folder=str(folder), split=split, seed=seed, sampled_queries=len(ids))
    settings.update(tuning_queries=len(tune_ids), held_out_queries=len(held_ids), documents=len(data.doc_ids))
    settings.update(corpus_sample=corpus_sample, corpus_size=data.corpus_size, max_seq_length=max_seq_length)
    settings.update(tp_bands=[list(b) for b in bands], min_gain=min_gain)
    result = RetrievalTuning(str(module.backbone_name), num_layers, settings, queries, documents)
    search = Search(module, checkpoint_dir, batch_size, progress)
    demos: list[Any] = []
    if corpus_demonstrations != 0:  # drawn before any pass: a bad count fails at once
        relevant = {d for judged in full.qrels.values() for d, rel in judged.items() if rel > 0}
        corpus = dict(zip(full.doc_ids, zip(full.titles, full.texts)))
        passages = draw_passages(corpus, corpus_demonstrations, seed=seed, exclude=relevant)
        demos = label_with_backbone(module, list(passages.values()), batch_size=batch_size)
        words = {demo.sentence: demo.word for demo in demos}
        result.corpus_demonstrations = dict(ids=list(passages), passages=passages, seconds=demos.seconds)
        result.corpus_demonstrations["labels"] = {d: words.get(passage) for d, passage in passages.items()}
        search.say(f"corpus demonstrations: {len(demos)} of {len(passages)} labelled in {demos.seconds:.1f} s")

    texts = {"query": [data.queries[q] for q in ids], "document": data.documents()}
    doc_states = [search.states(texts["document"], setting, "document") for setting in documents]
    query_states = [search.states(texts["query"], setting, "query") for setting in queries]
    result.seconds, tuning = search.seconds, NDCGObjective(data, tune_ids)

    def choose() -> dict[str, Any]:
        """Score every (query, document) cell so far into the grid; the winner by the one rule."""
        n = len(documents)
        grid = itertools.product(zip(queries, query_states), zip(documents, doc_states))
        cells = [Scored((q, d), tuning(qs, ds), data="tuning") for (q, qs), (d, ds) in grid]
        result.grid = [[cell.scores for cell in cells[i : i + n]] for i in range(0, len(cells), n)]
        as_cell = lambda i: dict(query=i // n, document=i % n, layer=cells[i].best_layer, ndcg_at_10=cells[i].best)
        both = lambda s: queries.index(s) * n + documents.index(s.replace(max_seq_length=max_seq_length))
        result.vanilla, result.default = as_cell(both(Setting())), as_cell(both(own)) if include_default else None
        result.winner = as_cell(cells.index(choose_winner(cells, cells[both(Setting())], min_gain)))
        return result.winner

    winner = choose()
    if demos:  # the best query and document Settings with the corpus demonstrations: either side, then both
        result.corpus_demonstrations["without"] = winner
        for side, options, states in (("query", queries, query_states), ("document", documents, doc_states)):
            setting = options[winner[side]].replace(demonstrations=tuple(demos))
            if setting not in options:
                options.append(setting)
                states.append(search.states(texts[side], setting, side))
        winner = choose()
    labels = f"{result.label(winner, 'query')} / {result.label(winner, 'document')}"
    search.say(
        f"winner: {labels} at layer {winner['layer']}: {winner['ndcg_at_10']:.2f} (vanilla PromptEOL "
        f"{result.vanilla['ndcg_at_10']:.2f} at layer {result.vanilla['layer']})"
    )
    # Held-out queries: the winner and the baselines at the layers chosen on the tuning queries.
    if held_ids:
        check = NDCGObjective(data, held_ids)
        named = [("winner", result.winner), ("vanilla", result.vanilla), ("module", result.default)]
        for name, cell in [*named, ("without", (result.corpus_demonstrations or {}).get("without"))]:
            if cell:
                q, d, k = query_states[cell["query"]], doc_states[cell["document"]], cell["layer"]
                means = check.metrics(q[:, k], d[:, k], k_values=(10, 100))[0]
                result.held_out[name] = {key: means[key] for key in HEADLINE}
    pairs = list(zip(documents, doc_states))  # length buckets: every document Setting, the winner's query side
    result.lengths = length_buckets(module, data, query_states[result.winner["query"]], pairs, result.winner["layer"])
    if result.lengths:
        result.lengths["query"] = result.label(result.winner, "query")
    if hybrid:
        start, layer = time.perf_counter(), result.winner["layer"]
        dense = (query_states[result.winner["query"]][:, layer], doc_states[result.winner["document"]][:, layer])
        options = dict(sparse=sparse, batch_size=batch_size, index_dir=checkpoint_dir)
        choice, channels = tune_fusion(module, data, result.task_settings(), dense, held_ids, **options)
        result.hybrid = {
            "channels": channels,
            "held_out_ids": list(held_ids),
            "label": choice.setting.label,
            "tuning_ndcg_at_10": choice.tuning_ndcg_at_10,
            "held_out_ndcg_at_10": choice.held_out_ndcg_at_10,
            "baselines": choice.baselines,
            "candidates": [[label, score] for label, score in choice.candidates[:10]],
            "block": choice.to_preset(),
            "seconds": time.perf_counter() - start,
        }
        search.say(
            f"hybrid: {choice.setting.label}: {choice.tuning_ndcg_at_10:.2f} (BM25 alone "
            f"{choice.baselines['bm25']['tuning']:.2f}) on the tuning queries"
        )
    return result
