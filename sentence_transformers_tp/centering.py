"""Centering and whitening of sentence embeddings with statistics of unlabeled sentences.

LLM last-token embeddings are strongly anisotropic: they share a large common component. :class:`Centering` is a
sentence-transformers module placed after the TP module that subtracts the mean embedding of a set of unlabeled
sentences (``mode="center"``) or applies the whitening transform of Su et al. 2021 (``mode="whiten"``,
"Whitening Sentence Representations for Better Semantics and Faster Retrieval")::

    y = (x - mu) @ W,    W = U[:, :k] diag(1 / sqrt(lambda[:k] + eps * lambda[0]))

where ``U diag(lambda) U^T`` is the SVD of the covariance (``np.cov``, normalised by ``n - 1``) of the unlabeled
sentences' embeddings, ``k`` (``n_components``) keeps the top components (all by default) and ``eps`` (relative to
the largest eigenvalue, so it does not depend on the embeddings' scale) keeps near-zero variance directions finite.
No labels are used.

:func:`fit` encodes the sentences through ``model.encode`` and appends the module (or refits the one the model ends
with); :func:`read_sentences` reads unlabeled sentences from a text file, an STS TSV file or a ``task:split`` of a
data directory. ``st-tp center`` does both from the command line. Nothing changes for a model without the module.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sentence_transformers.base.modules import Module
from transformers.utils import logging

from sentence_transformers_tp.data import read_sts_tsv, resolve_sts_split, sts_split_path
from sentence_transformers_tp.truncation import report_truncation

try:
    from typing import Self
except ImportError:  # pragma: no cover - Python < 3.11
    from typing_extensions import Self

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.get_logger(__name__)

#: The modes of :class:`Centering`.
MODES = ("center", "whiten")

#: Default ``eps``: ``eps`` times the largest covariance eigenvalue is added to each eigenvalue before ``1 / sqrt``.
DEFAULT_EPS = 1e-9

#: The ``encode`` keyword argument that skips every :class:`Centering` module for one call (used by :func:`fit`).
SKIP_KWARG = "skip_centering"


def _stats_dtype(device: torch.device) -> torch.dtype:
    """float64, except on MPS (which has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


class Centering(Module):
    """Subtract the mean of unlabeled sentence embeddings (``"center"``) or whiten them (``"whiten"``).

    The module reads and writes ``features["sentence_embedding"]`` and returns it in the input's dtype and on its
    device. Its statistics are float64 buffers, saved as ``model.safetensors`` next to its ``config.json``; a saved
    model loads back with ``SentenceTransformer(path, trust_remote_code=True)``. The statistics and the computation
    stay in float64 even after ``model.half()`` / ``model.to(dtype)`` (float32 on MPS, which lacks float64):
    whitening multiplies low-variance directions by large factors, which would amplify float32 rounding of the mean
    into visible errors. A module that was never fitted raises on ``forward``: build it with
    :meth:`from_embeddings` or :func:`fit`.

    ``model.encode(..., skip_centering=True)`` returns the embeddings before the module (for one call, thread-safe).

    Args:
        mode: ``"center"`` (subtract the mean) or ``"whiten"`` (subtract the mean, then multiply by ``W``).
        n_components: Whitening only: keep the top ``n_components`` components (None: all). The output then has
            ``n_components`` dimensions.
        eps: Whitening only: ``eps`` times the largest covariance eigenvalue is added to each eigenvalue before
            ``1 / sqrt`` (keeps near-zero variance directions finite; relative, so independent of the scale).
        in_features: Embedding dimension the statistics were fitted on (None: not fitted). Set by fitting and
            stored in the config so that loading can allocate the buffers.
        n_fit_sentences: Number of sentences the statistics come from (informational).
    """

    config_keys: list[str] = ["mode", "n_components", "eps", "in_features", "n_fit_sentences"]
    forward_kwargs: set[str] = {SKIP_KWARG}

    mean: torch.Tensor
    weight: torch.Tensor

    def __init__(
        self,
        mode: str = "center",
        n_components: int | None = None,
        eps: float = DEFAULT_EPS,
        in_features: int | None = None,
        n_fit_sentences: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"Centering mode must be one of {', '.join(MODES)}, got {mode!r}")
        if n_components is not None:
            if mode != "whiten":
                raise ValueError(f"n_components applies to mode='whiten' only (got mode={mode!r})")
            if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
                raise ValueError(f"n_components must be a positive integer or None, got {n_components!r}")
            if in_features is not None and n_components > in_features:
                raise ValueError(
                    f"n_components={n_components} exceeds the embedding dimension {in_features}: whitening can keep "
                    f"at most {in_features} components"
                )
        if not eps >= 0:
            raise ValueError(f"eps must be non-negative, got {eps!r}")
        self.mode = mode
        self.n_components = n_components
        self.eps = float(eps)
        self.in_features = None if in_features is None else int(in_features)
        self.n_fit_sentences = None if n_fit_sentences is None else int(n_fit_sentences)
        dim = self.in_features or 0
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        if mode == "whiten":
            self.register_buffer("weight", torch.zeros(dim, self.out_features or 0, dtype=torch.float64))

    def _apply(self, fn: Any, recurse: bool = True) -> Self:
        # Follow device moves, but keep the statistics in their own dtype (``model.half()`` must not round them).
        originals = dict(self._buffers)
        result = super()._apply(fn, recurse)
        for name, original in originals.items():
            moved = self._buffers[name]
            if original is not None and moved is not None:
                self._buffers[name] = original.to(device=moved.device, dtype=_stats_dtype(moved.device))
        return result

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_embeddings(
        cls,
        embeddings: np.ndarray | torch.Tensor,
        mode: str = "center",
        n_components: int | None = None,
        eps: float = DEFAULT_EPS,
    ) -> Self:
        """A fitted module from the embeddings of unlabeled sentences.

        The statistics are computed and stored in float64. Whitening takes the SVD of ``np.cov`` as in
        Su et al. 2021; each component's sign is fixed (its largest-magnitude entry is positive), so a refit on the
        same embeddings gives the same module.

        Args:
            embeddings: ``(n_sentences, dim)`` embeddings.
            mode: See :class:`Centering`.
            n_components: See :class:`Centering`.
            eps: See :class:`Centering`.

        Returns:
            The fitted module (on the CPU).

        Raises:
            ValueError: On an empty / non-2-D / non-finite input, fewer than 2 sentences for whitening, or
                ``n_components`` above the dimension.
        """
        if isinstance(embeddings, torch.Tensor):
            embeddings = embeddings.detach().to("cpu", torch.float64).numpy()
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"Centering needs a non-empty (n_sentences, dim) matrix of embeddings, got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("Centering got non-finite embeddings (nan or inf); the statistics would be meaningless")
        n, dim = x.shape
        module = cls(mode=mode, n_components=n_components, eps=eps, in_features=dim, n_fit_sentences=n)
        mean = x.mean(axis=0)
        module.mean.copy_(torch.from_numpy(mean))
        if mode == "whiten":
            if n < 2:
                raise ValueError(f"Whitening needs at least 2 sentences to estimate a covariance, got {n}")
            k = module.out_features
            if k > n - 1:
                logger.warning_once(
                    f"Whitening keeps {k} components but {n} sentences give a covariance of rank at most {n - 1}: "
                    "the extra components have (near) zero variance and get amplified (up to 1/sqrt(eps) times). "
                    "Use more sentences or a smaller n_components."
                )
            cov = np.cov(x, rowvar=False).reshape(dim, dim)
            u, s, _ = np.linalg.svd(cov)
            if not s[0] > 0:
                raise ValueError("Whitening got embeddings without any variance (all sentences embed identically)")
            u = u[:, :k]
            signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(k)])
            signs[signs == 0] = 1.0
            w = (u * signs) / np.sqrt(s[:k] + module.eps * s[0])
            module.weight.copy_(torch.from_numpy(w))
        return module

    # ------------------------------------------------------------------ properties

    @property
    def fitted(self) -> bool:
        """Whether the module holds statistics."""
        return self.in_features is not None

    @property
    def out_features(self) -> int | None:
        """Output dimension: ``n_components`` when whitening keeps fewer, else the input dimension (None: unfitted)."""
        if self.in_features is None:
            return None
        if self.mode == "whiten" and self.n_components is not None:
            return self.n_components
        return self.in_features

    def get_embedding_dimension(self) -> int | None:
        """The output dimension (None while unfitted, so sentence-transformers asks the module before)."""
        return self.out_features

    def describe(self) -> str:
        """One line that says what the module does (used by the model card)."""
        if not self.fitted:
            return f"{self.mode} (not fitted)"
        source = f" of {self.n_fit_sentences} unlabeled sentences" if self.n_fit_sentences else ""
        if self.mode == "center":
            return f"centering: the mean embedding{source} is subtracted"
        kept = "all" if self.n_components is None else f"the top {self.n_components} of"
        return (
            f"whitening (Su et al. 2021): mean{source} subtracted, then projected onto {kept} {self.in_features} "
            f"covariance components scaled to unit variance (eps={self.eps:g})"
        )

    # ------------------------------------------------------------------ sentence-transformers API

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Center or whiten ``features["sentence_embedding"]``.

        Args:
            features: The features of the batch.
            **kwargs: ``skip_centering=True`` returns the features unchanged.

        Returns:
            The features with the transformed ``sentence_embedding``.

        Raises:
            RuntimeError: If the module was never fitted.
            ValueError: If the embedding dimension differs from the fitted one.
        """
        if kwargs.get(SKIP_KWARG):
            return features
        if not self.fitted:
            raise RuntimeError(
                "This Centering module has no statistics yet: fit it with "
                "sentence_transformers_tp.centering.fit(model, sentences) or `st-tp center`"
            )
        x = features["sentence_embedding"]
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Centering was fitted on {self.in_features}-dimensional embeddings but got {x.shape[-1]} dimensions"
            )
        dtype = _stats_dtype(x.device)
        y = x.to(dtype) - self.mean.to(device=x.device, dtype=dtype)
        if self.mode == "whiten":
            y = y @ self.weight.to(device=x.device, dtype=dtype)
        features["sentence_embedding"] = y.to(x.dtype)
        return features

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Write ``config.json`` and the statistics (``model.safetensors``) to ``output_path``.

        Args:
            output_path: The module's folder.
            *args: Ignored.
            safe_serialization: Write safetensors (else ``pytorch_model.bin``).
            **kwargs: Ignored.
        """
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> Self:
        """Load a saved module (its config, then its statistics).

        Args:
            model_name_or_path: The model folder or hub id.
            subfolder: The module's folder inside it.
            token: Hub token.
            cache_folder: Hub cache folder.
            revision: Hub revision.
            local_files_only: Do not download.
            **kwargs: Other arguments of sentence-transformers' loader (ignored).

        Returns:
            The module.
        """
        hub_kwargs = {
            "subfolder": subfolder,
            "token": token,
            "cache_folder": cache_folder,
            "revision": revision,
            "local_files_only": local_files_only,
        }
        config = cls.load_config(model_name_or_path=model_name_or_path, **hub_kwargs)
        module = cls(**{key: value for key, value in config.items() if key in cls.config_keys})
        if not module.fitted:
            return module
        return cls.load_torch_weights(model_name_or_path=model_name_or_path, model=module, **hub_kwargs)


