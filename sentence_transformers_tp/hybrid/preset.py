"""The tuned fusion of a backbone: the ``hybrid`` block of its preset (``configs/<backbone>.yaml``).

.. code-block:: yaml

    hybrid:
      channels: [dense, bm25]          # among dense, sparse, bm25
      fusion: rsf                      # rsf | rrf
      weights: {dense: 0.3, bm25: 0.7} # one per channel
      rrf_k: 60                        # optional (rrf)
      score: {...}                     # optional record (as written by choose_fusion(...).to_preset())
      command: "..."                   # optional: how to reproduce

:func:`preset_fusion` finds the preset of a model's backbone (a ``SentenceTransformer`` whose first module is a
``TokenPrependingTransformer``, or a backbone name) and returns its validated block; the
:class:`~sentence_transformers_tp.hybrid.retriever.HybridRetriever` built with
:meth:`~sentence_transformers_tp.hybrid.retriever.HybridRetriever.from_model` uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sentence_transformers_tp.hybrid.fusion import CHANNELS, FUSIONS, check_weights
from sentence_transformers_tp.presets import find_preset_for_backbone

HYBRID_KEY = "hybrid"
"""The preset key of the tuned fusion."""

RECORD_KEYS = ("score", "command", "status")
"""Keys of the block that document it rather than set anything."""


def validate_fusion_block(block: Any, origin: str = "<preset>") -> dict[str, Any]:
    """Check a ``hybrid`` block and return its settings (records left out).

    Args:
        block: The parsed block.
        origin: Where it came from (for error messages).

    Returns:
        ``{"channels": [...], "fusion": ..., "weights": {...}, "rrf_k": ...}`` with channels in fusion order.

    Raises:
        ValueError: Naming the problem.
    """
    if not isinstance(block, Mapping):
        raise ValueError(f"{origin}: '{HYBRID_KEY}' must be a mapping")
    unknown = set(block) - {"channels", "fusion", "weights", "rrf_k", *RECORD_KEYS}
    if unknown:
        raise ValueError(f"{origin}: '{HYBRID_KEY}' has unknown keys {sorted(unknown)}")
    channels = block.get("channels")
    if not isinstance(channels, list | tuple) or not channels or set(channels) - set(CHANNELS):
        raise ValueError(f"{origin}: '{HYBRID_KEY}.channels' must be a non-empty list among {list(CHANNELS)}")
    if len(set(channels)) != len(channels):
        raise ValueError(f"{origin}: '{HYBRID_KEY}.channels' lists a channel twice")
    fusion = block.get("fusion", "rsf")
    if fusion not in FUSIONS:
        raise ValueError(f"{origin}: '{HYBRID_KEY}.fusion' must be one of {list(FUSIONS)}, got {fusion!r}")
    weights = block.get("weights")
    if not isinstance(weights, Mapping) or set(weights) != set(channels):
        raise ValueError(f"{origin}: '{HYBRID_KEY}.weights' must give one weight per channel {list(channels)}")
    ordered = [c for c in CHANNELS if c in channels]
    try:
        check_weights([weights[c] for c in ordered], len(ordered))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{origin}: '{HYBRID_KEY}.weights': {error}") from None
    rrf_k = block.get("rrf_k", 60)
    if not isinstance(rrf_k, int) or isinstance(rrf_k, bool) or rrf_k < 0:
        raise ValueError(f"{origin}: '{HYBRID_KEY}.rrf_k' must be a non-negative integer")
    return {"channels": ordered, "fusion": fusion, "weights": {c: float(weights[c]) for c in ordered}, "rrf_k": rrf_k}


def tuned_fusion_block(
    block: Mapping[str, Any], record: Mapping[str, Any], command: str | None = None
) -> dict[str, Any]:
    """A chosen fusion as the preset's ``hybrid`` block, validated: the setting, ``status: tuned``, its ``score``
    (``record``, e.g. the task and split, in front of the choice's own score) and the ``command`` that reproduces it.

    Args:
        block: ``FusionChoice.to_preset()`` (the setting and its ``score``).
        record: Where it was chosen (``task``, ``split``, corpus size, ...).
        command: The command line, if known.

    Raises:
        ValueError: If the block is not a valid fusion.
    """
    score = {**record, **block.get("score", {})}
    tuned = {**block, "status": "tuned", "score": score, **({"command": command} if command else {})}
    validate_fusion_block(tuned, "the tuned fusion")
    return tuned


def backbone_of(model: Any) -> str | None:
    """The backbone name of a TP model (its first module's ``backbone_name``), a backbone name itself, or None."""
    if isinstance(model, str):
        return model
    try:
        first = model[0]
    except (TypeError, IndexError, KeyError):
        return None
    name = getattr(first, "backbone_name", None)
    return str(name) if name else None


def preset_fusion(model: Any) -> dict[str, Any] | None:
    """The tuned fusion of a model's backbone preset, if the preset has one.

    Args:
        model: A TP ``SentenceTransformer`` or a backbone name.

    Returns:
        The validated block (see :func:`validate_fusion_block`), or None (no backbone, no preset or no block).
    """
    backbone = backbone_of(model)
    if backbone is None:
        return None
    preset = find_preset_for_backbone(backbone)
    if preset is None or preset.hybrid is None:
        return None
    return validate_fusion_block(preset.hybrid, str(preset.path or preset.name))


__all__ = ["HYBRID_KEY", "backbone_of", "preset_fusion", "tuned_fusion_block", "validate_fusion_block"]
