"""A simulated Hugging Face Hub: saved models copied into the layout of a local HF cache (no network).

The layout is the one ``huggingface_hub`` writes: ``models--org--name/blobs/<hash>`` holds each file once,
``snapshots/<commit>/<path>`` links to the blobs, and ``refs/<branch or tag>`` holds the commit of a revision.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest


def add_snapshot(cache: Path, repo_id: str, folder: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Copy ``folder`` into ``cache`` as the snapshot ``commit`` of the model repo ``repo_id``.

    Args:
        cache: The HF hub cache folder (what ``HF_HUB_CACHE`` names).
        repo_id: ``org/name``.
        folder: The files of the repository at that commit (a saved model or a checkpoint).
        commit: A 40-hex-digit commit hash.
        refs: Branches / tags that point at the commit.

    Returns:
        The snapshot folder.
    """
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for source in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        target = snapshot / source.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.path.relpath(blob, target.parent))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit, encoding="utf-8")
    return snapshot


def use_hub_cache(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Point ``HF_HOME`` / ``HF_HUB_CACHE`` at ``home`` (also in the already imported huggingface_hub) and go
    offline (``HF_HUB_OFFLINE=1``); return the hub cache folder."""
    from huggingface_hub import constants

    cache = home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SENTENCE_TRANSFORMERS_HOME", raising=False)
    # huggingface_hub reads these variables once, at import: the loaders look at its constants.
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache
