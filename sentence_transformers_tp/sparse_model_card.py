"""Model-card data for PromptReps sparse models: a usage snippet that installs the package and trusts its code."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sentence_transformers.sparse_encoder.model_card import SparseEncoderModelCardData

__all__ = ["PromptRepsModelCardData", "install_sparse_model_card_data"]


@dataclass
class PromptRepsModelCardData(SparseEncoderModelCardData):
    """Model-card data of a ``SparseEncoder`` built by :func:`~sentence_transformers_tp.sparse.build_sparse_model`.

    The stock snippet loads ``SparseEncoder("<id>")``, which sentence-transformers 6 refuses for a custom module;
    this one installs the package, passes ``trust_remote_code=True`` and shows queries, documents and ``decode``.

    Args:
        **kwargs: The fields of :class:`~sentence_transformers.sparse_encoder.model_card.SparseEncoderModelCardData`.
    """

    def generate_usage_snippet(self) -> str:
        """The usage snippet."""
        model_id = self.model_id or "path/to/this-model"
        display = self.usage_examples_display or self.usage_examples or []
        documents = [text for text in display if isinstance(text, str)][:3] or [
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
        ]
        lines = [
            "```bash",
            "pip install -U sentence-transformers-tp bm25s",
            "```",
            "",
            "```python",
            "from sentence_transformers import SparseEncoder",
            "",
            "# trust_remote_code=True lets sentence-transformers import the installed sentence-transformers-tp modules",
            f'model = SparseEncoder("{model_id}", trust_remote_code=True)',
            "documents = [",
            *[f"    {text!r}," for text in documents],
            "]",
            "document_embeddings = model.encode_document(documents)",
            'query_embeddings = model.encode_query(["How is the weather?"])',
            "print(document_embeddings.shape)",
            f"# [{len(documents)}, {self._get_snippet_output_dimensionality()}]",
            "",
            "# Dot-product scores, and the weighted tokens of a document",
            "scores = model.similarity(query_embeddings, document_embeddings)",
            "print(model.decode(document_embeddings[0], top_k=10))",
            "```",
        ]
        return "\n".join(lines)


def install_sparse_model_card_data(model: Any, model_name: str) -> None:
    """Give a sparse ``model`` a :class:`PromptRepsModelCardData` (keeping every field set on its card), the
    package's tags and, unless it has one, ``model_name``.

    Args:
        model: The ``SparseEncoder``.
        model_name: The default model name (``org/name``; MTEB files results under it).
    """
    card = model.model_card_data
    if not isinstance(card, SparseEncoderModelCardData):
        return
    if not isinstance(card, PromptRepsModelCardData):
        values = {f.name: getattr(card, f.name) for f in fields(card) if f.init and hasattr(card, f.name)}
        card = PromptRepsModelCardData(**values)
        card.register_model(model)
        model.model_card_data = card
    card.add_tags(["token-prepending", "sentence-transformers-tp", "promptreps"])
    if not card.model_name:
        card.model_name = model_name
