"""One all-layer pass under a :class:`~sentence_transformers_tp.settings.Setting` (``encode`` at every output layer
at once), the one checkpoint store of finished passes and :class:`Search`, which runs a plan."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sentence_transformers_tp.factory import as_module
from sentence_transformers_tp.settings import Setting
from sentence_transformers_tp.truncation import report_truncation
from sentence_transformers_tp.tuning.cells import Scored, describe
from sentence_transformers_tp.tuning.objectives import Objective

logger = logging.getLogger(__name__)

__all__ = ["PassStore", "Search", "as_module", "encode_all_layers", "with_bands"]


def encode_all_layers(
    module: Any,
    texts: Sequence[str],
    setting: Setting | None = None,
    *,
    tp_start: int | None = None,
    tp_exit: int | None = None,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> np.ndarray:
    """``(len(texts), num_layers + 1, hidden)`` float32 states: row ``i``, layer ``k`` equals ``encode`` of text ``i``
    under ``setting`` with ``output_layer=k`` (the same ``using`` / ``preprocess`` / ``embed``, longest texts first).

    Args:
        module: A :class:`~sentence_transformers_tp.module.TokenPrependingTransformer`.
        texts: The texts.
        setting: How to embed them (default: the module's own).
        tp_start: Overrides ``setting.tp_start``.
        tp_exit: Overrides ``setting.tp_exit``; ``tp_exit <= tp_start`` is TP off.
        batch_size: Texts per forward pass.
        show_progress_bar: Show a progress bar.
    """
    setting = setting or module.setting
    setting = setting.replace(**{k: v for k, v in (("tp_start", tp_start), ("tp_exit", tp_exit)) if v is not None})
    setting.validate(module.num_layers)
    order = np.argsort([-len(text) for text in texts], kind="stable")
    out = np.zeros((len(texts), module.num_layers + 1, module.get_embedding_dimension()), dtype=np.float32)
    was_training = module.training
    module.eval()
    try:
        starts = range(0, len(texts), batch_size)
        with torch.inference_mode(), report_truncation(), module.using(setting):
            for start in tqdm(starts, desc="Batches", disable=not show_progress_bar, leave=False):
                index = order[start : start + batch_size]
                features = module.preprocess([texts[i] for i in index])
                out[index] = module.embed(features, layers="all").cpu().numpy()
    finally:
        module.train(was_training)
    return out


def with_bands(settings: Sequence[Setting], bands: Sequence[tuple[int, int]]) -> list[Setting]:
    """Each Setting with TP off, then with each ``(tp_start, tp_exit)`` band: the first stage of every plan."""
    return [t for s in settings for t in (s.without_tp(), *(s.replace(tp_start=a, tp_exit=b) for a, b in bands))]


def digest(*parts: Any) -> str:
    """A short stable digest of JSON-serialisable parts (the keys of the store)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


class PassStore:
    """Finished passes in a folder, one ``<key>.npz`` each with what the pass gave (``value``) and its ``seconds``.

    Args:
        folder: The folder (created on the first save; an existing file is a ValueError); None keeps nothing.
    """

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None and self.folder.is_file():
            raise ValueError(f"Checkpoint {self.folder} is a file; a checkpoint is a folder of finished passes.")

    def load(self, key: str) -> tuple[np.ndarray, float] | None:
        """The value and seconds stored under ``key``, or None."""
        if self.folder is None or not (self.folder / f"{key}.npz").is_file():
            return None
        with np.load(self.folder / f"{key}.npz") as data:
            return data["value"], float(data["seconds"])

    def save(self, key: str, value: np.ndarray, seconds: float) -> None:
        """Store a finished pass (through a temporary file: an interrupted save leaves no entry)."""
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            np.savez(self.folder / f"{key}.tmp.npz", value=value, seconds=np.float64(seconds))
            os.replace(self.folder / f"{key}.tmp.npz", self.folder / f"{key}.npz")


class Search:
    """Runs the Settings of a plan on one loaded module; every pass is checkpointed, reported and recorded.

    Args:
        module: The module (its backbone is reused for every Setting).
        checkpoint: Folder of the :class:`PassStore` (None: no checkpoint).
        batch_size: Texts per forward pass.
        progress: Called with one line per pass (default: the logger).
    """

    def __init__(
        self,
        module: Any,
        checkpoint: str | os.PathLike | None = None,
        batch_size: int = 32,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.module, self.store, self.batch_size = module, PassStore(checkpoint), batch_size
        self.say = progress or logger.info
        self.passes: list[Scored] = []
        self.kept: dict[tuple[str, Setting], np.ndarray] = {}
        self.seconds: dict[str, float] = {}

    def embed(self, texts: Sequence[str], setting: Setting) -> np.ndarray:
        """The all-layer states of texts (not checkpointed)."""
        return encode_all_layers(self.module, texts, setting, batch_size=self.batch_size, show_progress_bar=True)

    def run(
        self,
        texts: Sequence[str],
        setting: Setting,
        data: str,
        reduce: Callable[[np.ndarray], np.ndarray],
        states: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float, bool]:
        """One checkpointed pass: ``(reduce(states), seconds, whether from the checkpoint)``, keyed by the backbone,
        the token budget, ``data`` and the Setting; given ``states`` (the texts' all-layer states under ``setting``),
        a miss reduces them instead of running the pass."""
        module, config = self.module, setting.replace(output_layer=-1).to_config()  # a pass captures every layer
        key = digest(
            str(module.backbone_name), module.num_layers, setting.max_seq_length or module.max_seq_length, data, config
        )
        stored = self.store.load(key)
        if stored is not None:
            return *stored, True
        start = time.perf_counter()
        value = reduce(self.embed(texts, setting) if states is None else states)
        seconds = time.perf_counter() - start
        self.store.save(key, value, seconds)
        return value, seconds, False

    def score(self, objective: Objective, setting: Setting, data: str, keep: bool = False) -> Scored:
        """Score a Setting at every layer on an objective (a checkpointed pass), recorded in :attr:`passes` under
        ``data``; with ``keep`` the states of a pass that runs go to :attr:`kept` by ``(data, setting)``. The
        all-layer states do not depend on ``layer_span`` (it only averages them): a Setting whose span-1 form was
        kept under ``data`` reuses those states (score it with a
        :class:`~sentence_transformers_tp.tuning.objectives.SpanObjective`)."""

        def reduce(states: np.ndarray) -> np.ndarray:
            if keep or setting.layer_span != 1:  # the other spans of this setting reuse them
                self.kept[(data, setting.replace(layer_span=1))] = states
            return np.asarray(objective(states), dtype=np.float64)

        kept = self.kept.get((data, setting.replace(layer_span=1)))
        scores, seconds, stored = self.run(objective.texts, setting, objective.signature, reduce, kept)
        item = Scored((setting,), [float(v) for v in scores], seconds, data)
        self.passes.append(item)
        self.say(
            f"[{len(self.passes)}] {data}: {describe(setting)}: best layer {item.best_layer} = {item.best:.2f}, "
            f"layer -1 = {item.scores[-1]:.2f} ({'reusing the checkpoint' if stored else f'{seconds:.0f} s'})"
        )
        return item

    def states(self, texts: Sequence[str], setting: Setting, data: str) -> np.ndarray:
        """The L2-normalised all-layer states of texts (a checkpointed pass), timed in :attr:`seconds`."""

        def normalized(states: np.ndarray) -> np.ndarray:
            norms = np.linalg.norm(states, axis=-1, keepdims=True)
            return (states / np.where(norms > 0, norms, 1.0)).astype(np.float32)

        states, seconds, stored = self.run(texts, setting, digest(list(texts)), normalized)
        self.seconds[f"{data}:{describe(setting)}"] = seconds
        status = "reusing the checkpoint" if stored else f"{len(texts)} texts in {seconds:.1f} s"
        self.say(f"{data}: {describe(setting)}: {status}")
        return states
