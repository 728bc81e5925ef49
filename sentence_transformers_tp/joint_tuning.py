"""Tuning over the joint space of training-free boosters: template (single, ensemble, with an in-context
demonstration), Token Prepending band, Contrastive Prompting (layer, mode, alpha), output layer and centering.

Every pass is :func:`~sentence_transformers_tp.tuning.encode_all_layers` (the module's public
:meth:`~sentence_transformers_tp.module.TokenPrependingTransformer.embed` capturing every layer, with the prefix cache),
so one pass scores every output layer of a setting at once. The search is staged to bound its cost:

1. **templates x TP** on a seeded sample of the tuning pairs: every template of ``templates`` with TP off and with
   every band of ``tp_bands`` (``len(templates) * (1 + len(tp_bands))`` passes);
2. **demonstrations**: the ``top_k`` best (template, TP) settings of stage 1, each with every candidate demonstration
   (``top_k * len(demonstrations)`` passes);
3. **Contrastive Prompting** on the best setting so far: every ``cp_layers`` x (``"ns"`` with each of ``cp_alphas``,
   and ``"nr"``) (``len(cp_layers) * (len(cp_alphas) + 1)`` passes);
4. **full tuning data**: the best setting of each stage, then the next best overall, up to ``finalists``, and
   vanilla PromptEOL (TP off), on all pairs (``finalists + 1`` passes);
5. **centering**: the winner's mean embedding over ``centering_sentences`` unlabeled sentences (one pass), scored
   with and without subtraction on all pairs (no pass);
6. **second dev set**: the winner and vanilla PromptEOL on another split (two passes) to show it generalises.

The winner is the best full-data cell; ties (within ``min_gain`` points) go to the simpler setting (fewer boosters),
and it is never below vanilla PromptEOL's best layer on the tuning data, which is always a finalist.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentence_transformers_tp.demonstrations import PAPER_DEMONSTRATIONS, parse_demonstrations
from sentence_transformers_tp.evaluation.data import STSData, load_sts, normalize_sts_task, resolve_sts_split
from sentence_transformers_tp.interventions import ForwardSettings
from sentence_transformers_tp.templates import resolve_templates, template_names, with_demonstrations
from sentence_transformers_tp.tuning import encode_all_layers, score_layers

logger = logging.getLogger(__name__)

__all__ = ["Candidate", "JointResult", "Scored", "combination_entry", "tune_joint", "write_combination"]

DEFAULT_TEMPLATES = ("prompteol", "pretended_cot", "knowledge", "ck")
DEFAULT_CP_ALPHAS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Candidate:
    """One setting of the joint space (the output layer is scored for all layers at once).

    Args:
        template: A built-in template name or a tuple of names (an ensemble).
        demonstration: ``(sentence, word)``, or None.
        tp: ``(tp_start, tp_exit)``, or None for TP off.
        cp: ``(cp_layer, cp_mode, cp_alpha)``, or None for no Contrastive Prompting.
    """

    template: str | tuple[str, ...]
    demonstration: tuple[str, str] | None = None
    tp: tuple[int, int] | None = None
    cp: tuple[int, str, float] | None = None

    def settings(self) -> ForwardSettings:
        """The forward settings of this candidate."""
        tp_start, tp_exit = self.tp or (1, 1)
        if self.cp is None:
            return ForwardSettings(tp_start=tp_start, tp_exit=tp_exit)
        layer, mode, alpha = self.cp
        return ForwardSettings(tp_start=tp_start, tp_exit=tp_exit, cp_layer=layer, cp_mode=mode, cp_alpha=alpha)

    def templates(self) -> tuple[str, ...]:
        """The resolved template strings (with the demonstration in front)."""
        spec = self.template if isinstance(self.template, str) else list(self.template)
        templates = resolve_templates(spec)
        if self.demonstration is None:
            return templates
        demo = parse_demonstrations([self.demonstration])
        return tuple(with_demonstrations(t, demo) for t in templates)

    @property
    def boosters(self) -> int:
        """How many boosters the setting uses (ties go to fewer)."""
        ensemble = 0 if isinstance(self.template, str) else 1
        return ensemble + sum(x is not None for x in (self.demonstration, self.tp, self.cp))

    def label(self) -> str:
        """A short readable label, e.g. ``ck + demo(Music) + TP 1..3 + CP L4 ns 1``."""
        names = template_names(self.template if isinstance(self.template, str) else list(self.template))
        parts = ["+".join(names) if names else str(self.template)]
        if self.demonstration is not None:
            parts.append(f"demo({self.demonstration[1]})")
        if self.tp is not None:
            parts.append(f"TP {self.tp[0]}..{self.tp[1] - 1}")
        if self.cp is not None:
            layer, mode, alpha = self.cp
            parts.append(f"CP L{layer} {mode}" + (f" {alpha:g}" if mode == "ns" else ""))
        return " + ".join(parts)

    def module_kwargs(self, output_layer: int) -> dict[str, Any]:
        """Constructor arguments of :class:`~sentence_transformers_tp.module.TokenPrependingTransformer`.

        Args:
            output_layer: The chosen output layer (``hidden_states`` indexing).

        Returns:
            ``template``, ``demonstrations``, the TP and CP settings and ``output_layer``.
        """
        settings = self.settings()
        kwargs: dict[str, Any] = {
            "template": self.template if isinstance(self.template, str) else list(self.template),
            "tp_start": settings.tp_start,
            "tp_exit": settings.tp_exit,
            "output_layer": output_layer,
        }
        if self.demonstration is not None:
            kwargs["demonstrations"] = [list(self.demonstration)]
        if self.cp is not None:
            kwargs.update(cp_layer=settings.cp_layer, cp_mode=settings.cp_mode, cp_alpha=settings.cp_alpha)
        return kwargs

    def key(self) -> str:
        """A stable key (for checkpoints)."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Scored:
    """A candidate's Spearman x 100 per output layer on one data set.

    Args:
        candidate: The setting.
        scores: One score per layer ``0..num_layers``.
        seconds: Time of the pass.
        data: Which data (``"sample"``, ``"full"``, ``"second"``).
    """

    candidate: Candidate
    scores: list[float]
    seconds: float = 0.0
    data: str = "sample"

    @property
    def best_layer(self) -> int:
        """The best layer (ties: the deeper one)."""
        values = np.nan_to_num(np.asarray(self.scores, dtype=np.float64), nan=-np.inf)
        return int(len(values) - 1 - np.argmax(values[::-1]))

    @property
    def best(self) -> float:
        """The best score."""
        return float(self.scores[self.best_layer])


