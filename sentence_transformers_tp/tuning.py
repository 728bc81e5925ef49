"""Automatic choice of the TP layers (``tp_start``/``tp_exit``) and the output layer on STS data.

Token Prepending has two hyperparameters that must be tuned per backbone and prompt: the last prepending layer and
the output layer (the paper picks them on the STS-B dev set, TP_REFERENCE §4). On small backbones the paper's
defaults can be worse than no TP at all, so :func:`tune` searches a grid that always contains the vanilla prompt:

* **TP off** (the vanilla prompt, no placeholder): one forward pass;
* **TP on** for every ``(tp_start, tp_exit)`` candidate: one forward pass each (by default ``tp_start = 1`` and
  ``tp_exit`` in ``2 .. min(12, num_layers)``, see :func:`default_tp_exits`);

and for each pass **every output layer** ``0 .. num_layers`` (Hugging Face ``hidden_states`` indexing: 0 = the
embeddings, ``k`` = output of decoder layer ``k``, ``num_layers`` = the final normed output, written ``-1`` in
presets). One forward pass per setting records the last-token state of every layer at once, so the whole grid costs
``1 + len(candidates)`` encodes of the deduplicated sentences. Each cell is scored as
:func:`~sentence_transformers_tp.evaluation.evaluate_sts` scores a model (cosine vs gold, Spearman x 100).

The winner is the best cell; ties go to the simpler setting (TP off, then the narrower TP band, then the final
layer, then the deeper layer). Because TP off is always searched, the winner is never worse on the tuning data than
the best vanilla configuration; ``min_gain`` makes TP win only when it beats vanilla by more than that many points.

Example:
    >>> from sentence_transformers_tp.presets import save_preset
    >>> from sentence_transformers_tp.tuning import tune
    >>> result = tune("smollm2", "/data", template="prompteol")  # doctest: +SKIP
    >>> result.best, result.best_vanilla  # doctest: +SKIP
    >>> save_preset(result.to_preset(), "sentence_transformers_tp/configs/smollm2.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentence_transformers_tp.evaluation.data import STSData, load_sts, normalize_sts_task, resolve_sts_split
from sentence_transformers_tp.evaluation.sts import cosine_scores, spearman
from sentence_transformers_tp.interventions import ForwardSettings
from sentence_transformers_tp.truncation import report_truncation

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_TP_EXIT",
    "TP_OFF",
    "Choice",
    "GridKey",
    "TuningResult",
    "default_tp_exits",
    "encode_all_layers",
    "parse_int_list",
    "score_layers",
    "tune",
]

#: Grid key of the vanilla setting (TP off, the prompt without placeholder).
TP_OFF = "off"
#: The largest ``tp_exit`` candidate searched by default (capped at the number of layers).
DEFAULT_MAX_TP_EXIT = 12

GridKey = str | tuple[int, int]
"""``"off"`` or ``(tp_start, tp_exit)``."""


def default_tp_exits(num_layers: int, tp_start: int = 1) -> list[int]:
    """The default ``tp_exit`` candidates: ``tp_start + 1 .. min(12, num_layers)``.

    The paper's bands end before layer 3-7 (TP_REFERENCE §1.5); 12 leaves room for deeper bands on any backbone
    while keeping the search at about ten forward passes.

    Args:
        num_layers: Number of decoder layers of the backbone.
        tp_start: First decoder layer (0-based) whose placeholder is replaced.

    Returns:
        The candidates, ascending (empty when ``tp_start >= num_layers``).
    """
    return list(range(tp_start + 1, min(DEFAULT_MAX_TP_EXIT, num_layers) + 1))


def parse_int_list(text: str) -> list[int]:
    """Parse ``"2-12"``, ``"2,3,4,8"`` or ``"2-6,8,10"`` into a sorted list of distinct integers.

    Args:
        text: Comma-separated integers or inclusive ranges ``a-b``.

    Returns:
        The integers, ascending.

    Raises:
        ValueError: On anything else.
    """
    values: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                low, high = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                low_value, high_value = int(low), int(high)
                if high_value < low_value:
                    raise ValueError
                values.update(range(low_value, high_value + 1))
            else:
                values.add(int(part))
        except ValueError:
            raise ValueError(f"Cannot parse {part!r} in {text!r}: expected integers or ranges like 2-12.") from None
    if not values:
        raise ValueError(f"No integers in {text!r}.")
    return sorted(values)


@dataclass(frozen=True)
class Choice:
    """One cell of the grid: a TP setting and an output layer with its score.

    Args:
        tp_start: First decoder layer (0-based) whose placeholder is replaced.
        tp_exit: First layer after ``tp_start`` without replacement; ``tp_exit <= tp_start`` is TP off.
        output_layer: Resolved ``hidden_states`` index, ``0 .. num_layers``.
        spearman: Spearman x 100 on the tuning data.
        num_layers: Number of decoder layers of the backbone.
    """

    tp_start: int
    tp_exit: int
    output_layer: int
    spearman: float
    num_layers: int

    @property
    def tp_enabled(self) -> bool:
        """Whether TP is on in this cell."""
        return self.tp_exit > self.tp_start

    @property
    def key(self) -> GridKey:
        """The grid key of the cell's TP setting."""
        return (self.tp_start, self.tp_exit) if self.tp_enabled else TP_OFF

    @property
    def preset_output_layer(self) -> int:
        """The output layer as written in presets and module configs (-1 for the final normed output)."""
        return -1 if self.output_layer == self.num_layers else self.output_layer

    def settings(self) -> dict[str, int]:
        """The constructor settings ``{"tp_start", "tp_exit", "output_layer"}`` of this cell."""
        return {"tp_start": self.tp_start, "tp_exit": self.tp_exit, "output_layer": self.preset_output_layer}

    def label(self) -> str:
        """A short human-readable label, e.g. ``"TP 1..3 (tp_exit 4), layer -1"`` or ``"TP off, layer 28"``.

        ``TP a..b`` means the placeholder is replaced before decoder layers ``a`` to ``b`` (0-based).
        """
        layer = f"layer {self.preset_output_layer}"
        if not self.tp_enabled:
            return f"TP off, {layer}"
        return f"TP {self.tp_start}..{self.tp_exit - 1} (tp_exit {self.tp_exit}), {layer}"


