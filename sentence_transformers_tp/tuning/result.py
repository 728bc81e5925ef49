"""The base of every search's result (``to_dict`` / ``to_markdown`` / ``preset_entry``), the markdown table writer
of their reports and the preset writers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sentence_transformers_tp.presets import load_preset_file, pinned_task_settings, update_preset

__all__ = ["Result", "json_float", "table", "tuned_entry", "write_preset_block"]


def json_float(value: float, digits: int = 6) -> float | None:
    """A JSON-safe rounded float (``nan`` as None)."""
    return None if value != value else round(float(value), digits)


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a markdown table (every report's tables)."""
    line = lambda cells: "| " + " | ".join(str(cell) for cell in cells) + " |"
    return [line(header), "|" + "---|" * len(header), *map(line, rows)]


def tuned_entry(settings: dict[str, Any], score: dict[str, Any], command: str | None) -> dict[str, Any]:
    """A preset entry of a search's winner: its settings, ``status: tuned``, its ``score`` and the ``command``."""
    entry = {**settings, "status": "tuned", "score": score}
    return {**entry, "command": command} if command else entry


def write_preset_block(preset_path: str | os.PathLike, key: str, block: dict[str, Any]) -> Path:
    """Store a winner's ``block`` (:meth:`Result.preset_entry`) in a preset YAML and return its path; every other key
    is kept: a ``"combination"`` is replaced (the task settings keep their own settings:
    :func:`~sentence_transformers_tp.presets.pinned_task_settings`), ``"task_settings"`` entries are merged into the
    file's."""
    preset = load_preset_file(preset_path)
    if key == "task_settings":
        block = {**(preset.task_settings or {}), **block}
    elif key == "combination" and (pinned := pinned_task_settings(preset, block)) != preset.task_settings:
        update_preset(preset_path, "task_settings", pinned)  # valid with the old combination as with the new
    return update_preset(preset_path, key, block)


class Result:
    """What a search measured on one backbone (scores per output layer ``0 .. num_layers``)."""

    backbone: str | None
    num_layers: int

    def preset_layer(self, layer: int) -> int:
        """An output layer as presets write it (-1 for the final normed output)."""
        layer %= self.num_layers + 1
        return -1 if layer == self.num_layers else layer

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary."""
        raise NotImplementedError

    def to_markdown(self) -> str:
        """A readable report (tables by :func:`table`)."""
        raise NotImplementedError

    def preset_entry(self, command: str | None = None) -> dict[str, Any]:
        """The winner as the preset block it is stored in, with its score and ``command``."""
        raise NotImplementedError

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON (through a temporary file) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path