@dataclass
class JointResult:
    """Everything a joint tuning run measured.

    Args:
        backbone: The backbone name.
        num_layers: Decoder layers of the backbone.
        passes: Every scored pass, in order.
        winner: The chosen setting, on the full tuning data.
        vanilla: Vanilla PromptEOL (TP off) on the full tuning data.
        output_layer: The winner's layer (``hidden_states`` indexing, -1 for the final output).
        centering_gain: Spearman gain of mean-centering the winner at its layer (None if not measured).
        centering_chosen: Whether centering clears ``min_gain``.
        second: The winner and vanilla on the second dev set (``{"winner": score, "vanilla": score}``).
        settings: The run's arguments (data, sample, seeds).
    """

    backbone: str
    num_layers: int
    passes: list[Scored] = field(default_factory=list)
    winner: Scored | None = None
    vanilla: Scored | None = None
    output_layer: int = -1
    centering_gain: float | None = None
    centering_chosen: bool = False
    second: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def module_kwargs(self) -> dict[str, Any]:
        """Constructor arguments that build the winner."""
        assert self.winner is not None
        return self.winner.candidate.module_kwargs(self.output_layer)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (every pass with its per-layer scores)."""

        def scored(item: Scored | None) -> dict[str, Any] | None:
            if item is None:
                return None
            return {
                "label": item.candidate.label(),
                "candidate": asdict(item.candidate),
                "data": item.data,
                "best_layer": item.best_layer,
                "best": round(item.best, 4),
                "seconds": round(item.seconds, 1),
                "scores": [None if not np.isfinite(v) else round(float(v), 4) for v in item.scores],
            }

        return {
            "backbone": self.backbone,
            "num_layers": self.num_layers,
            "winner": scored(self.winner),
            "vanilla": scored(self.vanilla),
            "output_layer": self.output_layer,
            "module_kwargs": self.module_kwargs() if self.winner else None,
            "centering_gain": self.centering_gain,
            "centering_chosen": self.centering_chosen,
            "second": self.second,
            "settings": self.settings,
            "passes": [scored(item) for item in self.passes],
        }

    def to_markdown(self) -> str:
        """A readable report: the passes ranked per data set, then the winner."""
        lines = [f"## Joint tuning: {self.backbone}", ""]
        for data in ("sample", "full", "second"):
            items = sorted((p for p in self.passes if p.data == data), key=lambda p: -p.best)
            if not items:
                continue
            lines += [f"### {data}", "", "| setting | best layer | Spearman x100 | seconds |", "|---|---|---|---|"]
            lines += [f"| {p.candidate.label()} | {p.best_layer} | {p.best:.2f} | {p.seconds:.0f} |" for p in items]
            lines.append("")
        if self.winner is not None and self.vanilla is not None:
            lines.append(
                f"Winner: **{self.winner.candidate.label()}**, layer {self.output_layer}: "
                f"{self.winner.scores[self.output_layer % (self.num_layers + 1)]:.2f} (vanilla PromptEOL best layer "
                f"{self.vanilla.best_layer}: {self.vanilla.best:.2f})."
            )
        if self.centering_gain is not None:
            lines.append(
                f"Centering gain at that layer: {self.centering_gain:+.2f} (chosen: {self.centering_chosen})."
            )
        if self.second:
            lines.append(f"Second dev set {self.second.get('data')}: {json.dumps(self.second)}")
        return "\n".join(lines) + "\n"


def combination_entry(summary: dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """A preset ``combination`` block from a :meth:`JointResult.to_dict` summary: the winner's constructor arguments,
    its scores next to vanilla PromptEOL's, the second dev set and the centering gain, and the command.

    Args:
        summary: :meth:`JointResult.to_dict` output (e.g. read back from ``st-tp tune-boosters --json``).
        command: The command that produced it.

    Returns:
        The block for :attr:`~sentence_transformers_tp.presets.Preset.combination`.
    """
    winner, vanilla, settings = summary["winner"], summary["vanilla"], summary["settings"]
    layer = summary["output_layer"] % (summary["num_layers"] + 1)
    entry = dict(summary["module_kwargs"])
    entry["status"] = "tuned"
    entry["score"] = {
        "task": settings["task"],
        "split": settings["split"],
        "n_pairs": settings["n_pairs"],
        **(
            {"of_pairs": settings["split_pairs"]}
            if settings.get("split_pairs", settings["n_pairs"]) > settings["n_pairs"]
            else {}
        ),
        "spearman": winner["scores"][layer],
        "setting": winner["label"],
        "vanilla_prompteol_best_spearman": vanilla["best"],
        "vanilla_prompteol_best_layer": vanilla["best_layer"],
        "second_dev_set": summary.get("second") or None,
        "centering_gain": summary.get("centering_gain"),
    }
    if command:
        entry["command"] = command
    return entry


def write_combination(summary: dict[str, Any], preset_path: str | os.PathLike, command: str | None = None) -> Path:
    """Store a joint tuning winner as the ``combination`` of an existing preset file.

    Args:
        summary: :meth:`JointResult.to_dict` output.
        preset_path: The preset YAML (its templates and other keys are kept).
        command: The command that produced the summary.

    Returns:
        The path written.
    """
    from sentence_transformers_tp.presets import update_preset

    return update_preset(preset_path, "combination", combination_entry(summary, command))


def _load(data_dir: str | os.PathLike, task: str, split: str) -> STSData:
    task = normalize_sts_task(task)
    resolved = resolve_sts_split(data_dir, task, split)
    if resolved is None:
        raise FileNotFoundError(f"{data_dir} has no {split!r} split for task {task!r}.")
    return load_sts(data_dir, task, resolved)


class _Scorer:
    """Scores candidates on one data set (sentences deduplicated), with an optional JSON checkpoint."""

    def __init__(
        self,
        module: Any,
        data: STSData,
        name: str,
        batch_size: int,
        checkpoint: dict[str, Any],
        keep_states: bool = False,
    ) -> None:
        self.module = module
        self.name = name
        self.sentences = list(dict.fromkeys([*data.sentence1, *data.sentence2]))
        row = {text: i for i, text in enumerate(self.sentences)}
        self.index1 = np.array([row[t] for t in data.sentence1])
        self.index2 = np.array([row[t] for t in data.sentence2])
        self.gold = data.scores
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        self.kept: dict[Candidate, np.ndarray] | None = {} if keep_states else None
        digest = hashlib.sha1(json.dumps([data.sentence1, data.sentence2, list(data.scores)]).encode("utf-8"))
        self.signature = f"{len(data)}:{digest.hexdigest()[:12]}"

    def states(self, candidate: Candidate, sentences: Sequence[str] | None = None) -> np.ndarray:
        if sentences is None and self.kept is not None and candidate in self.kept:
            return self.kept[candidate]
        return encode_all_layers(
            self.module,
            list(sentences if sentences is not None else self.sentences),
            settings=candidate.settings(),
            templates=candidate.templates(),
            batch_size=self.batch_size,
            show_progress_bar=True,
        )

    def score(self, candidate: Candidate) -> Scored:
        # The key names the data (its pairs), so a checkpoint never serves scores of another sample or split.
        key = f"{self.name}|{self.signature}|{candidate.key()}"
        if key in self.checkpoint:
            scores, seconds = self.checkpoint[key]
            return Scored(candidate, [float("nan") if v is None else v for v in scores], seconds, self.name)
        start = time.perf_counter()
        states = self.states(candidate)
        if self.kept is not None:
            self.kept[candidate] = states  # stage 5 reuses them
        scores = score_layers(states, self.index1, self.index2, self.gold)
        seconds = time.perf_counter() - start
        self.checkpoint[key] = ([None if not np.isfinite(v) else float(v) for v in scores], seconds)
        return Scored(candidate, scores, seconds, self.name)


def _simpler(a: Scored, b: Scored, min_gain: float) -> Scored:
    """The better of two; within ``min_gain`` points the one with fewer boosters."""
    if abs(a.best - b.best) <= min_gain:
        return a if a.candidate.boosters <= b.candidate.boosters else b
    return a if a.best > b.best else b


def tune_joint(
    model: Any,
    data_dir: str | os.PathLike,
    *,
    task: str = "stsb",
    split: str = "dev",
    sample: int = 300,
    sample_seed: int = 0,
    templates: Sequence[str | Sequence[str]] = DEFAULT_TEMPLATES,
    tp_bands: Sequence[tuple[int, int]] | None = None,
    demonstrations: Sequence[Any] | None = None,
    top_k: int = 2,
    cp_layers: Sequence[int] | None = None,
    cp_alphas: Sequence[float] = DEFAULT_CP_ALPHAS,
    finalists: int = 3,
    final_sample: int | None = None,
    centering_task: str = "stsb",
    centering_split: str = "train",
    centering_sentences: int = 1000,
    second_task: str = "sickr",
    second_split: str = "trial",
    min_gain: float = 0.2,
    batch_size: int = 32,
    checkpoint: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> JointResult:
    """Search templates, ensembles, demonstrations, TP bands, Contrastive Prompting, output layers and centering.

    Args:
        model: A :class:`~sentence_transformers_tp.module.TokenPrependingTransformer` (or a ``SentenceTransformer``
            whose first module is one); its backbone is reused for every candidate.
        data_dir: Data directory (``sts/<task>/<split>.tsv``).
        task: Tuning task (default STS-B).
        split: Tuning split (default dev).
        sample: Pairs of the seeded sample for stages 1-3.
        sample_seed: Seed of that sample.
        templates: Template specs of stage 1 (names, or tuples of names for ensembles).
        tp_bands: ``(tp_start, tp_exit)`` bands of stage 1 (default ``(1, 3), (1, 4), (1, 7)``, clipped to the model).
        demonstrations: Candidates of stage 2 (default: the paper's six); empty to skip the stage.
        top_k: Settings of stage 1 that stage 2 extends.
        cp_layers: CP layers of stage 3 (default ``2, 4, 6``, clipped); empty to skip the stage.
        cp_alphas: CP ``"ns"`` scales of stage 3 (``"nr"`` is tried once per layer).
        finalists: Settings rescored on all pairs in stage 4: the best of each stage first, then the next best
            overall (vanilla PromptEOL is always added).
        final_sample: Pairs of a seeded sample (``sample_seed``, drawn independently of the stage 1-3 sample) that
            stands in for "all pairs" in stages 4-6, for machines where a full pass is too slow; None (the
            default) uses every pair. The second dev set is sampled to the same size.
        centering_task: Task of the unlabeled centering sentences (labels unused).
        centering_split: Split of those sentences (default STS-B train: not the tuning data).
        centering_sentences: How many (0 to skip stage 5).
        second_task: Task of the second dev set (stage 6).
        second_split: Its split (empty task to skip).
        min_gain: A setting with more boosters must beat a simpler one by more than this to win; centering must gain
            more than this to be chosen.
        batch_size: Sentences per forward.
        checkpoint: JSON file of finished passes; a rerun skips them.
        progress: Called with one line per pass (e.g. ``print``).

    Returns:
        The result; :meth:`JointResult.module_kwargs` builds the winner.
    """
    from sentence_transformers_tp.tuning import _as_module

    module = _as_module(model, None, {})
    num_layers = module.num_layers
    say = progress or (lambda line: logger.info(line))
    bands = [(s, e) for s, e in (tp_bands or [(1, 3), (1, 4), (1, 7)]) if e > s and e <= num_layers]
    layers = [layer for layer in (cp_layers if cp_layers is not None else (2, 4, 6)) if 0 <= layer < num_layers]
    demos = parse_demonstrations(list(demonstrations) if demonstrations is not None else list(PAPER_DEMONSTRATIONS))

    full = _load(data_dir, task, split)
    n_pairs = len(full)
    if final_sample is not None and final_sample < 1:
        raise ValueError(f"final_sample must be positive, got {final_sample}.")
    if final_sample and final_sample < len(full):
        full = full.subset(None, final_sample, sample_seed + 1)
    sampled = full.subset(None, sample, sample_seed) if sample and sample < len(full) else full
    checkpoint_path = Path(checkpoint) if checkpoint is not None else None
    saved: dict[str, Any] = {}
    if checkpoint_path is not None and checkpoint_path.is_file():
        saved = json.loads(checkpoint_path.read_text(encoding="utf-8")).get("passes", {})
    result = JointResult(
        backbone=str(module.backbone_name),
        num_layers=num_layers,
        settings={
            "task": task,
            "split": split,
            "sample": len(sampled),
            "sample_seed": sample_seed,
            "n_pairs": len(full),
            "split_pairs": n_pairs,
            "centering": f"{centering_task}/{centering_split} x{centering_sentences}",
            "second": f"{second_task}/{second_split}",
        },
    )

    def run(scorer: _Scorer, candidate: Candidate) -> Scored:
        item = scorer.score(candidate)
        result.passes.append(item)
        if checkpoint_path is not None:
            checkpoint_path.write_text(json.dumps({"passes": scorer.checkpoint}), encoding="utf-8")
        say(f"[{len(result.passes)}] {scorer.name}: {candidate.label()}: layer {item.best_layer} = {item.best:.2f}")
        return item

    on_sample = _Scorer(module, sampled, "sample", batch_size, saved)
    on_full = _Scorer(module, full, "full", batch_size, saved, keep_states=bool(centering_sentences))

    # Stage 1: templates x TP.
    stage1 = [
        run(on_sample, Candidate(spec if isinstance(spec, str) else tuple(spec), None, band))
        for spec in templates
        for band in [None, *bands]
    ]
    ranked = sorted(stage1, key=lambda p: -p.best)
    # Stage 2: demonstrations on the top settings.
    stage2 = [
        run(on_sample, Candidate(base.candidate.template, (demo.sentence, demo.word), base.candidate.tp))
        for base in ranked[:top_k]
        for demo in demos
    ]
    best = max(stage1 + stage2, key=lambda p: p.best)
    # Stage 3: Contrastive Prompting on the best setting so far.
    stage3 = [
        run(on_sample, Candidate(best.candidate.template, best.candidate.demonstration, best.candidate.tp, cp))
        for layer in layers
        for cp in [*((layer, "ns", float(a)) for a in cp_alphas), (layer, "nr", 1.0)]
    ]
    # Stage 4: finalists on all pairs, with vanilla PromptEOL always among them.
    # The best of each stage first (so a simpler setting is compared on all pairs too), then the next best overall.
    ranked = [max(stage, key=lambda p: p.best) for stage in (stage1, stage2, stage3) if stage]
    ranked += sorted(stage1 + stage2 + stage3, key=lambda p: -p.best)
    chosen: list[Candidate] = []
    for item in ranked:
        if item.candidate not in chosen and len(chosen) < finalists:
            chosen.append(item.candidate)
    vanilla = run(on_full, Candidate("prompteol"))
    scored = [vanilla] + [run(on_full, c) for c in chosen if c != vanilla.candidate]
    winner = vanilla
    for item in sorted(scored[1:], key=lambda p: -p.best):
        if item.best > vanilla.best:
            winner = _simpler(winner, item, min_gain)
    result.vanilla, result.winner = vanilla, winner
    layer = winner.best_layer
    result.output_layer = -1 if layer == num_layers else layer

    # Stage 5: centering with unlabeled sentences that are not the tuning data.
    if centering_sentences:
        pool = _load(data_dir, centering_task, centering_split)
        texts = list(dict.fromkeys([*pool.sentence1, *pool.sentence2]))
        rng = np.random.default_rng(sample_seed)
        picked = [texts[i] for i in sorted(rng.choice(len(texts), min(centering_sentences, len(texts)), False))]
        mean = on_full.states(winner.candidate, picked)[:, layer].mean(0)
        states = on_full.states(winner.candidate)[:, layer : layer + 1] - mean
        centered = score_layers(states, on_full.index1, on_full.index2, on_full.gold)[0]
        result.centering_gain = float(centered - winner.scores[layer])
        result.centering_chosen = result.centering_gain > min_gain
        say(f"centering at layer {layer}: {centered:.2f} ({result.centering_gain:+.2f})")

    # Stage 6: the winner and vanilla on a second dev set.
    if second_task:
        second_data = _load(data_dir, second_task, second_split)
        if final_sample and final_sample < len(second_data):
            second_data = second_data.subset(None, final_sample, sample_seed + 1)
        second = _Scorer(module, second_data, "second", batch_size, saved)
        w = run(second, winner.candidate)
        v = run(second, vanilla.candidate)
        result.second = {
            "data": f"{second_task}/{second_split}",
            "winner_at_layer": round(w.scores[layer], 2),
            "vanilla_at_its_layer": round(v.scores[vanilla.best_layer], 2),
        }
    return result
