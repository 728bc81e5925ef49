"""The joint booster search (``st-tp tune-boosters``) on STS data, a plan of Settings by stage: 1. every template
with TP off and every band (on a seeded sample of the pairs); 2. the ``top_k`` best with every demonstration (first
screened on a smaller sample with ``screen_sample``), then :func:`demonstration_extras`; 3. the best so far with CP;
4. vanilla PromptEOL and the finalists on all pairs and on a second dev set, where a finalist below vanilla's best
layer is not eligible, then the winner rule; 5. the winner with a fitted ``Centering`` at its layer."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sentence_transformers_tp.centering import Centering, read_sentences
from sentence_transformers_tp.data import STSData, load_sts_split
from sentence_transformers_tp.demonstrations import PAPER_DEMONSTRATIONS, Demonstration, parse_demonstrations
from sentence_transformers_tp.settings import Setting, span_mean
from sentence_transformers_tp.tuning.cells import Scored, choose_winner, describe, finite
from sentence_transformers_tp.tuning.objectives import SpanObjective, SpearmanObjective
from sentence_transformers_tp.tuning.passes import Search, as_module, with_bands
from sentence_transformers_tp.tuning.result import Result, json_float, table, tuned_entry, write_preset_block

__all__ = [
    "DEFAULT_CP_ALPHAS",
    "DEFAULT_LAYER_SPANS",
    "DEFAULT_TEMPLATES",
    "JointResult",
    "combination_entry",
    "tune_joint",
]

DEFAULT_TEMPLATES = ("prompteol", "pretended_cot", "knowledge", "ck")
DEFAULT_LAYER_SPANS = (2, 3, 4)
DEFAULT_CP_ALPHAS = (0.5, 1.0, 2.0)


@dataclass
class JointResult(Result):
    """Everything a joint search measured.

    Args:
        backbone: The backbone name.
        num_layers: Decoder layers of the backbone.
        passes: Every scored pass, in order.
        winner: The chosen Setting's pass on the full tuning data.
        vanilla: Vanilla PromptEOL (TP off) on the full tuning data.
        centering_gain: Spearman gain of centering the winner at its layer (None if not measured).
        centering_chosen: Whether centering gains more than ``min_gain``.
        screen: The demonstration screen of stage 2 (:func:`screen_demonstrations`; empty without one).
        second: The second dev set record (:func:`second_record`; empty without one).
        settings: The run's arguments (data, sample, seeds).
    """

    backbone: str
    num_layers: int
    passes: list[Scored] = field(default_factory=list)
    winner: Scored | None = None
    vanilla: Scored | None = None
    centering_gain: float | None = None
    centering_chosen: bool = False
    screen: dict[str, Any] = field(default_factory=dict)
    second: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def output_layer(self) -> int:
        """The winner's layer (``hidden_states`` indexing, -1 for the final output)."""
        return self.preset_layer(self.winner.best_layer) if self.winner else -1

    def module_kwargs(self) -> dict[str, Any]:
        """Constructor arguments that build the winner (a preset ``combination``)."""
        if self.winner is None:
            raise ValueError("The search chose no winner.")
        return self.winner.setting.replace(output_layer=self.output_layer).combination()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (every pass with its per-layer scores)."""

        def scored(item: Scored | None) -> dict[str, Any] | None:
            return item and {
                "label": describe(item.setting),
                "setting": item.setting.to_config(),
                "data": item.data,
                "best_layer": item.best_layer,
                "best": round(item.best, 4),
                "seconds": round(item.seconds, 1),
                "scores": [json_float(v, 4) for v in item.scores],
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
            "screen": self.screen,
            "second": self.second,
            "settings": self.settings,
            "passes": [scored(item) for item in self.passes],
        }

    def preset_entry(self, command: str | None = None) -> dict[str, Any]:
        """The preset ``combination`` block (see :func:`combination_entry`)."""
        return combination_entry(self.to_dict(), command)

    def to_markdown(self) -> str:
        """The passes ranked per data set, then the winner, the centering gain and the second dev set."""
        lines = [f"## Joint tuning: {self.backbone}", ""]
        for data in ("screen", "sample", "full", "second"):
            items = sorted((p for p in self.passes if p.data == data), key=lambda p: -p.best)
            if items:
                rows = [(describe(p.setting), p.best_layer, f"{p.best:.2f}", f"{p.seconds:.0f}") for p in items]
                lines += [f"### {data}", "", *table(("setting", "best layer", "Spearman x100", "seconds"), rows), ""]
        if self.winner is not None and self.vanilla is not None:
            lines.append(
                f"Winner: **{describe(self.winner.setting)}**, layer {self.output_layer}: {self.winner.best:.2f} "
                f"(vanilla PromptEOL best layer {self.vanilla.best_layer}: {self.vanilla.best:.2f})."
            )
        if screen := self.screen:
            lines.append(
                f"Demonstration screen: {screen['candidates']} candidates on {screen['sample']} pairs with "
                f"{screen['setting']}: {screen['passes']} passes, {screen['seconds']:.0f} s; kept "
                f"{', '.join(screen['kept'])}."
            )
        if self.centering_gain is not None:
            lines.append(
                f"Centering gain at that layer: {self.centering_gain:+.2f} (chosen: {self.centering_chosen})."
            )
        if second := self.second:
            head = f"Second dev set {second['data']}: vanilla PromptEOL best layer {second['vanilla_best_layer']}: "
            head += f"{second['vanilla_best']}; the winner at its layer: {second['winner_at_layer']}."
            rows = [
                (f["setting"], f["layer"], f["spearman"], "yes" if f["eligible"] else "no")
                for f in second["finalists"]
            ]
            lines += ["", head + " A finalist is eligible only if it is not below vanilla's best layer here.", ""]
            lines += table(("finalist", "its layer", "Spearman x100 here", "eligible"), rows)
        return "\n".join(lines) + "\n"


def combination_entry(summary: dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """A preset ``combination`` block from a :meth:`JointResult.to_dict` summary (e.g. ``st-tp tune-boosters --json``):
    the winner's constructor arguments, its score next to vanilla PromptEOL's and ``command``."""
    winner, vanilla, settings = summary["winner"], summary["vanilla"], summary["settings"]
    layer = summary["output_layer"] % (summary["num_layers"] + 1)
    score: dict[str, Any] = {"task": settings["task"], "split": settings["split"], "n_pairs": settings["n_pairs"]}
    if settings.get("split_pairs", settings["n_pairs"]) > settings["n_pairs"]:
        score["of_pairs"] = settings["split_pairs"]
    score.update(
        spearman=winner["scores"][layer],
        setting=winner["label"],
        vanilla_prompteol_best_spearman=vanilla["best"],
        vanilla_prompteol_best_layer=vanilla["best_layer"],
        second_dev_set=summary.get("second") or None,
        centering_gain=summary.get("centering_gain"),
    )
    return tuned_entry(summary["module_kwargs"], score, command)


def write_combination(summary: dict[str, Any], preset_path: str | os.PathLike, command: str | None = None) -> Path:
    """Store a :meth:`JointResult.to_dict` winner as a preset file's ``combination`` (:func:`write_preset_block`)."""
    return write_preset_block(preset_path, "combination", combination_entry(summary, command))


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
    screen_sample: int | None = None,
    screen_top: int = 8,
    top_k: int = 2,
    cp_layers: Sequence[int] | None = None,
    cp_alphas: Sequence[float] = DEFAULT_CP_ALPHAS,
    finalists: int = 3,
    layer_spans: Sequence[int] = DEFAULT_LAYER_SPANS,
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
    """Search templates, ensembles, demonstrations, TP bands, CP, output layers and centering (see the module).

    Args:
        model: A module or a ``SentenceTransformer`` starting with one (its backbone embeds every Setting).
        data_dir: Data directory (``sts/<task>/<split>.tsv``).
        task: Tuning task.
        split: Tuning split.
        sample: Pairs of the seeded sample of stages 1-3.
        sample_seed: Seed of that sample (and of the screen, final and centering draws).
        templates: Template specs of stage 1 (names, or tuples of names for ensembles).
        tp_bands: ``(tp_start, tp_exit)`` bands of stage 1 (default ``(1, 3), (1, 4), (1, 7)``, clipped to the model).
        demonstrations: Candidates of stage 2 (default: the paper's six); empty to skip the stage.
        screen_sample: Pairs of the demonstration screen (when more than ``screen_top`` candidates); None: none.
        screen_top: Candidates of the screen that go on to stage 2.
        top_k: Settings of stage 1 that stage 2 extends.
        cp_layers: CP layers of stage 3 (default ``2, 4, 6``, clipped); empty to skip the stage.
        cp_alphas: CP ``"ns"`` scales of stage 3 (``"nr"`` is tried once per layer).
        finalists: Settings rescored on all pairs in stage 4 besides vanilla PromptEOL.
        layer_spans: Stage 4 also scores vanilla and each finalist with the mean of each of these numbers of
            consecutive layers (``Setting.layer_span``), from the same all-layer states (no extra pass); empty or
            ``(1,)``: single layers only.
        final_sample: A seeded sample standing in for all pairs and the second dev set in stages 4-5; None: all.
        centering_task: Task of the unlabeled centering sentences (labels unused).
        centering_split: Their split (default STS-B train: not the tuning data).
        centering_sentences: How many (0 skips stage 5).
        second_task: Task of the second dev set of stage 4 (empty: the tuning data alone).
        second_split: Its split.
        min_gain: Points a Setting with more changes must gain over a simpler one, and centering to be chosen.
        batch_size: Sentences per forward.
        checkpoint: Folder of finished passes; a rerun skips them.
        progress: Called with one line per pass (e.g. ``print``).
    """
    module = as_module(model)
    num_layers = module.num_layers
    bands = [(s, e) for s, e in (tp_bands or [(1, 3), (1, 4), (1, 7)]) if s < e <= num_layers]
    layers = [layer for layer in (cp_layers if cp_layers is not None else (2, 4, 6)) if 0 <= layer < num_layers]
    demos = parse_demonstrations(list(demonstrations) if demonstrations is not None else list(PAPER_DEMONSTRATIONS))
    if final_sample is not None and final_sample < 1:
        raise ValueError(f"final_sample must be positive, got {final_sample}.")
    if screen_sample is not None and screen_sample < 2:
        raise ValueError(f"screen_sample must be at least 2 pairs, got {screen_sample}.")
    if screen_top < 1:
        raise ValueError(f"screen_top must be positive, got {screen_top}.")
    full, task, split = load_sts_split(data_dir, task, split)
    n_pairs, full = len(full), full.subset(None, final_sample, sample_seed + 1)  # each draw: all pairs if no more
    sampled = full.subset(None, sample or None, sample_seed)
    settings = dict(task=task, split=split, sample=len(sampled), sample_seed=sample_seed, n_pairs=len(full))
    centering = f"{centering_task}/{centering_split} x{centering_sentences}"
    settings.update(split_pairs=n_pairs, centering=centering, second=f"{second_task}/{second_split}")
    result = JointResult(str(module.backbone_name), num_layers, settings=settings)
    search = Search(module, checkpoint, batch_size, progress)
    result.passes = search.passes
    on_sample, on_full = SpearmanObjective(sampled), SpearmanObjective(full)
    best = lambda items: max(items, key=lambda p: p.best)

    # Stage 1: templates x TP.
    plan1 = with_bands([Setting(template=spec) for spec in templates], bands)
    stage1 = [search.score(on_sample, s, "sample") for s in plan1]
    # Stage 2: demonstrations on the top settings.
    top = [p.setting for p in sorted(stage1, key=lambda p: -p.best)[:top_k]]
    if screen_sample and top and len(demos) > screen_top:
        screen = screen_demonstrations(search, sampled, top[0], demos, screen_sample, screen_top, sample_seed + 2)
        demos, result.screen = screen
    stage2 = [search.score(on_sample, s.replace(demonstrations=(demo,)), "sample") for s in top for demo in demos]
    # ... and the best demonstration with CK and with an ensemble of the two best single templates of stage 1.
    stage2 += [search.score(on_sample, s, "sample") for s in demonstration_extras(stage1, stage2, templates)]
    # Stage 3: Contrastive Prompting on the best setting so far.
    so_far = best(stage1 + stage2).setting
    modes = [*(("ns", float(alpha)) for alpha in cp_alphas), ("nr", 1.0)]
    plan3 = [so_far.replace(cp_layer=layer, cp_mode=mode, cp_alpha=alpha) for layer in layers for mode, alpha in modes]
    stage3 = [search.score(on_sample, s, "sample") for s in plan3]
    # Stage 4: vanilla PromptEOL and the finalists on all pairs: the best of each stage, then the next best overall.
    ranked = [best(stage) for stage in (stage1, stage2, stage3) if stage]
    ranked += sorted(stage1 + stage2 + stage3, key=lambda p: -p.best)
    chosen = list(dict.fromkeys(p.setting for p in ranked))[:finalists]
    spans = sorted({int(n) for n in layer_spans if n > 1})
    keep = bool(centering_sentences or spans)
    vanilla = search.score(on_full, Setting(), "full", keep)
    scored = [search.score(on_full, s, "full", keep) for s in chosen if s != vanilla.setting]
    # ... each also with the mean of `span` layers ending at each layer, from the kept states of its pass.
    spanned = [item.setting.replace(layer_span=n) for item in (vanilla, *scored) for n in spans]
    scored += [search.score(SpanObjective(on_full, s.layer_span), s, "full") for s in spanned]
    eligible, second = scored, None
    if second_task:  # ... and on the second dev set: a finalist below vanilla's best layer there cannot win.
        second_data = load_sts_split(data_dir, second_task, second_split)[0]
        on_second = SpearmanObjective(second_data.subset(None, final_sample, sample_seed + 1))
        objective = lambda s: SpanObjective(on_second, s.layer_span) if s.layer_span > 1 else on_second
        second = {i.setting: search.score(objective(i.setting), i.setting, "second", keep) for i in (vanilla, *scored)}
        floor = finite(second[vanilla.setting].best)
        eligible = [item for item in scored if finite(second[item.setting].scores[item.best_layer]) >= floor]
    winner = choose_winner([vanilla, *eligible], vanilla, min_gain)
    result.vanilla, result.winner = vanilla, winner
    if second is not None:
        result.second = second_record(f"{second_task}/{second_split}", winner, vanilla, scored, eligible, second)
    layer = winner.best_layer
    # Stage 5: centering with unlabeled sentences that are not the tuning data.
    if centering_sentences:
        source = f"{centering_task}:{centering_split}"
        texts = read_sentences(source, data_dir=data_dir, max_sentences=centering_sentences, seed=sample_seed)
        embed = lambda states: span_mean(states, winner.setting.layer_span)[:, layer]  # the winner's embedding
        fitted = Centering.from_embeddings(embed(search.embed(texts, winner.setting)))  # Centering itself
        states = search.kept.get(("full", winner.setting.replace(layer_span=1)))
        states = search.embed(on_full.texts, winner.setting) if states is None else states
        embeddings = fitted({"sentence_embedding": torch.from_numpy(embed(states))})["sentence_embedding"]
        centered = on_full.score_layer(embeddings.numpy())
        result.centering_gain = float(centered - winner.scores[layer])
        result.centering_chosen = result.centering_gain > min_gain
        search.say(f"centering at layer {layer}: {centered:.2f} ({result.centering_gain:+.2f})")
    return result


