"""The layer grid (``st-tp tune``): the module's Setting with TP off, then with every band (narrower first), each
scored by one all-layer pass at every output layer on STS data, as ``evaluate_sts`` would (the paper tunes on STS-B
dev, TP_REFERENCE §4); the winner rule never goes below the best vanilla layer."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sentence_transformers_tp.data import STSData, load_sts_split
from sentence_transformers_tp.presets import Preset, validate_preset
from sentence_transformers_tp.templates import canonical_template_name
from sentence_transformers_tp.tuning.cells import best_layer, choose_winner, finite
from sentence_transformers_tp.tuning.objectives import SpearmanObjective
from sentence_transformers_tp.tuning.passes import Search, as_module, with_bands
from sentence_transformers_tp.tuning.result import Result, json_float, table, tuned_entry

__all__ = ["DEFAULT_MAX_TP_EXIT", "TP_OFF", "Choice", "GridKey", "TuningResult", "default_tp_exits", "parse_int_list"]
__all__ += ["tune"]

#: Grid key of the vanilla setting (TP off, the prompt without placeholder).
TP_OFF = "off"
#: The largest ``tp_exit`` candidate searched by default (capped at the number of layers).
DEFAULT_MAX_TP_EXIT = 12

GridKey = str | tuple[int, int]
"""``"off"`` or ``(tp_start, tp_exit)``."""


def default_tp_exits(num_layers: int, tp_start: int = 1) -> list[int]:
    """The default ``tp_exit`` candidates ``tp_start + 1 .. min(12, num_layers)`` (paper bands end before 3-7)."""
    return list(range(tp_start + 1, min(DEFAULT_MAX_TP_EXIT, num_layers) + 1))


def parse_int_list(text: str) -> list[int]:
    """Parse ``"2-12"``, ``"2,3,4,8"`` or ``"2-6,8,10"`` into sorted distinct integers (else a ValueError)."""
    values: set[int] = set()
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        try:
            low, sep, high = part[1:].partition("-")
            if sep and int(high) < int(part[0] + low):
                raise ValueError
            values.update(range(int(part[0] + low), int(high) + 1) if sep else [int(part)])
        except ValueError:
            raise ValueError(f"Cannot parse {part!r} in {text!r}: expected integers or ranges like 2-12.") from None
    if not values:
        raise ValueError(f"No integers in {text!r}.")
    return sorted(values)


#: The fields of :class:`TuningResult` that describe the data and the model (written and read as they are).
_ABOUT = ("backbone", "template", "task", "split", "n_pairs", "n_sentences", "limit", "sample")


def _simplicity(key: GridKey) -> tuple[int, int, int]:
    """TP off first, then narrower bands, then earlier bands (the plan's order)."""
    return (0, 0, 0) if key == TP_OFF else (1, key[1] - key[0], key[0])


@dataclass(frozen=True)
class Choice:
    """One cell of the grid: a TP setting at an output layer, with its score.

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
        """The output layer as presets and module configs write it (-1 for the final normed output)."""
        return -1 if self.output_layer == self.num_layers else self.output_layer

    def settings(self) -> dict[str, int]:
        """The constructor settings ``{"tp_start", "tp_exit", "output_layer"}`` of this cell."""
        return {"tp_start": self.tp_start, "tp_exit": self.tp_exit, "output_layer": self.preset_output_layer}

    def label(self) -> str:
        """E.g. ``"TP 1..3 (tp_exit 4), layer -1"`` or ``"TP off, layer 28"``."""
        tp = f"TP {self.tp_start}..{self.tp_exit - 1} (tp_exit {self.tp_exit})" if self.tp_enabled else "TP off"
        return f"{tp}, layer {self.preset_output_layer}"

    def changes(self) -> int:
        """Changes from the vanilla prompt (TP on)."""
        return int(self.tp_enabled)


@dataclass
class TuningResult(Result):
    """The score grid of :func:`tune` and its winner.

    Args:
        grid: ``{"off" or (tp_start, tp_exit): [Spearman x 100 per output layer 0..num_layers]}``.
        num_layers: Number of decoder layers of the backbone.
        template: The template that was tuned.
        backbone: The backbone name, if known.
        task: STS task key of the tuning data.
        split: Split of the tuning data (as on disk).
        n_pairs: Number of scored pairs.
        n_sentences: Number of distinct sentences encoded per pass.
        limit: First pairs used (None: all).
        sample: Pairs drawn at random (None: no draw), with ``sample_seed``.
        sample_seed: Seed of the ``sample`` draw.
        min_gain: TP wins only if it beats the best vanilla cell by more than this (Spearman points).
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

    def keys(self) -> list[GridKey]:
        """The TP settings of the grid: ``"off"`` first, then ``(tp_start, tp_exit)`` ascending."""
        return sorted(self.grid, key=lambda key: (key != TP_OFF, key if key != TP_OFF else (0, 0)))

    def cell(self, key: GridKey, output_layer: int) -> Choice:
        """The cell of a grid key at an output layer (negatives count from the end)."""
        layer = output_layer % (self.num_layers + 1)
        off = min([k[0] for k in self.grid if k != TP_OFF], default=1)
        start, exit_ = (off, off) if key == TP_OFF else key
        return Choice(start, exit_, layer, float(self.grid[key][layer]), self.num_layers)

    def best_for(self, key: GridKey) -> Choice:
        """The best output layer of one TP setting (ties: the deeper layer)."""
        return self.cell(key, best_layer(self.grid[key]))

    def rows(self, tp_only: bool = False) -> list[Choice]:
        """The best cell of every TP setting, in plan order (simpler first)."""
        return [self.best_for(key) for key in sorted(self.grid, key=_simplicity) if not (tp_only and key == TP_OFF)]

    @property
    def best_vanilla(self) -> Choice:
        """The best cell with TP off."""
        return self.best_for(TP_OFF)

    @property
    def best_tp(self) -> Choice | None:
        """The best cell with TP on (None when no TP setting was searched)."""
        return max(self.rows(tp_only=True), key=lambda choice: finite(choice.spearman), default=None)

    @property
    def best(self) -> Choice:
        """The winner: :func:`~sentence_transformers_tp.tuning.cells.choose_winner` over each setting's best layer."""
        return choose_winner(self.rows(), self.best_vanilla, self.min_gain, score=lambda choice: choice.spearman)

    def ranking(self) -> list[Choice]:
        """The best cell of every TP setting, best first (ties: simpler first)."""
        return sorted(self.rows(), key=lambda choice: (-finite(choice.spearman), _simplicity(choice.key)))

    def score_entry(self) -> dict[str, Any]:
        """The ``score`` mapping written into a preset for the winner."""
        vanilla = self.best_vanilla
        entry = dict(task=self.task, split=self.split, n_pairs=self.n_pairs, spearman=round(self.best.spearman, 2))
        entry.update(vanilla_best_spearman=round(vanilla.spearman, 2), vanilla_best_layer=vanilla.preset_output_layer)
        if self.limit is not None:
            entry["limit"] = self.limit
        if self.sample is not None:
            entry.update(sample=self.sample, sample_seed=self.sample_seed)
        return entry

    def preset_entry(self, command: str | None = None) -> dict[str, Any]:
        """The template's preset entry: the winner's layers, ``status: tuned``, its score and the command."""
        return tuned_entry(self.best.settings(), self.score_entry(), command)

    def to_preset(
        self,
        name: str | None = None,
        backbone: str | None = None,
        *,
        base: Preset | None = None,
        command: str | None = None,
        aliases: Sequence[str] | None = None,
        source: str | None = None,
    ) -> Preset:
        """The winner as a preset (status ``tuned``).

        Args:
            name: Preset name (default: ``base``'s, else the backbone's).
            backbone: The preset's backbone (default: ``base``'s, else :attr:`backbone`).
            base: A preset to update: this template's entry is replaced, the others kept.
            command: The command that reproduces the tuning.
            aliases: Aliases added to the preset's.
            source: The preset's ``source`` text (default: ``base``'s, else a generated one).

        Raises:
            ValueError: If the template is not built in, ``base`` has another number of layers, or no backbone is known.
        """
        template = canonical_template_name(self.template) if isinstance(self.template, str) else None
        if template is None:
            raise ValueError(
                f"Presets hold settings for the built-in templates only; {self.template!r} is not one of them."
            )
        if base is not None and base.num_layers not in (None, self.num_layers):
            raise ValueError(
                f"Preset {base.name!r} is for a backbone with {base.num_layers} layers, the tuned one has "
                f"{self.num_layers}."
            )
        backbone = backbone or getattr(base, "backbone", None) or self.backbone
        if not backbone:
            raise ValueError("to_preset needs a backbone name (the result has none).")
        if base is None:
            default_name = (os.path.basename(os.path.normpath(str(backbone))) or "model").lower()
            source_text = f"Tuned with `st-tp tune` on {self.task} {self.split} (Spearman x 100 of cosine "
            source_text += "similarities): TP off and TP bands searched with every output layer; see docs/tuning.md."
            base = Preset(default_name, backbone, {}, source=source_text, default_template=template)
        preset = copy.deepcopy(base)
        preset.templates = {**preset.templates, template: self.preset_entry(command)}
        preset.name, preset.backbone, preset.num_layers = name or preset.name, backbone, self.num_layers
        if aliases:
            preset.aliases = list(dict.fromkeys([*preset.aliases, *aliases]))
        preset.source = preset.source if source is None else source
        preset.status = "paper" if preset.status == "paper" else "tuned"
        validate_preset(preset.to_dict(), origin=f"tuned preset {preset.name!r}")
        return preset

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (grid keys as ``"off"`` / ``"1-4"``; ``nan`` as None)."""
        text = lambda key: key if isinstance(key, str) else f"{key[0]}-{key[1]}"
        cell = lambda choice: {**choice.settings(), "spearman": json_float(choice.spearman)}
        return {
            **{key: getattr(self, key) for key in (*_ABOUT, "sample_seed", "data_dir")},
            "num_layers": self.num_layers,
            "min_gain": self.min_gain,
            "grid": {text(key): [json_float(v) for v in self.grid[key]] for key in self.keys()},
            "seconds": {text(key): round(value, 3) for key, value in self.seconds.items()},
            "best": cell(self.best),
            "best_vanilla": cell(self.best_vanilla),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuningResult:
        """Rebuild a result from :meth:`to_dict` output."""
        as_float = lambda values: [float("nan") if v is None else float(v) for v in values]
        parse = lambda text: TP_OFF if text == TP_OFF else tuple(int(x) for x in text.split("-"))
        return cls(
            grid={parse(k): as_float(values) for k, values in data["grid"].items()},
            num_layers=int(data["num_layers"]),
            **{key: data[key] for key in (*_ABOUT, "data_dir") if key in data},
            sample_seed=int(data.get("sample_seed") or 0),
            min_gain=float(data.get("min_gain", 0.0)),
            seconds={parse(k): float(v) for k, v in data.get("seconds", {}).items()},
        )

    def to_markdown(self, *, grid: bool = True, decimals: int = 2) -> str:
        """One row per TP setting (best layer and score), then with ``grid`` the per-layer grid (rows: layers,
        columns: TP settings, best layer in bold); scores with ``decimals`` decimals."""
        best, vanilla, d, keys = self.best, self.best_vanilla, decimals, self.keys()
        template = self.template if isinstance(self.template, str) else f"{len(self.template)} user templates"
        data = f"{self.task} {self.split}, {self.n_pairs} pairs, {self.n_sentences} distinct sentences"
        winner = f"Winner: **{best.label()}**: {best.spearman:.{d}f} (best vanilla: {vanilla.label()}: "
        winner += f"{vanilla.spearman:.{d}f}; {best.spearman - vanilla.spearman:+.{d}f})."
        data = f"Backbone `{self.backbone}`, template `{template}`, {self.num_layers} layers; {data}."
        lines = [data, "", winner, ""]
        rows = []
        for key, choice in ((key, self.best_for(key)) for key in keys):
            b = "**" if (choice.key, choice.output_layer) == (best.key, best.output_layer) else ""
            name = "TP off (vanilla)" if key == TP_OFF else f"TP {key[0]}..{key[1] - 1}"
            seconds = self.seconds.get(key)
            rows.append(
                [f"{b}{name}{b}", *(("-", "-") if key == TP_OFF else key), choice.preset_output_layer]
                + [f"{b}{choice.spearman:.{d}f}{b}", f"{choice.spearman - vanilla.spearman:+.{d}f}"]
                + [f"{self.grid[key][self.num_layers]:.{d}f}", "" if seconds is None else f"{seconds:.0f}"]
            )
        header = ["setting", "tp_start", "tp_exit", "best layer", "Spearman", "vs best vanilla", "at layer -1"]
        lines += table([*header, "pass (s)"], rows)
        if grid:
            note = "Per-layer grid (rows: output layer, `hidden_states` index, L = final normed output; "
            lines += ["", note + "columns: TP off or TP before layers `tp_start..tp_exit-1`):", ""]
            top = {key: self.best_for(key).output_layer for key in keys}
            value = lambda key, layer: f"{self.grid[key][layer]:.{max(d - 1, 0)}f}"
            rows = [
                [f"{layer} (L)" if layer == self.num_layers else layer]
                + [f"**{value(key, layer)}**" if top[key] == layer else value(key, layer) for key in keys]
                for layer in range(self.num_layers + 1)
            ]
            lines += table(["layer", *("off" if key == TP_OFF else f"{key[0]}..{key[1] - 1}" for key in keys)], rows)
        return "\n".join(lines) + "\n"


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
    """Search TP off and TP bands x every output layer on STS data.

    Args:
        model: A module, a ``SentenceTransformer`` starting with one, or a backbone name/path (see :func:`as_module`).
        data_dir: Data directory (:mod:`sentence_transformers_tp.data` layout), unless ``data`` is given.
        template: Template of a module built from a backbone; for a module, None or the module's template.
        task: STS task of the tuning data (any alias).
        split: Split of the tuning data (dev, as the paper).
        data: The pairs themselves, instead of ``data_dir``/``task``/``split``.
        limit: Use only the first ``limit`` pairs.
        sample: Use ``sample`` pairs drawn at random instead (seeded, kept in file order).
        sample_seed: Seed of the ``sample`` draw.
        tp_start: First prepending layer of the TP candidates (0-based), or several.
        tp_exits: ``tp_exit`` candidates (default :func:`default_tp_exits`); those not above ``tp_start`` are skipped.
        min_gain: TP must beat the best vanilla cell by more than this many points to win.
        batch_size: Sentences per forward pass.
        show_progress_bar: Accepted for compatibility (passes always show a batch progress bar).
        checkpoint: Folder of finished passes (:class:`~sentence_transformers_tp.tuning.passes.PassStore`).
        progress: Called with one line of text after every pass (e.g. ``print``).
        **module_kwargs: Further constructor arguments when a module is built from a backbone name.

    Raises:
        ValueError: On bad candidates or an empty data set.
    """
    module = as_module(model, template, **module_kwargs)
    num_layers = module.num_layers
    if data is None:
        if data_dir is None:
            raise ValueError("tune needs data_dir (or data).")
        data, task, split = load_sts_split(data_dir, task, split)
    data = data.subset(limit, sample, sample_seed)
    if len(data) < 2:
        raise ValueError(f"Tuning needs at least 2 scored pairs, got {len(data)}.")
    starts = [tp_start] if isinstance(tp_start, int) else list(dict.fromkeys(int(s) for s in tp_start))
    if not starts or any(s < 0 for s in starts):
        raise ValueError(f"tp_start must be one or more non-negative integers, got {tp_start!r}.")
    bands = []
    for start in starts:
        exits = default_tp_exits(num_layers, start) if tp_exits is None else sorted({int(e) for e in tp_exits})
        if too_deep := [e for e in exits if e > num_layers]:
            raise ValueError(f"tp_exit candidates {too_deep} exceed the {num_layers} decoder layers.")
        bands += [(start, e) for e in exits if e > start]
    bands = sorted(bands, key=_simplicity)  # the plan: the module's Setting with TP off, then every band
    plan = zip([TP_OFF, *bands], with_bands([module.setting.replace(tp_start=starts[0])], bands))
    objective = SpearmanObjective(data)
    about = dict(task=task, split=split, n_pairs=len(data), n_sentences=len(objective.texts), limit=limit)
    about.update(sample=sample, sample_seed=sample_seed, min_gain=min_gain, data_dir=data_dir and str(data_dir))
    result = TuningResult({}, num_layers, module.template, str(module.backbone_name), **about)
    search = Search(module, checkpoint, batch_size, progress)
    for key, setting in plan:
        item = search.score(objective, setting, "full")
        result.grid[key], result.seconds[key] = item.scores, item.seconds
    return result