# ---------------------------------------------------------------------- fitting


def fit(
    model: SentenceTransformer,
    sentences: Sequence[str],
    *,
    mode: str = "center",
    n_components: int | None = None,
    eps: float = DEFAULT_EPS,
    batch_size: int = 32,
    show_progress_bar: bool | None = None,
    **encode_kwargs: Any,
) -> SentenceTransformer:
    """Fit a :class:`Centering` module on unlabeled sentences and put it at the end of ``model``.

    The sentences are embedded with ``model.encode`` (the same public path as any other call). A model that already
    ends with a :class:`Centering` module is refitted from the embeddings *before* that module, which is then
    replaced (never stacked); otherwise the new module is appended.

    Args:
        model: A ``SentenceTransformer`` (e.g. with a ``TokenPrependingTransformer``). Modified in place.
        sentences: Unlabeled sentences (see :func:`read_sentences`).
        mode: ``"center"`` or ``"whiten"``.
        n_components: Whitening: number of top components to keep (None: all).
        eps: Whitening: relative regulariser of the covariance eigenvalues (see :class:`Centering`).
        batch_size: Passed to ``encode``.
        show_progress_bar: Passed to ``encode``.
        **encode_kwargs: Other ``encode`` keyword arguments (e.g. ``prompt_name``).

    Returns:
        ``model``, now ending with the fitted module.

    Raises:
        ValueError: If there are no sentences, a :class:`Centering` module sits elsewhere than at the end, or the
            settings are invalid.
    """
    if isinstance(sentences, str):
        raise ValueError("fit() takes a list of sentences, not a single string")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("fit() needs at least one unlabeled sentence")
    modules = list(model)
    positions = [i for i, module in enumerate(modules) if isinstance(module, Centering)]
    if positions and positions != [len(modules) - 1]:
        raise ValueError(
            f"fit() refits a Centering module only at the end of the model; this model has one at position(s) "
            f"{positions} of {len(modules)} modules"
        )
    refit = bool(positions)
    with model.truncate_embeddings(None):
        dim = modules[-1].in_features if refit else model.get_embedding_dimension()
        # Check the settings before encoding anything.
        Centering(mode=mode, n_components=n_components, eps=eps, in_features=dim)
        if refit:
            encode_kwargs[SKIP_KWARG] = True
        encode_kwargs.setdefault("normalize_embeddings", False)
        with report_truncation():
            embeddings = model.encode(
                sentences,
                batch_size=batch_size,
                show_progress_bar=show_progress_bar,
                convert_to_numpy=True,
                **encode_kwargs,
            )
    module = Centering.from_embeddings(embeddings, mode=mode, n_components=n_components, eps=eps)
    module.to(model.device)
    if refit:
        model[len(modules) - 1] = module
    else:
        model.append(module)
    return model