def _key_to_str(key: GridKey) -> str:
    return key if isinstance(key, str) else f"{key[0]}-{key[1]}"


def _key_from_str(text: str) -> GridKey:
    if text == TP_OFF:
        return TP_OFF
    start, exit_ = text.split("-")
    return int(start), int(exit_)


def _simplicity(key: GridKey) -> tuple[int, int, int]:
    """Sort key: TP off first, then narrower bands, then earlier bands."""
    if key == TP_OFF:
        return (0, 0, 0)
    start, exit_ = key
    return (1, exit_ - start, start)


@dataclass
class TuningResult:
    """The full score grid of a tuning run.

    Args:
        grid: ``{"off" or (tp_start, tp_exit): [Spearman x 100 per output layer 0..num_layers]}``.
        num_layers: Number of decoder layers of the backbone.
        template: The template that was tuned (built-in name or user template).
        backbone: The backbone name, if known.
        task: STS task key of the tuning data.
        split: Split of the tuning data (as on disk).
        n_pairs: Number of scored pairs.
        n_sentences: Number of distinct sentences encoded per pass.
        limit: ``limit`` used when loading the data (None: all pairs).
        sample: ``sample`` used when loading the data (None: no random draw).
        sample_seed: Seed of the ``sample`` draw.
        min_gain: TP is chosen only if it beats the best vanilla cell by more than this (Spearman points).
        seconds: Wall time of each pass, by grid key.
        data_dir: The data directory, if the data came from one.
    """

    grid: dict[GridKey, list[float]]
    num_layers: int
    template: str | list[str] = "prompteol"
    backbone: str | None = None
    task: str = "stsb"
    split: str = "dev"
    n_pairs: int = 0
    n_sentences: int = 0
    limit: int | None = None
    sample: int | None = None
    sample_seed: int = 0
    min_gain: float = 0.0
    seconds: dict[GridKey, float] = field(default_factory=dict)
    data_dir: str | None = None

    # ------------------------------------------------------------------ choices

    def keys(self) -> list[GridKey]:
        """The TP settings of the grid: ``"off"`` first, then ``(tp_start, tp_exit)`` ascending."""
        return sorted(self.grid, key=lambda key: (key != TP_OFF, key if key != TP_OFF else (0, 0)))

    def cell(self, key: GridKey, output_layer: int) -> Choice:
        """The cell of a TP setting and output layer.

        Args:
            key: ``"off"`` or ``(tp_start, tp_exit)``.
            output_layer: ``hidden_states`` index; negatives count from the end (-1 = final normed output).

        Returns:
            The cell.
        """
        layer = output_layer % (self.num_layers + 1)
        start, exit_ = (self._off_start(), self._off_start()) if key == TP_OFF else key
        return Choice(start, exit_, layer, float(self.grid[key][layer]), self.num_layers)

    def _off_start(self) -> int:
        starts = [key[0] for key in self.grid if key != TP_OFF]
        return min(starts) if starts else 1

    def best_for(self, key: GridKey) -> Choice:
        """The best output layer of one TP setting (ties: the final layer, then the deeper layer).

        Args:
            key: ``"off"`` or ``(tp_start, tp_exit)``.

        Returns:
            The best cell of that row.
        """
        scores = self.grid[key]
        order = sorted(
            range(len(scores)), key=lambda layer: (-_finite(scores[layer]), layer != self.num_layers, -layer)
        )
        return self.cell(key, order[0])

    @property
    def best_vanilla(self) -> Choice:
        """The best cell with TP off."""
        return self.best_for(TP_OFF)

    @property
    def best_tp(self) -> Choice | None:
        """The best cell with TP on (None when no TP setting was searched)."""
        rows = [self.best_for(key) for key in self.grid if key != TP_OFF]
        if not rows:
            return None
        return min(rows, key=lambda choice: (-_finite(choice.spearman), _simplicity(choice.key)))

    @property
    def best(self) -> Choice:
        """The winner: the best TP cell if it beats the best vanilla cell by more than ``min_gain``, else vanilla."""
        vanilla = self.best_vanilla
        tp = self.best_tp
        if tp is not None and _finite(tp.spearman) > _finite(vanilla.spearman) + self.min_gain:
            return tp
        return vanilla

    def ranking(self) -> list[Choice]:
        """The best cell of every TP setting, best first (ties: simpler first)."""
        rows = [self.best_for(key) for key in self.grid]
        return sorted(rows, key=lambda choice: (-_finite(choice.spearman), _simplicity(choice.key)))

    # ------------------------------------------------------------------ presets

    def score_entry(self) -> dict[str, Any]:
        """The ``score`` mapping written into a preset for the winner."""
        vanilla = self.best_vanilla
        entry: dict[str, Any] = {
            "task": self.task,
            "split": self.split,
            "n_pairs": self.n_pairs,
            "spearman": round(self.best.spearman, 2),
            "vanilla_best_spearman": round(vanilla.spearman, 2),
            "vanilla_best_layer": vanilla.preset_output_layer,
        }
        if self.limit is not None:
            entry["limit"] = self.limit
        if self.sample is not None:
            entry["sample"] = self.sample
            entry["sample_seed"] = self.sample_seed
        return entry

    def to_preset(
        self,
        name: str | None = None,
        backbone: str | None = None,
        *,
        base: Any = None,
        command: str | None = None,
        aliases: Sequence[str] | None = None,
        source: str | None = None,
    ) -> Any:
        """The winner as a :class:`~sentence_transformers_tp.presets.Preset` (status ``tuned``).

        Args:
            name: Preset name; defaults to ``base``'s name, else the backbone.
            backbone: The preset's backbone; defaults to ``base``'s backbone, else :attr:`backbone`.
            base: An existing preset to update: its other templates are kept and this template's entry is replaced.
            command: The command that reproduces the tuning, stored with the entry.
            aliases: Aliases of a new preset.
            source: The preset's ``source`` text (default: kept from ``base``, else a generated description).

        Returns:
            The preset.

        Raises:
            ValueError: If the tuned template is not a built-in template (presets hold built-in templates only), or
                ``base`` has a different number of layers.
        """
        from sentence_transformers_tp.presets import Preset, validate_preset
        from sentence_transformers_tp.templates import canonical_template_name

        template = canonical_template_name(self.template) if isinstance(self.template, str) else None
        if template is None:
            raise ValueError(
                f"Presets hold settings for the built-in templates only; {self.template!r} is not one of them."
            )
        if base is not None and base.num_layers is not None and base.num_layers != self.num_layers:
            raise ValueError(
                f"Preset {base.name!r} is for a backbone with {base.num_layers} layers, the tuned one has "
                f"{self.num_layers}."
            )
        backbone = backbone or (base.backbone if base is not None else None) or self.backbone
        if not backbone:
            raise ValueError("to_preset needs a backbone name (the result has none).")
        entry: dict[str, Any] = {**self.best.settings(), "status": "tuned", "score": self.score_entry()}
        if command:
            entry["command"] = command
        if base is not None:
            preset = copy.deepcopy(base)
            preset.templates = {**preset.templates, template: entry}
            if name:
                preset.name = name
            preset.backbone = backbone
            if aliases:
                preset.aliases = list(dict.fromkeys([*preset.aliases, *aliases]))
            if source is not None:
                preset.source = source
            preset.num_layers = self.num_layers
            if preset.status != "paper":
                preset.status = "tuned"
        else:
            default_source = (
                f"Tuned with `st-tp tune` on {self.task} {self.split} (Spearman x 100 of cosine similarities): "
                "TP off and TP bands searched with every output layer; see docs/tuning.md."
            )
            preset = Preset(
                name=name or _default_preset_name(backbone),
                backbone=backbone,
                templates={template: entry},
                aliases=list(aliases or []),
                num_layers=self.num_layers,
                status="tuned",
                source=source if source is not None else default_source,
                default_template=template,
            )
        validate_preset(preset.to_dict(), origin=f"tuned preset {preset.name!r}")
        return preset

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (grid keys as ``"off"`` / ``"1-4"``; ``nan`` as None)."""
        best = self.best
        vanilla = self.best_vanilla
        return {
            "backbone": self.backbone,
            "template": self.template,
            "task": self.task,
            "split": self.split,
            "n_pairs": self.n_pairs,
            "n_sentences": self.n_sentences,
            "limit": self.limit,
            "sample": self.sample,
            "sample_seed": self.sample_seed,
            "data_dir": self.data_dir,
            "num_layers": self.num_layers,
            "min_gain": self.min_gain,
            "grid": {_key_to_str(key): [_json_float(v) for v in self.grid[key]] for key in self.keys()},
            "seconds": {_key_to_str(key): round(value, 3) for key, value in self.seconds.items()},
            "best": {**best.settings(), "spearman": _json_float(best.spearman)},
            "best_vanilla": {**vanilla.settings(), "spearman": _json_float(vanilla.spearman)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuningResult:
        """Rebuild a result from :meth:`to_dict` output.

        Args:
            data: The dict.

        Returns:
            The result.
        """
        grid = {
            _key_from_str(key): [float("nan") if v is None else float(v) for v in values]
            for key, values in data["grid"].items()
        }
        return cls(
            grid=grid,
            num_layers=int(data["num_layers"]),
            template=data.get("template", "prompteol"),
            backbone=data.get("backbone"),
            task=data.get("task", "stsb"),
            split=data.get("split", "dev"),
            n_pairs=int(data.get("n_pairs", 0)),
            n_sentences=int(data.get("n_sentences", 0)),
            limit=data.get("limit"),
            sample=data.get("sample"),
            sample_seed=int(data.get("sample_seed") or 0),
            min_gain=float(data.get("min_gain", 0.0)),
            seconds={_key_from_str(k): float(v) for k, v in data.get("seconds", {}).items()},
            data_dir=data.get("data_dir"),
        )

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON.

        Args:
            path: Target file.

        Returns:
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    def to_markdown(self, *, grid: bool = True, decimals: int = 2) -> str:
        """Markdown tables: one row per TP setting (best layer and score), then the per-layer grid.

        Args:
            grid: Include the per-layer grid (rows = output layers, columns = TP settings; the best layer of
                each setting in bold).
            decimals: Decimals of the scores.

        Returns:
            The markdown text.
        """
        best = self.best
        vanilla = self.best_vanilla
        template = self.template if isinstance(self.template, str) else f"{len(self.template)} user templates"
        data = f"{self.task} {self.split}, {self.n_pairs} pairs, {self.n_sentences} distinct sentences"
        lines = [
            f"Backbone `{self.backbone}`, template `{template}`, {self.num_layers} layers; {data}.",
            "",
            f"Winner: **{best.label()}**: {best.spearman:.{decimals}f} "
            f"(best vanilla: {vanilla.label()}: {vanilla.spearman:.{decimals}f}; "
            f"{best.spearman - vanilla.spearman:+.{decimals}f}).",
            "",
            "| setting | tp_start | tp_exit | best layer | Spearman | vs best vanilla | at layer -1 | pass (s) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key in self.keys():
            choice = self.best_for(key)
            name = "TP off (vanilla)" if key == TP_OFF else f"TP {key[0]}..{key[1] - 1}"
            starts = "-" if key == TP_OFF else str(key[0])
            exits = "-" if key == TP_OFF else str(key[1])
            marker = "**" if choice.key == best.key and choice.output_layer == best.output_layer else ""
            seconds = self.seconds.get(key)
            lines.append(
                f"| {marker}{name}{marker} | {starts} | {exits} | {choice.preset_output_layer} "
                f"| {marker}{choice.spearman:.{decimals}f}{marker} | {choice.spearman - vanilla.spearman:+.{decimals}f} "
                f"| {self.grid[key][self.num_layers]:.{decimals}f} | {'' if seconds is None else f'{seconds:.0f}'} |"
            )
        if grid:
            keys = self.keys()
            header = ["layer", *("off" if key == TP_OFF else f"{key[0]}..{key[1] - 1}" for key in keys)]
            lines += [
                "",
                "Per-layer grid (rows: output layer, `hidden_states` index, L = final normed output; "
                "columns: TP off or TP before layers `tp_start..tp_exit-1`):",
                "",
                "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header),
            ]
            best_layers = {key: self.best_for(key).output_layer for key in keys}
            for layer in range(self.num_layers + 1):
                label = f"{layer} (L)" if layer == self.num_layers else str(layer)
                cells = []
                for key in keys:
                    value = f"{self.grid[key][layer]:.{max(decimals - 1, 0)}f}"
                    cells.append(f"**{value}**" if best_layers[key] == layer else value)
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _finite(value: float) -> float:
    return value if value == value else float("-inf")


def _json_float(value: float) -> float | None:
    return None if value != value else round(float(value), 6)


def _default_preset_name(backbone: str) -> str:
    base = os.path.basename(os.path.normpath(str(backbone))) or "model"
    return base.lower()


# ---------------------------------------------------------------------- encoding all layers in one pass


def encode_all_layers(
    module: Any,
    sentences: Sequence[str],
    *,
    settings: ForwardSettings | None = None,
    templates: Sequence[str] | None = None,
    tp_start: int | None = None,
    tp_exit: int | None = None,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> np.ndarray:
    """Embed sentences at every output layer in one forward pass per batch.

    Row ``i``, layer ``k`` equals what ``TokenPrependingTransformer`` with these settings and ``output_layer=k``
    returns for sentence ``i``: both run through :meth:`TokenPrependingTransformer.embed` (same interventions, same
    prefix cache), here capturing every layer (batches are formed as ``SentenceTransformer.encode`` forms them:
    longest texts first).

    Args:
        module: A :class:`~sentence_transformers_tp.module.TokenPrependingTransformer`.
        sentences: The sentences.
        settings: The forward settings (TP band, Contrastive Prompting); defaults to the module's own.
        templates: Resolved template strings to embed with instead of the module's (see
            :meth:`TokenPrependingTransformer.preprocess`).
        tp_start: Overrides ``settings.tp_start``.
        tp_exit: Overrides ``settings.tp_exit``; ``tp_exit <= tp_start`` is TP off (the vanilla prompt).
        batch_size: Sentences per forward pass.
        show_progress_bar: Show a progress bar.

    Returns:
        ``(len(sentences), num_layers + 1, hidden)`` float32 array.
    """
    import torch
    from tqdm.auto import tqdm

    settings = settings or module.forward_settings()
    overrides = {k: v for k, v in (("tp_start", tp_start), ("tp_exit", tp_exit)) if v is not None}
    settings = settings.replace(**overrides)
    num_layers = module.num_layers
    if settings.tp_enabled and (settings.tp_start < 0 or settings.tp_exit > num_layers):
        raise ValueError(f"TP band {settings.tp_start}-{settings.tp_exit} is outside the {num_layers} decoder layers.")
    order = np.argsort([-len(text) for text in sentences], kind="stable")
    out: np.ndarray | None = None
    was_training = module.training
    module.eval()
    try:
        starts = range(0, len(sentences), batch_size)
        with torch.inference_mode(), report_truncation():
            for start in tqdm(starts, desc="Batches", disable=not show_progress_bar, leave=False):
                index = order[start : start + batch_size]
                features = module.preprocess([sentences[i] for i in index], settings=settings, templates=templates)
                states = module.embed(features, layers="all").cpu().numpy()
                if out is None:
                    out = np.empty((len(sentences), *states.shape[1:]), dtype=np.float32)
                out[index] = states
    finally:
        module.train(was_training)
    if out is None:
        dim = module.get_embedding_dimension()
        out = np.zeros((0, num_layers + 1, dim), dtype=np.float32)
    return out


def score_layers(states: np.ndarray, index1: np.ndarray, index2: np.ndarray, gold: Sequence[float]) -> list[float]:
    """Spearman x 100 of the pair cosines vs gold, for every layer of :func:`encode_all_layers` output.

    Args:
        states: ``(n_sentences, n_layers, hidden)`` embeddings.
        index1: Row of the first sentence of each pair.
        index2: Row of the second sentence of each pair.
        gold: Gold score of each pair.

    Returns:
        One score per layer (``nan`` where undefined).
    """
    gold_array = np.asarray(gold, dtype=np.float64)
    return [
        100.0 * spearman(cosine_scores(states[index1, layer], states[index2, layer]), gold_array)
        for layer in range(states.shape[1])
    ]


# ---------------------------------------------------------------------- the search


def _as_module(model: Any, template: str | Sequence[str] | None, module_kwargs: dict[str, Any]) -> Any:
    from sentence_transformers_tp.module import TokenPrependingTransformer

    if isinstance(model, TokenPrependingTransformer):
        module = model
    elif hasattr(model, "__getitem__") and hasattr(model, "encode"):
        module = model[0]
        if not isinstance(module, TokenPrependingTransformer):
            raise ValueError("The SentenceTransformer's first module is not a TokenPrependingTransformer.")
    else:
        return TokenPrependingTransformer(str(model), template or "prompteol", **module_kwargs)
    if template is not None and template != module.template:
        raise ValueError(
            f"The model's template is {module.template!r}; build a model with template {template!r} to tune it."
        )
    return module


def _load_checkpoint(path: Path, expected: dict[str, Any]) -> dict[GridKey, tuple[list[float], float]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if any(data.get(key) != value for key, value in expected.items()):
        logger.warning(f"Ignoring checkpoint {path}: it was written for other settings.")
        return {}
    seconds = data.get("seconds", {})
    return {
        _key_from_str(key): ([float("nan") if v is None else float(v) for v in values], float(seconds.get(key, 0.0)))
        for key, values in data.get("grid", {}).items()
    }


def tune(
    model: Any,
    data_dir: str | os.PathLike | None = None,
    *,
    template: str | Sequence[str] | None = None,
    task: str = "stsb",
    split: str = "dev",
    data: STSData | None = None,
    limit: int | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    tp_start: int | Sequence[int] = 1,
    tp_exits: Sequence[int] | None = None,
    min_gain: float = 0.0,
    batch_size: int = 32,
    show_progress_bar: bool = False,
    checkpoint: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
    **module_kwargs: Any,
) -> TuningResult:
    """Search TP off and TP bands x every output layer on STS data; return the full score grid.

    Args:
        model: A :class:`~sentence_transformers_tp.module.TokenPrependingTransformer`, a ``SentenceTransformer``
            whose first module is one, or a backbone name/path (a module is then built with ``template``).
        data_dir: Data directory in the layout of :mod:`sentence_transformers_tp.evaluation.data` (not needed when
            ``data`` is given).
        template: Template to tune when ``model`` is a backbone (default ``"prompteol"``); for a module it must be
            None or the module's template.
        task: STS task of the tuning data (any alias; default ``"stsb"``).
        split: Split of the tuning data (default ``"dev"``, as the paper).
        data: The pairs themselves, instead of ``data_dir``/``task``/``split``.
        limit: Use only the first ``limit`` pairs.
        sample: Use ``sample`` pairs drawn at random instead (seeded, kept in file order): a representative subset
            of genre-ordered files such as STS-B dev, where the first pairs are not.
        sample_seed: Seed of the ``sample`` draw.
        tp_start: First prepending layer of the TP candidates (0-based), or several.
        tp_exits: ``tp_exit`` candidates (default :func:`default_tp_exits`); those not above a ``tp_start`` or
            above the number of layers are skipped.
        min_gain: TP must beat the best vanilla cell by more than this many points to win.
        batch_size: Sentences per forward pass.
        show_progress_bar: Show progress bars.
        checkpoint: JSON file updated after every pass; a rerun with the same settings skips passes found there.
        progress: Called with one line of text after every pass (e.g. ``print``).
        **module_kwargs: Further constructor arguments when a module is built from a backbone name.

    Returns:
        The grid and its winner.

    Raises:
        ValueError: On bad candidates or an empty data set.
    """
    module = _as_module(model, template, module_kwargs)
    num_layers = module.num_layers
    if data is None:
        if data_dir is None:
            raise ValueError("tune needs data_dir (or data).")
        task = normalize_sts_task(task)
        resolved = resolve_sts_split(data_dir, task, split)
        if resolved is None:
            raise FileNotFoundError(f"{data_dir} has no {split!r} split for task {task!r}.")
        data = load_sts(data_dir, task, resolved)
        split = resolved
    data = data.subset(limit, sample, sample_seed)
    if len(data) < 2:
        raise ValueError(f"Tuning needs at least 2 scored pairs, got {len(data)}.")

    starts = [tp_start] if isinstance(tp_start, int) else list(dict.fromkeys(int(s) for s in tp_start))
    if not starts or any(s < 0 for s in starts):
        raise ValueError(f"tp_start must be one or more non-negative integers, got {tp_start!r}.")
    settings: list[GridKey] = [TP_OFF]
    for start in starts:
        exits = default_tp_exits(num_layers, start) if tp_exits is None else sorted(set(int(e) for e in tp_exits))
        too_deep = [e for e in exits if e > num_layers]
        if too_deep:
            raise ValueError(f"tp_exit candidates {too_deep} exceed the {num_layers} decoder layers.")
        settings += [(start, e) for e in exits if e > start]

    sentences = list(dict.fromkeys([*data.sentence1, *data.sentence2]))
    row = {text: i for i, text in enumerate(sentences)}
    index1 = np.array([row[t] for t in data.sentence1])
    index2 = np.array([row[t] for t in data.sentence2])

    result = TuningResult(
        grid={},
        num_layers=num_layers,
        template=module.template,
        backbone=str(module.backbone_name),
        task=task,
        split=split,
        n_pairs=len(data),
        n_sentences=len(sentences),
        limit=limit,
        sample=sample,
        sample_seed=sample_seed,
        min_gain=min_gain,
        data_dir=None if data_dir is None else str(data_dir),
    )
    checkpoint_path = Path(checkpoint) if checkpoint is not None else None
    done = {}
    if checkpoint_path is not None:
        expected = {
            "backbone": result.backbone,
            "template": result.template,
            "task": task,
            "split": split,
            "n_pairs": result.n_pairs,
            "num_layers": num_layers,
            "limit": limit,
            "sample": sample,
            **({"sample_seed": sample_seed} if sample is not None else {}),
        }
        done = _load_checkpoint(checkpoint_path, expected)
    for number, key in enumerate(settings, 1):
        if key in done and len(done[key][0]) == num_layers + 1:
            result.grid[key], result.seconds[key] = done[key]
            status = "from checkpoint"
        else:
            start_time = time.perf_counter()
            band = (starts[0], starts[0]) if key == TP_OFF else key
            states = encode_all_layers(
                module,
                sentences,
                tp_start=band[0],
                tp_exit=band[1],
                batch_size=batch_size,
                show_progress_bar=show_progress_bar,
            )
            result.grid[key] = score_layers(states, index1, index2, data.scores)
            result.seconds[key] = time.perf_counter() - start_time
            del states
            status = f"{result.seconds[key]:.0f} s"
            if checkpoint_path is not None:
                result.save_json(checkpoint_path)
        choice = result.best_for(key)
        line = (
            f"[{number}/{len(settings)}] {'TP off' if key == TP_OFF else f'TP {key[0]}..{key[1] - 1}'}: best layer "
            f"{choice.preset_output_layer} = {choice.spearman:.2f}, layer -1 = {result.grid[key][num_layers]:.2f} "
            f"({status})"
        )
        logger.info(line)
        if progress is not None:
            progress(line)
    return result