def demonstration_extras(
    stage1: Sequence[Scored], stage2: Sequence[Scored], templates: Sequence[str | Sequence[str]]
) -> list[Setting]:
    """The Settings stage 2 adds with its best demonstration: CK with it (when CK was searched in stage 1 but got no
    demonstration), and the ensemble of the two best single templates of stage 1 with it (at the best one's TP band);
    then the best stage-2 setting with its two and its three best demonstrations in one prompt (best first).

    Args:
        stage1: The stage-1 passes.
        stage2: The stage-2 passes (single demonstrations).
        templates: The stage-1 template specs.
    """
    if not stage2:
        return []
    top = max(stage2, key=lambda p: finite(p.best)).setting
    demo, base = top.demonstrations, top.replace(demonstrations=())
    with_demo = {p.setting.replace(demonstrations=()) for p in stage2}
    ranked = sorted(stage1, key=lambda p: -finite(p.best))
    extras = []
    ck = [p.setting for p in ranked if p.setting.template == "ck"]
    if "ck" in templates and ck and ck[0] not in with_demo:
        extras.append(ck[0].replace(demonstrations=demo))
    singles = list(dict.fromkeys(p.setting.template for p in ranked if isinstance(p.setting.template, str)))
    if len(singles) >= 2:
        first = next(p.setting for p in ranked if p.setting.template == singles[0])
        extras.append(first.replace(template=(singles[0], singles[1]), demonstrations=demo))
    same_base = sorted(
        (p for p in stage2 if p.setting.replace(demonstrations=()) == base), key=lambda p: -finite(p.best)
    )
    shots = list(dict.fromkeys(d for p in same_base for d in p.setting.demonstrations))
    extras += [base.replace(demonstrations=tuple(shots[:n])) for n in (2, 3) if len(shots) >= n]
    return [s for s in dict.fromkeys(extras) if s not in {p.setting for p in stage2}]


def second_record(
    data: str,
    winner: Scored,
    vanilla: Scored,
    finalists: Sequence[Scored],
    eligible: Sequence[Scored],
    second: dict[Setting, Scored],
) -> dict[str, Any]:
    """The second dev set record of a search (:attr:`JointResult.second`, a preset's ``second_dev_set``).

    Args:
        data: ``task/split`` of the second dev set.
        winner: The winner's pass on the tuning data.
        vanilla: Vanilla PromptEOL's pass on the tuning data.
        finalists: The other finalists' passes on the tuning data.
        eligible: The finalists that may win.
        second: Setting -> its pass on the second dev set (vanilla and every finalist).
    """
    floor = second[vanilla.setting]
    rows = [
        {
            "setting": describe(item.setting),
            "layer": item.best_layer,
            "spearman": json_float(second[item.setting].scores[item.best_layer], 2),
            "eligible": any(item is other for other in eligible),
        }
        for item in finalists
    ]
    return {
        "data": data,
        "winner_at_layer": round(second[winner.setting].scores[winner.best_layer], 2),
        "vanilla_at_its_layer": round(floor.scores[vanilla.best_layer], 2),
        "vanilla_best_layer": floor.best_layer,
        "vanilla_best": json_float(floor.best, 2),
        "finalists": rows,
    }