def centering_module(model: Any) -> Centering | None:
    """The :class:`Centering` module of a model, if any (the last one).

    Args:
        model: A ``SentenceTransformer`` (any iterable of modules).

    Returns:
        The module, or None.
    """
    found = [module for module in model if isinstance(module, Centering)] if hasattr(model, "__iter__") else []
    return found[-1] if found else None


# ---------------------------------------------------------------------- unlabeled sentences


def _unique(sentences: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for sentence in sentences:
        if sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out


def read_sentences(
    source: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    max_sentences: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Unlabeled sentences from a text file, an STS TSV file or an STS ``task:split`` of a data directory.

    - a ``.tsv`` file in the STS layout (``sentence1``, ``sentence2``, ``score``, ...): both sentence columns;
    - any other file: one sentence per line (blank lines skipped, surrounding whitespace stripped);
    - ``TASK:SPLIT`` (e.g. ``stsb:train``, ``sickr:train``): that split of ``data_dir``
      (:mod:`sentence_transformers_tp.data` layout); only the sentences are used, never the scores.

    Duplicates are dropped (STS pairs repeat sentences), keeping the first occurrence.

    Args:
        source: The file or ``TASK:SPLIT``.
        data_dir: The data root for a ``TASK:SPLIT`` source.
        max_sentences: Keep this many sentences drawn at random (seeded, in file order); None keeps all.
        seed: Seed of that draw.

    Returns:
        The sentences.

    Raises:
        FileNotFoundError: If the file, data directory or split does not exist.
        ValueError: If the source holds no sentence, or ``max_sentences`` is not positive.
    """
    if max_sentences is not None and max_sentences < 1:
        raise ValueError(f"max_sentences must be positive, got {max_sentences}")
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() == ".tsv":
            data = read_sts_tsv(path)
            sentences = [s for pair in zip(data.sentence1, data.sentence2) for s in pair]
        else:
            sentences = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    elif path.exists():
        raise ValueError(f"{source} is not a file: give a text file, an STS .tsv file or TASK:SPLIT")
    elif ":" in str(source) and os.sep not in str(source):
        task, _, split = str(source).partition(":")
        if data_dir is None:
            raise ValueError(f"{source!r} names an STS split: give the data directory too (--data-dir)")
        if not Path(data_dir).is_dir():
            raise FileNotFoundError(f"data directory not found: {data_dir}")
        on_disk = resolve_sts_split(data_dir, task, split)
        if on_disk is None:
            raise FileNotFoundError(f"no split {split!r} of STS task {task!r} in {data_dir}")
        data = read_sts_tsv(sts_split_path(data_dir, task, on_disk))
        sentences = [s for pair in zip(data.sentence1, data.sentence2) for s in pair]
    else:
        raise FileNotFoundError(f"sentence file not found: {source} (give a text file, an STS .tsv or TASK:SPLIT)")
    sentences = _unique(s for s in sentences if s.strip())
    if not sentences:
        raise ValueError(f"no sentences in {source}")
    if max_sentences is not None and max_sentences < len(sentences):
        keep = np.random.default_rng(seed).choice(len(sentences), size=max_sentences, replace=False)
        sentences = [sentences[i] for i in sorted(keep.tolist())]
    return sentences
