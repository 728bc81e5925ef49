"""The layer grid (``st-tp tune``): TP off and TP bands x every output layer on STS data.

Token Prepending has two hyperparameters that must be tuned per backbone and prompt: the TP band (``tp_start`` /
``tp_exit``) and the output layer (the paper picks them on STS-B dev, TP_REFERENCE §4). The plan lists the module's
Setting with TP off, then with every ``(tp_start, tp_exit)`` candidate (narrower bands first); one all-layer pass
each scores every output layer ``0 .. num_layers`` (``hidden_states`` indexing; ``num_layers`` = the final normed
output, written -1 in presets) as ``evaluate_sts`` scores a model. The winner follows
:func:`~sentence_transformers_tp.tuning.cells.choose_winner`: never below the best vanilla layer, TP only when it
gains more than ``min_gain``, ties to TP off, then the narrower band, then the deeper layer.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sentence_transformers_tp.evaluation.data import STSData, load_sts, normalize_sts_task, resolve_sts_split
from sentence_transformers_tp.presets import Preset, validate_preset
from sentence_transformers_tp.templates import canonical_template_name
from sentence_transformers_tp.tuning.cells import best_layer, choose_winner, finite
from sentence_transformers_tp.tuning.objectives import SpearmanObjective
from sentence_transformers_tp.tuning.passes import Search, as_module
from sentence_transformers_tp.tuning.result import Result, json_float

__all__ = [
    "DEFAULT_MAX_TP_EXIT",
    "TP_OFF",
    "Choice",
    "GridKey",
    "TuningResult",
    "default_tp_exits",
    "parse_int_list",
    "tune",
]

#: Grid key of the vanilla setting (TP off, the prompt without placeholder).
TP_OFF = "off"
#: The largest ``tp_exit`` candidate searched by default (capped at the number of layers).
DEFAULT_MAX_TP_EXIT = 12

GridKey = str | tuple[int, int]
"""``"off"`` or ``(tp_start, tp_exit)``."""


def default_tp_exits(num_layers: int, tp_start: int = 1) -> list[int]:
    """The default ``tp_exit`` candidates ``tp_start + 1 .. min(12, num_layers)`` (the paper's bands end before layer
    3-7; 12 leaves room for deeper bands at about ten passes).

    Args:
        num_layers: Number of decoder layers of the backbone.
        tp_start: First decoder layer (0-based) whose placeholder is replaced.

    Returns:
        The candidates, ascending.
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


def load_sts_split(data_dir: str | os.PathLike, task: str, split: str) -> tuple[STSData, str, str]:
    """An STS split of a data directory, with the normalised task and the split as on disk.

    Raises:
        FileNotFoundError: If the split does not exist.
    """
    task = normalize_sts_task(task)
    resolved = resolve_sts_split(data_dir, task, split)
    if resolved is None:
        raise FileNotFoundError(f"{data_dir} has no {split!r} split for task {task!r}.")
    return load_sts(data_dir, task, resolved), task, resolved


def _simplicity(key: GridKey) -> tuple[int, int, int]:
    """TP off first, then narrower bands, then earlier bands (the plan's order)."""
    return (0, 0, 0) if key == TP_OFF else (1, key[1] - key[0], key[0])


def _key_text(key: GridKey) -> str:
    return key if isinstance(key, str) else f"{key[0]}-{key[1]}"


def _key_from_text(text: str) -> GridKey:
    return TP_OFF if text == TP_OFF else tuple(int(x) for x in text.split("-"))  # type: ignore[return-value]


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
        """E.g. ``"TP 1..3 (tp_exit 4), layer -1"`` or ``"TP off, layer 28"``."""
        layer = f"layer {self.preset_output_layer}"
        if not self.tp_enabled:
            return f"TP off, {layer}"
        return f"TP {self.tp_start}..{self.tp_exit - 1} (tp_exit {self.tp_exit}), {layer}"

    def changes(self) -> int:
        """Changes from the vanilla prompt (TP on)."""
        return int(self.tp_enabled)