def screen_demonstrations(
    search: Search,
    sampled: STSData,
    setting: Setting,
    candidates: Sequence[Demonstration],
    sample: int,
    keep: int,
    seed: int = 2,
) -> tuple[tuple[Demonstration, ...], dict[str, Any]]:
    """Stage 2's screen: every candidate with ``setting`` on a seeded sample of ``sampled`` (one ``"screen"`` pass
    each); the ``keep`` best go on.

    Args:
        search: The search (its passes and checkpoint).
        sampled: The stage 1-3 sample.
        setting: The Setting the candidates are put in front of (the best of stage 1).
        candidates: The candidate demonstrations.
        sample: Pairs of the screen sample (all of ``sampled`` if it has no more).
        keep: How many candidates go on.
        seed: Seed of the screen sample.

    Returns:
        The kept candidates (best first) and the screen's record (:attr:`JointResult.screen`).
    """
    pairs = sampled.subset(None, sample, seed)
    objective = SpearmanObjective(pairs)
    scored = [search.score(objective, setting.replace(demonstrations=(demo,)), "screen") for demo in candidates]
    order = sorted(range(len(candidates)), key=lambda i: -finite(scored[i].best))[:keep]
    kept = tuple(candidates[i] for i in order)
    seconds = round(sum(item.seconds for item in scored), 1)
    record = dict(candidates=len(candidates), sample=len(pairs), sample_seed=seed, passes=len(scored), seconds=seconds)
    return kept, {**record, "setting": describe(setting), "kept": [demo.word for demo in kept]}
