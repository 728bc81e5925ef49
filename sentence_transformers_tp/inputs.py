"""Validation of the texts given to the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Output values of ``SentenceTransformer.encode`` that the module does not produce, with what to use instead.
_UNSUPPORTED_OUTPUTS = {
    "token_embeddings": (
        "encode(output_value='token_embeddings') is not supported by TokenPrependingTransformer: its embedding is "
        "one prompt's last-token state, not a pooling of per-token states of the sentence. Use "
        "output_value='sentence_embedding' (the default), or output_value=None for every feature of each input."
    ),
}

#: At most this many characters of an offending item are shown in error messages.
_REPR_LIMIT = 60


def _describe(item: Any) -> str:
    text = repr(item)
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 3] + "..."
    return f"{type(item).__name__} {text}"


def check_texts(texts: Sequence[Any], *, context: str = "") -> None:
    """Raise a ValueError naming the index of the first item of ``texts`` that is not a string.

    Empty and whitespace-only strings are valid (they embed the template with an empty sentence).

    Args:
        texts: The inputs, in the caller's order.
        context: Extra sentence appended to the error message.

    Raises:
        ValueError: If an item is not a ``str``; the message names its index, type and value.
    """
    for index, item in enumerate(texts):
        if not isinstance(item, str):
            message = f"Input {index} is of type {_describe(item)}; only strings can be embedded."
            raise ValueError(f"{message} {context}".rstrip())


class Features(dict):
    """The features of a batch: a plain ``dict`` whose missing keys that ``encode(output_value=...)`` asks for raise a
    clear error naming what is supported, instead of a bare ``KeyError``."""

    def __missing__(self, key: Any) -> Any:
        """Raise a ``ValueError`` for an unsupported ``output_value``, a ``KeyError`` for anything else."""
        if key in _UNSUPPORTED_OUTPUTS:
            raise ValueError(_UNSUPPORTED_OUTPUTS[key])
        raise KeyError(key)