@dataclass
class TuningResult(Result):
    """The score grid of :func:`tune`.

    Args:
        grid: ``{"off" or (tp_start, tp_exit): [Spearman x 100 per output layer 0..num_layers]}``.
        num_layers: Number of decoder layers of the backbone.
        template: The template that was tuned.
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

    def keys(self) -> list[GridKey]:
        """The TP settings of the grid: ``"off"`` first, then ``(tp_start, tp_exit)`` ascending."""
        return sorted(self.grid, key=lambda key: (key != TP_OFF, key if key != TP_OFF else (0, 0)))

    def cell(self, key: GridKey, output_layer: int) -> Choice:
        """The cell of a TP setting (``"off"`` or ``(tp_start, tp_exit)``) at an output layer (negatives count from
        the end)."""
        layer = output_layer % (self.num_layers + 1)
        off = min([k[0] for k in self.grid if k != TP_OFF], default=1)
        start, exit_ = (off, off) if key == TP_OFF else key
        return Choice(start, exit_, layer, float(self.grid[key][layer]), self.num_layers)

    def best_for(self, key: GridKey) -> Choice:
        """The best output layer of one TP setting (ties: the deeper layer)."""
        return self.cell(key, best_layer(self.grid[key]))

    @property
    def best_vanilla(self) -> Choice:
        """The best cell with TP off."""
        return self.best_for(TP_OFF)

    @property
    def best_tp(self) -> Choice | None:
        """The best cell with TP on (None when no TP setting was searched)."""
        rows = [self.best_for(key) for key in sorted(self.grid, key=_simplicity) if key != TP_OFF]
        return max(rows, key=lambda choice: finite(choice.spearman), default=None)

    @property
    def best(self) -> Choice:
        """The winner (:func:`~sentence_transformers_tp.tuning.cells.choose_winner` over each setting's best
        layer)."""
        rows = [self.best_for(key) for key in sorted(self.grid, key=_simplicity)]
        return choose_winner(rows, self.best_vanilla, self.min_gain, score=lambda choice: choice.spearman)

    def ranking(self) -> list[Choice]:
        """The best cell of every TP setting, best first (ties: simpler first)."""
        rows = [self.best_for(key) for key in self.grid]
        return sorted(rows, key=lambda choice: (-finite(choice.spearman), _simplicity(choice.key)))

    def score_entry(self) -> dict[str, Any]:
        """The ``score`` mapping written into a preset for the winner."""
        vanilla = self.best_vanilla
        entry: dict[str, Any] = {"task": self.task, "split": self.split, "n_pairs": self.n_pairs}
        entry["spearman"] = round(self.best.spearman, 2)
        entry["vanilla_best_spearman"] = round(vanilla.spearman, 2)
        entry["vanilla_best_layer"] = vanilla.preset_output_layer
        if self.limit is not None:
            entry["limit"] = self.limit
        if self.sample is not None:
            entry.update(sample=self.sample, sample_seed=self.sample_seed)
        return entry

    def preset_entry(self, command: str | None = None) -> dict[str, Any]:
        """The template's preset entry: the winner's layers, ``status: tuned``, its score and the command."""
        entry: dict[str, Any] = {**self.best.settings(), "status": "tuned", "score": self.score_entry()}
        return {**entry, "command": command} if command else entry

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
            name: Preset name; defaults to ``base``'s name, else the backbone.
            backbone: The preset's backbone; defaults to ``base``'s backbone, else :attr:`backbone`.
            base: An existing preset to update: its other templates are kept and this template's entry is replaced.
            command: The command that reproduces the tuning, stored with the entry.
            aliases: Aliases of a new preset.
            source: The preset's ``source`` text (default: kept from ``base``, else a generated description).

        Returns:
            The preset.

        Raises:
            ValueError: If the template is not built in, or ``base`` has a different number of layers.
        """
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
        entry = self.preset_entry(command)
        if base is not None:
            preset = copy.deepcopy(base)
            preset.templates = {**preset.templates, template: entry}
            preset.name, preset.backbone, preset.num_layers = name or preset.name, backbone, self.num_layers
            if aliases:
                preset.aliases = list(dict.fromkeys([*preset.aliases, *aliases]))
            if source is not None:
                preset.source = source
            if preset.status != "paper":
                preset.status = "tuned"
        else:
            default_source = (
                f"Tuned with `st-tp tune` on {self.task} {self.split} (Spearman x 100 of cosine similarities): "
                "TP off and TP bands searched with every output layer; see docs/tuning.md."
            )
            preset = Preset(
                name=name or (os.path.basename(os.path.normpath(str(backbone))) or "model").lower(),
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (grid keys as ``"off"`` / ``"1-4"``; ``nan`` as None)."""
        best, vanilla = self.best, self.best_vanilla
        keys = ("backbone", "template", "task", "split", "n_pairs", "n_sentences", "limit", "sample", "sample_seed")
        return {
            **{key: getattr(self, key) for key in keys},
            "data_dir": self.data_dir,
            "num_layers": self.num_layers,
            "min_gain": self.min_gain,
            "grid": {_key_text(key): [json_float(v) for v in self.grid[key]] for key in self.keys()},
            "seconds": {_key_text(key): round(value, 3) for key, value in self.seconds.items()},
            "best": {**best.settings(), "spearman": json_float(best.spearman)},
            "best_vanilla": {**vanilla.settings(), "spearman": json_float(vanilla.spearman)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuningResult:
        """Rebuild a result from :meth:`to_dict` output."""
        as_float = lambda values: [float("nan") if v is None else float(v) for v in values]  # noqa: E731
        keys = ("template", "backbone", "task", "split", "n_pairs", "n_sentences", "limit", "sample", "data_dir")
        return cls(
            grid={_key_from_text(key): as_float(values) for key, values in data["grid"].items()},
            num_layers=int(data["num_layers"]),
            **{key: data[key] for key in keys if key in data},
            sample_seed=int(data.get("sample_seed") or 0),
            min_gain=float(data.get("min_gain", 0.0)),
            seconds={_key_from_text(k): float(v) for k, v in data.get("seconds", {}).items()},
        )

    def to_markdown(self, *, grid: bool = True, decimals: int = 2) -> str:
        """Markdown tables: one row per TP setting (best layer and score), then the per-layer grid.

        Args:
            grid: Include the per-layer grid (rows = output layers, columns = TP settings, best layer in bold).
            decimals: Decimals of the scores.

        Returns:
            The markdown text.
        """
        best, vanilla, d = self.best, self.best_vanilla, decimals
        template = self.template if isinstance(self.template, str) else f"{len(self.template)} user templates"
        data = f"{self.task} {self.split}, {self.n_pairs} pairs, {self.n_sentences} distinct sentences"
        lines = [
            f"Backbone `{self.backbone}`, template `{template}`, {self.num_layers} layers; {data}.",
            "",
            f"Winner: **{best.label()}**: {best.spearman:.{d}f} (best vanilla: {vanilla.label()}: "
            f"{vanilla.spearman:.{d}f}; {best.spearman - vanilla.spearman:+.{d}f}).",
            "",
            "| setting | tp_start | tp_exit | best layer | Spearman | vs best vanilla | at layer -1 | pass (s) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        keys = self.keys()
        for key in keys:
            choice = self.best_for(key)
            name = "TP off (vanilla)" if key == TP_OFF else f"TP {key[0]}..{key[1] - 1}"
            start, exit_ = ("-", "-") if key == TP_OFF else key
            bold = "**" if (choice.key, choice.output_layer) == (best.key, best.output_layer) else ""
            seconds = self.seconds.get(key)
            lines.append(
                f"| {bold}{name}{bold} | {start} | {exit_} | {choice.preset_output_layer} "
                f"| {bold}{choice.spearman:.{d}f}{bold} | {choice.spearman - vanilla.spearman:+.{d}f} "
                f"| {self.grid[key][self.num_layers]:.{d}f} | {'' if seconds is None else f'{seconds:.0f}'} |"
            )
        if grid:
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
                cells = [f"{self.grid[key][layer]:.{max(d - 1, 0)}f}" for key in keys]
                cells = [f"**{c}**" if best_layers[key] == layer else c for key, c in zip(keys, cells)]
                label = f"{layer} (L)" if layer == self.num_layers else str(layer)
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
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
        sample: Use ``sample`` pairs drawn at random instead (seeded, kept in file order).
        sample_seed: Seed of the ``sample`` draw.
        tp_start: First prepending layer of the TP candidates (0-based), or several.
        tp_exits: ``tp_exit`` candidates (default :func:`default_tp_exits`); those not above a ``tp_start`` are
            skipped.
        min_gain: TP must beat the best vanilla cell by more than this many points to win.
        batch_size: Sentences per forward pass.
        show_progress_bar: Accepted for compatibility (passes always show a batch progress bar).
        checkpoint: Folder of finished passes (:class:`~sentence_transformers_tp.tuning.passes.PassStore`); a
            rerun with the same data and settings skips the passes found there.
        progress: Called with one line of text after every pass (e.g. ``print``).
        **module_kwargs: Further constructor arguments when a module is built from a backbone name.

    Returns:
        The grid and its winner.

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
        if [e for e in exits if e > num_layers]:
            raise ValueError(
                f"tp_exit candidates {[e for e in exits if e > num_layers]} exceed the {num_layers} decoder layers."
            )
        bands += [(start, e) for e in exits if e > start]
    # The plan: the module's Setting with TP off, then with every band, simpler first.
    base = module.setting.replace(tp_start=starts[0]).without_tp()
    plan = [
        (TP_OFF, base),
        *((band, base.replace(tp_start=band[0], tp_exit=band[1])) for band in sorted(bands, key=_simplicity)),
    ]

    objective = SpearmanObjective(data)
    result = TuningResult(
        grid={},
        num_layers=num_layers,
        template=module.template,
        backbone=str(module.backbone_name),
        task=task,
        split=split,
        n_pairs=len(data),
        n_sentences=len(objective.texts),
        limit=limit,
        sample=sample,
        sample_seed=sample_seed,
        min_gain=min_gain,
        data_dir=None if data_dir is None else str(data_dir),
    )
    search = Search(module, checkpoint, batch_size, progress)
    for key, setting in plan:
        item = search.score(objective, setting, "full")
        result.grid[key], result.seconds[key] = item.scores, item.seconds
    return result
