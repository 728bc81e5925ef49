"""The result type every search returns: :class:`Result`, with ``to_dict`` / ``to_markdown`` / ``preset_entry``;
each search's result subclasses it with its own views (the layer grid, the joint passes, the retrieval grid)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sentence_transformers_tp.presets import load_preset_file, update_preset

__all__ = ["Result", "json_float", "write_preset_block"]


def json_float(value: float, digits: int = 6) -> float | None:
    """A JSON-safe rounded float (``nan`` as None)."""
    return None if value != value else round(float(value), digits)


def write_preset_block(preset_path: str | os.PathLike, key: str, block: dict[str, Any]) -> Path:
    """Store a search's winner in an existing preset file, keeping every other key: the ``combination`` block is
    replaced, ``task_settings`` entries are merged into the file's (other tasks are kept).

    Args:
        preset_path: The preset YAML.
        key: ``"combination"`` or ``"task_settings"``.
        block: The block (:meth:`Result.preset_entry`).

    Returns:
        The path written.
    """
    if key == "task_settings":
        block = {**(load_preset_file(preset_path).task_settings or {}), **block}
    return update_preset(preset_path, key, block)


class Result:
    """What a search measured on one backbone.

    Attributes:
        backbone: The backbone name.
        num_layers: Decoder layers (scores are per output layer ``0 .. num_layers``).
    """

    backbone: str | None
    num_layers: int

    def preset_layer(self, layer: int) -> int:
        """An output layer as presets and module configs write it (-1 for the final normed output)."""
        layer %= self.num_layers + 1
        return -1 if layer == self.num_layers else layer

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary."""
        raise NotImplementedError

    def to_markdown(self) -> str:
        """A readable report."""
        raise NotImplementedError

    def preset_entry(self, command: str | None = None) -> dict[str, Any]:
        """The winner as the preset block it is stored in, with its score and ``command``."""
        raise NotImplementedError

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON (through a temporary file).

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
